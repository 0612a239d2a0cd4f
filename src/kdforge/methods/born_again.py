"""Self-distillation: born-again networks (Furlanello et al. 2018, "Born-Again Neural Networks").

Generation 1 learns from the labels alone. Generation k+1 — the same
architecture, freshly and independently initialised — learns from generation k
(frozen) with the recipe's distill losses (typically the kd term: α · T²·KL + (1−α) · CE).
Each generation is one stage of the run directory (`gen1/`, `gen2/`, ...) with its
own metrics.jsonl; metrics.json lists every generation's test accuracy and that of
the generations' ensemble (averaged softmax, BANE in the paper).

The step is the standard teacher -> student step; only the driver is new.
"""
from __future__ import annotations

import copy


from kdforge.methods.standard import StandardKD
from kdforge.registry import METHODS


@METHODS.register("born_again")
class BornAgain(StandardKD):
    """StandardKD whose teacher is the previous generation; `run_recipe` runs the generations."""

    @staticmethod
    def run_recipe(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
        from kdforge.data import load_data
        from kdforge.methods import _driver
        from kdforge.models.build import build_model
        from kdforge.pipeline import probe_batch
        from kdforge.stages import train_stage

        data = load_data(recipe.data, recipe.seed)
        probe = probe_batch(data.train)

        def fresh(gen: int):  # generation `gen`, its own seed: an independent initialisation
            return build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + gen)

        StandardKD(fresh(2), fresh(1), recipe.distill, probe)  # check terms and layer names before writing anything
        run_dir = _driver.open_run(recipe, resume=resume, force=force)
        gens, rows, stages = [], {}, {}
        for g in range(1, recipe.born_again.generations + 1):
            model = fresh(g)
            if g == 1:
                stages["gen1"] = _driver.train_supervised("gen1", model, data, recipe.distill, run_dir, recipe.seed, quiet)
            else:
                teacher = copy.deepcopy(gens[-1])  # frozen by Teacher; the kept generation stays trainable
                method = BornAgain(model, teacher, recipe.distill, probe)
                stages[f"gen{g}"] = train_stage(f"gen{g}", run_dir, method, data, recipe.distill, recipe.seed, quiet=quiet)
            gens.append(model)
            rows[f"gen{g}"] = _driver.test_row(model, data)
        rows["ensemble"] = {"accuracy": ensemble_accuracy(gens, data.test)}
        last = f"gen{len(gens)}"
        results = {"seed": recipe.seed, "method": "born_again", "generations": stages, "models": rows,
                   "student_stage": stages[last], "student": rows[last]}
        return _driver.finish_run(run_dir, recipe, results)


def ensemble_accuracy(models: list, dataset) -> float:
    """Accuracy of the averaged softmax of `models` on `dataset`."""
    from kdforge.train.evaluate import predict

    probs, y = None, None
    for m in models:
        logits, y = predict(m, dataset)  # (N, C), (N,)
        probs = logits.softmax(-1) if probs is None else probs + logits.softmax(-1)
    return (probs.argmax(-1) == y).float().mean().item()


__all__ = ["BornAgain", "ensemble_accuracy"]
