"""Workflow of method `data_free` (DAFL / DeepInversion): the teacher is trained on the
data here unless `teacher.checkpoint` is given; then a generator and the student train
together on generated inputs only (RUN/student; the real validation split selects epochs).
"""
from __future__ import annotations

import copy

import torch

from kdforge.data import load_data
from kdforge.methods.data_free import NoiseSeeds
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage, train_supervised
from kdforge.workflows.run import Run, build_method, eval_row, report_markdown


@WORKFLOWS.register("data_free")
def run_data_free(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    data = load_data(recipe.data, recipe.seed)
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    probe = {"x": torch.zeros(2, *data.input_shape)}  # shapes only: no training sample is read
    build_method(recipe, copy.deepcopy(student), copy.deepcopy(teacher), probe)  # checks
    run = Run.open(recipe, resume=resume, force=force)
    results: dict = {"seed": recipe.seed, "method": "data_free"}
    if not recipe.teacher.checkpoint:
        results["teacher_stage"] = train_supervised("teacher", run.dir, teacher, data, recipe.teacher.train,
                                                    recipe.seed, quiet=quiet)
    method = build_method(recipe, student, teacher, probe)
    # batches_per_epoch optimizer steps per epoch whatever the number of processes (each rank takes 1/world)
    seeds = NoiseSeeds(recipe.data_free.batches_per_epoch * recipe.distill.batch_size * run.ctx.world)
    results["student_stage"] = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed,
                                           quiet=quiet, train=seeds)
    rows = {"teacher": eval_row(teacher, data), "student": eval_row(student, data)}
    results.update(models=rows, teacher=rows["teacher"], student=rows["student"],
                   student_over_teacher=rows["student"]["accuracy"] / max(rows["teacher"]["accuracy"], 1e-12))
    return run.finish(results, report_markdown(recipe, rows))


__all__ = ["run_data_free"]
