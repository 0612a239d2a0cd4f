"""Workflow of method `multi_teacher`: every teacher of `ensemble:` is trained (stage
RUN/teacher{k}) unless it has a checkpoint, then the student learns from their
combined soft targets (RUN/student). Each teacher, their ensemble and the student are tested.
"""
from __future__ import annotations

import copy

import torch

from kdforge.data import load_data
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage, train_supervised
from kdforge.train.batching import probe_batch
from kdforge.train.evaluate import predict
from kdforge.workflows.run import Run, build_method, eval_row, report_markdown


@WORKFLOWS.register("multi_teacher")
def run_multi_teacher(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    e = recipe.ensemble
    data = load_data(recipe.data, recipe.seed)
    cfgs = list(e.teachers) if e.teachers is not None else [recipe.teacher] * e.count
    teachers = [build_model(c, data.input_shape, data.num_classes, f"ensemble.teachers.{k}", recipe.seed + 100 * k)
                for k, c in enumerate(cfgs)]
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    probe = probe_batch(data.train)
    build_method(recipe, copy.deepcopy(student), copy.deepcopy(teachers), probe)  # checks
    run = Run.open(recipe, resume=resume, force=force)
    results: dict = {"seed": recipe.seed, "method": "multi_teacher", "teacher_stages": {}}
    rows = {}
    for k, (c, t) in enumerate(zip(cfgs, teachers)):
        if not c.checkpoint:
            results["teacher_stages"][f"teacher{k}"] = train_supervised(f"teacher{k}", run.dir, t, data, c.train,
                                                                        recipe.seed + 100 * k, quiet=quiet)
        rows[f"teacher{k}"] = eval_row(t, data)
    method = build_method(recipe, student, teachers, probe)
    logits = torch.stack([predict(t, data.test)[0] for t in teachers])  # (K, N, C)
    y = predict(teachers[0], data.test)[1]
    rows["teacher_ensemble"] = {"accuracy": (method.soft_targets(logits, 1.0).argmax(-1) == y).float().mean().item()}
    results["student_stage"] = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet)
    rows["student"] = eval_row(student, data)
    results.update(models=rows, student=rows["student"])
    return run.finish(results, report_markdown(recipe, rows))


__all__ = ["run_multi_teacher"]
