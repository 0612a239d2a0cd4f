"""Workflow of the causal-LM methods (token_kd | sequence_kd | gkd | reasoning).

The shape of the standard workflow (check everything, then open the run
directory, train in the one loop, test, report) with perplexity, or the
method's own metric (reasoning: answer accuracy), instead of classification accuracy.
"""
from __future__ import annotations

from kdforge.data import load_data
from kdforge.data.paired import pair_tokenizers, paired_lm_data
from kdforge.errors import KDForgeError
from kdforge.models.build import build_model
from kdforge.models.hf import load_tokenizer
from kdforge.models.small import count_parameters
from kdforge.registry import METHODS, WORKFLOWS
from kdforge.stages import train_stage
from kdforge.store import open_or_write
from kdforge.train.batching import probe_batch
from kdforge.train.lm_metrics import perplexity_metrics
from kdforge.workflows.run import Run, report_markdown

LM_METHODS = ("token_kd", "sequence_kd", "gkd", "reasoning")


def _tokenizer(spec: str | None, field: str):
    return load_tokenizer(spec, field=field) if spec else None


def build_lm_pair(recipe, data):
    """(student, teacher, (student tokenizer, teacher tokenizer)) causal LMs from the recipe."""
    for role in ("teacher", "student"):
        sec = getattr(recipe, role)
        if sec.name != "hf" or (sec.task or "classify") != "causal_lm":
            raise KDForgeError(f"{role}: method {recipe.method} needs `name: hf` with `task: causal_lm`")
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    toks = (_tokenizer(recipe.student.hf, "student.hf"), _tokenizer(recipe.teacher.hf, "teacher.hf"))
    return student, teacher, toks


def run_lm(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    cross = recipe.distill.lm.cross_tokenizer  # the text in both tokenizations, aligned (kdforge.data.paired)
    data = paired_lm_data(recipe.data, *pair_tokenizers(recipe)) if cross else load_data(recipe.data, recipe.seed)
    student, teacher, toks = build_lm_pair(recipe, data)
    probe = probe_batch(data.train)
    source = open_or_write(recipe, teacher, data) if recipe.store is not None else teacher
    extra = {"data": data} if recipe.method == "reasoning" else {}  # reasoning generates its training set here
    method = METHODS.build(recipe.method, student, source, recipe.distill, probe, tokenizers=toks, **extra)
    metric_fn, select = method.metrics() if hasattr(method, "metrics") else (perplexity_metrics, "neg_perplexity")
    teacher_metric = method.teacher_metrics()[0] if hasattr(method, "teacher_metrics") else metric_fn

    run = Run.open(recipe, resume=resume, force=force)
    results: dict = {"seed": recipe.seed, "method": recipe.method}
    teacher_test = data.test.teacher_view() if cross else data.test  # cross_tokenizer: the teacher reads its own tokens
    results["teacher"] = {**teacher_metric(teacher, teacher_test, None), "params": count_parameters(teacher)}
    results["student_stage"] = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                                           train=method.train_set(data) if hasattr(method, "train_set") else None,
                                           metric_fn=metric_fn, select=select)
    results["student"] = {**metric_fn(student, data.test, None), "params": count_parameters(student)}
    if hasattr(source, "calls"):
        results["teacher_calls"] = source.calls
    key = select.removeprefix("neg_")
    rows = {r: results[r] for r in ("teacher", "student")}
    return run.finish(results, report_markdown(recipe, rows, [(f"test {key}", key)]))


for _key in LM_METHODS:
    WORKFLOWS.register(_key)(run_lm)

__all__ = ["LM_METHODS", "build_lm_pair", "run_lm"]
