"""Workflow of method `embedding`: sentence-embedding teacher and student (`task: embed`),
distilled in one stage selected on validation cosine to the teacher, tested on embedding
metrics (mean cosine, recall@10 of the teacher's neighbours, linear-probe accuracy).
"""
from __future__ import annotations

from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.methods.embedding import EmbeddingKD, cosine_metric, embedding_metrics
from kdforge.models.build import build_model
from kdforge.models.small import count_parameters
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.workflows.run import Run, report_markdown

COLUMNS = (("mean cosine to teacher", "cosine"), ("recall@10", "recall@10"), ("linear-probe accuracy", "probe_accuracy"))


@WORKFLOWS.register("embedding")
def run_embedding(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    for role in ("teacher", "student"):
        sec = getattr(recipe, role)
        if sec.name != "hf" or sec.task != "embed":
            raise KDForgeError(f"{role}: method embedding needs `name: hf` with `task: embed`")
    data = load_data(recipe.data, recipe.seed)
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    method = EmbeddingKD(student, teacher, recipe.distill, probe_batch(data.train))
    run = Run.open(recipe, resume=resume, force=force)
    stage = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                        metric_fn=cosine_metric(teacher), select="cosine")
    test = embedding_metrics(method.student, teacher, data.train, data.test)
    results = {"seed": recipe.seed, "method": "embedding", "best_epoch": stage["best_epoch"], "student_stage": stage,
               "teacher": {"params": count_parameters(teacher), "accuracy": test["teacher_probe_accuracy"]},
               "student": {**test, "params": count_parameters(method.student), "accuracy": test["probe_accuracy"]}}
    rows = {"teacher": {**results["teacher"], "cosine": 1.0, "recall@10": 1.0, "probe_accuracy": test["teacher_probe_accuracy"]},
            "student": results["student"]}
    return run.finish(results, report_markdown(recipe, rows, COLUMNS))


__all__ = ["run_embedding"]
