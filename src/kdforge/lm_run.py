"""Runs a causal-LM recipe (methods token_kd | sequence_kd | gkd | reasoning).

The same shape as `pipeline.run_recipe` (check everything, then write the run
directory, train in the one loop, test, report), with perplexity instead of
accuracy. Plugged in through the pipeline's per-method driver hook.
"""
from __future__ import annotations

from pathlib import Path

from kdforge.errors import KDForgeError
from kdforge.models.small import count_parameters
from kdforge.train import distributed as dist


def _tokenizer(spec: str | None, field: str):
    if not spec:
        return None
    from kdforge.models.hf import load_tokenizer

    return load_tokenizer(spec, field=field)


def build_lm_pair(recipe, data):
    """(student, teacher) causal LMs from the recipe, tokenizers compared when both are HF folders."""
    from kdforge.models.build import build_model

    for role in ("teacher", "student"):
        sec = getattr(recipe, role)
        if sec.name != "hf" or (sec.task or "classify") != "causal_lm":
            raise KDForgeError(f"{role}: method {recipe.method} needs `name: hf` with `task: causal_lm`")
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    toks = (_tokenizer(recipe.student.hf, "student.hf"), _tokenizer(recipe.teacher.hf, "teacher.hf"))
    return student, teacher, toks


def run_lm_recipe(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    from kdforge.data import load_data
    from kdforge.methods._driver import open_run
    from kdforge.pipeline import probe_batch
    from kdforge.registry import METHODS
    from kdforge.rundir import write_json, write_text
    from kdforge.stages import train_stage
    from kdforge.train.lm_metrics import perplexity_metrics

    run_dir = Path(recipe.run_dir)
    data = load_data(recipe.data, recipe.seed)
    student, teacher, toks = build_lm_pair(recipe, data)
    probe = probe_batch(data.train)
    cls = METHODS.get(recipe.method)
    source = teacher
    if recipe.store is not None:
        from kdforge.store import open_or_write

        source = open_or_write(recipe, teacher, data)
    method = cls(student, source, recipe.distill, probe, tokenizers=toks, data=data) if recipe.method == "reasoning" \
        else cls(student, source, recipe.distill, probe, tokenizers=toks)
    metric_fn, select = method.metrics() if hasattr(method, "metrics") else (perplexity_metrics, "neg_perplexity")
    teacher_metric = method.teacher_metrics()[0] if hasattr(method, "teacher_metrics") else metric_fn

    open_run(recipe, resume=resume, force=force)  # rank 0 opens it, the others wait
    results: dict = {"seed": recipe.seed, "method": recipe.method}
    results["teacher"] = {**teacher_metric(teacher, data.test, None), "params": count_parameters(teacher)}
    results["student_stage"] = train_stage("student", run_dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                                           train=method.train_set(data) if hasattr(method, "train_set") else None,
                                           metric_fn=metric_fn, select=select)
    results["student"] = {**metric_fn(student, data.test, None), "params": count_parameters(student)}
    if hasattr(source, "calls"):
        results["teacher_calls"] = source.calls
    if not dist.context().is_main:
        return results
    write_json(run_dir / "metrics.json", results)
    key = select.removeprefix("neg_")
    lines = [f"# kdforge run — {recipe.data.name}, method {recipe.method}, seed {recipe.seed}", "",
             f"| model | params | test {key} |", "|---|---:|---:|"]
    lines += [f"| {r} | {results[r]['params']:,} | {results[r][key]:.4f} |" for r in ("teacher", "student")]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return results


__all__ = ["build_lm_pair", "run_lm_recipe"]
