"""Workflow of method `born_again` (Furlanello et al. 2018): generations of the same
architecture, each freshly initialised; generation 1 learns from the labels, generation
k+1 from generation k (frozen). One stage per generation (RUN/gen1, RUN/gen2, ...);
metrics.json lists each generation's test accuracy and the generations' ensemble (BANE).
"""
from __future__ import annotations

import copy

from kdforge.data import load_data
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage, train_supervised
from kdforge.train.batching import probe_batch
from kdforge.train.evaluate import predict
from kdforge.workflows.run import Run, build_method, eval_row, report_markdown


def ensemble_accuracy(models: list, dataset) -> float:
    """Accuracy of the averaged softmax of `models` on `dataset`."""
    probs, y = None, None
    for m in models:
        logits, y = predict(m, dataset)  # (N, C), (N,)
        probs = logits.softmax(-1) if probs is None else probs + logits.softmax(-1)
    return (probs.argmax(-1) == y).float().mean().item()


@WORKFLOWS.register("born_again")
def run_born_again(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    data = load_data(recipe.data, recipe.seed)
    probe = probe_batch(data.train)

    def fresh(gen: int):  # generation `gen`, its own seed: an independent initialisation
        return build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + gen)

    build_method(recipe, fresh(2), fresh(1), probe)  # check terms and layer names before writing anything
    run = Run.open(recipe, resume=resume, force=force)
    gens, rows, stages = [], {}, {}
    for g in range(1, recipe.born_again.generations + 1):
        model, name = fresh(g), f"gen{g}"
        if g == 1:
            stages[name] = train_supervised(name, run.dir, model, data, recipe.distill, recipe.seed, quiet=quiet)
        else:
            teacher = copy.deepcopy(gens[-1])  # frozen by Teacher; the kept generation stays trainable
            method = build_method(recipe, model, teacher, probe)
            stages[name] = train_stage(name, run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet)
        gens.append(model)
        rows[name] = eval_row(model, data)
    rows["ensemble"] = {"accuracy": ensemble_accuracy(gens, data.test)}
    last = f"gen{len(gens)}"
    results = {"seed": recipe.seed, "method": "born_again", "generations": stages, "models": rows,
               "student_stage": stages[last], "student": rows[last]}
    return run.finish(results, report_markdown(recipe, rows))


__all__ = ["ensemble_accuracy", "run_born_again"]
