"""Workflow `lm` of the causal-LM methods (token_kd | sequence_kd | gkd; reasoning through workflows.reasoning).

The shape of the standard workflow (check everything, then open the run
directory, train in the one loop, test, report) with perplexity, or the
method's own metric (reasoning: answer accuracy), instead of classification accuracy.

With the Minitron recipe (Sreenivas et al. 2024) two steps come before distillation, in this order:
  1. teacher correction (`teacher.correct`): the teacher is fine-tuned on the distillation data
     (next-token cross-entropy, stage RUN/teacher) and everything after reads the corrected teacher;
  2. pruning (`student.init: prune`): the student is the (corrected) teacher - or the student's own
     `hf` model when it names another one - pruned by activation importance on a calibration sample
     of the training data (kdforge.models.prune_llm); what was kept is recorded in metrics.json.
The store, when the recipe has one, is written after both, from the corrected teacher.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset

from kdforge.compress import export
from kdforge.data import load_data
from kdforge.data.paired import pair_tokenizers, paired_lm_data
from kdforge.data.chat import skipped_rows
from kdforge.errors import KDForgeError
from kdforge.methods.supervised import NextTokenCE
from kdforge.models.build import build_model
from kdforge.models.hf import load_tokenizer
from kdforge.models.prune_llm import PruneTarget, prune_causal_lm, resolve_target
from kdforge.models.small import count_parameters
from kdforge.registry import WORKFLOWS
from kdforge.rundir import write_json
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.train.lm_metrics import perplexity_metrics
from kdforge.workflows.run import Run, build_method, report_markdown
from kdforge.workflows.teacher_store import open_or_write
from kdforge.workflows.teacher_store import preflight as store_preflight

PRUNE_SIZES = ("hidden_size", "intermediate_size", "num_heads", "num_kv_groups", "num_layers")


@dataclass
class LMTask:
    """What a causal-LM method trains on and is measured by: `train` (None: the data's training split),
    the validation/test `metric` selected on `select`, and the teacher's metric (None: `metric`)."""

    metric: Callable = perplexity_metrics
    select: str = "neg_perplexity"
    teacher_metric: Callable | None = None
    train: Dataset | None = None


def perplexity_task(recipe, method, teacher, data, tokenizers) -> LMTask:
    """token_kd, sequence_kd, gkd: the data as given, measured by perplexity."""
    return LMTask()


def _tokenizer(spec: str | None, field: str):
    return load_tokenizer(spec, field=field) if spec else None


def _check_roles(recipe) -> None:
    for role in ("teacher", "student"):
        sec = getattr(recipe, role)
        if sec.name != "hf" or (sec.task or "classify") != "causal_lm":
            raise KDForgeError(f"{role}: method {recipe.method} needs `name: hf` with `task: causal_lm`")


def build_lm_pair(recipe, data):
    """(student, teacher, (student tokenizer, teacher tokenizer)) causal LMs from the recipe
    (a student with init: prune is built by `pruned_student` instead, after teacher correction)."""
    _check_roles(recipe)
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = None if recipe.student.init == "prune" else \
        build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    toks = (_tokenizer(recipe.student.hf, "student.hf"), _tokenizer(recipe.teacher.hf, "teacher.hf"))
    return student, teacher, toks


def _prune_source(recipe, teacher, data):
    """The model a pruned student starts from: the (corrected) teacher when both name the same `hf`."""
    if recipe.student.hf == recipe.teacher.hf:
        return copy.deepcopy(teacher)
    base = recipe.student.model_copy(update={"init": None, "prune": None})
    return build_model(base, data.input_shape, data.num_classes, "student", recipe.seed + 1)


def check_prune(recipe, teacher) -> None:
    """Before the run directory is written: the prune sizes fit the teacher they prune (a student
    pruned from another `hf` model is checked when it is loaded)."""
    if recipe.student.init == "prune" and recipe.student.hf == recipe.teacher.hf:
        resolve_target(teacher.hf.config, PruneTarget(**{k: getattr(recipe.student.prune, k) for k in PRUNE_SIZES}))


def correct_teacher(recipe, run: Run, teacher, data, quiet: bool) -> dict:
    """Teacher correction: fine-tune the causal-LM teacher on the training split (stage RUN/teacher,
    selected by validation perplexity); returns the stage result with the test metrics before and after."""
    before = perplexity_metrics(teacher, data.test, None)
    stage = train_stage("teacher", run.dir, NextTokenCE(teacher, recipe.distill.lm.chunk_size), data, recipe.teacher.train,
                        recipe.seed, quiet=quiet, metric_fn=perplexity_metrics, select="neg_perplexity")
    return {**stage, "test_before": before}


@WORKFLOWS.register("lm")
def run_lm(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False,
           task_for: Callable[..., LMTask] = perplexity_task) -> dict:
    """`task_for(recipe, method, teacher, data, tokenizers)` gives the training set and metrics (reasoning: its own)."""
    cross = recipe.distill.lm.cross_tokenizer  # the text in both tokenizations, aligned (kdforge.data.paired)
    data = paired_lm_data(recipe.data, *pair_tokenizers(recipe)) if cross else load_data(recipe.data, recipe.seed)
    student, teacher, toks = build_lm_pair(recipe, data)
    check_prune(recipe, teacher)
    probe = probe_batch(data.train)
    late = recipe.teacher.correct or student is None  # the teacher is trained or the student built after the run opens

    def make_method():
        source = open_or_write(recipe, teacher, data) if recipe.store is not None else teacher
        method = build_method(recipe, student, source, probe, tokenizers=toks)
        return method, source, task_for(recipe, method, teacher, data, toks)

    if not late:  # every check (vocabularies, context lengths, the store) before anything is written
        method, source, task = make_method()
    elif recipe.store is not None:  # the store is written after correction / pruning: what can be checked now, is
        store_preflight(recipe, teacher, data.train)
    run = Run.open(recipe, resume=resume, force=force)
    results: dict = {"seed": recipe.seed, "method": recipe.method}
    if skipped_rows(data):
        results["data_skipped_rows"] = skipped_rows(data)
    if recipe.teacher.correct:
        results["teacher_correction"] = correct_teacher(recipe, run, teacher, data, quiet)
    if student is None:
        student, results["pruning"] = prune_causal_lm(_prune_source(recipe, teacher, data), recipe.student.prune,
                                                      data.train, recipe.seed)
        results["student_before_training"] = perplexity_metrics(student, data.test, None)
    if late:
        method, source, task = make_method()
    metric_fn, select = task.metric, task.select
    teacher_metric = task.teacher_metric or metric_fn

    teacher_test = data.test.teacher_view() if cross else data.test  # cross_tokenizer: the teacher reads its own tokens
    results["teacher"] = {**teacher_metric(teacher, teacher_test, None), "params": count_parameters(teacher)}
    results["student_stage"] = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                                           train=task.train,
                                           metric_fn=metric_fn, select=select)
    results["student"] = {**metric_fn(student, data.test, None), "params": count_parameters(student)}
    if hasattr(source, "calls"):
        results["teacher_calls"] = source.calls
    key = select.removeprefix("neg_")
    rows = {r: results[r] for r in ("teacher", "student")}
    notes = []
    if "teacher_correction" in results:
        notes.append(f"Teacher corrected on the training data: test {key} {results['teacher_correction']['test_before'].get(key, float('nan')):.4f} "
                     f"before, {results['teacher'].get(key, float('nan')):.4f} after.")
    if "pruning" in results:
        p = results["pruning"]
        notes.append(f"Student pruned by importance (Minitron) to {p['sizes']}, layers {p['layers']}: non-embedding "
                     f"parameters {p['non_embedding_params']['before']:,} -> {p['non_embedding_params']['after']:,}; "
                     f"test {key} before training {results['student_before_training'].get(key, float('nan')):.4f}.")
    results = run.finish(results, report_markdown(recipe, rows, [(f"test {key}", key), *([("test bits per byte", "bpb")] if "bpb" in results["student"] else [])], notes))
    for i, stage in enumerate(recipe.compress):  # export stages only (config.Recipe checks it), written by rank 0
        example = probe_batch(data.test, 2)["input_ids"]  # (2, L)
        out = run.dir / "compress" / f"{i:02d}-export" / "artifacts"
        results.setdefault("exports", []).append(run.on_main(export, student, out, stage.verb_config(), example_inputs=example))
    if recipe.compress:
        run.on_main(write_json, run.dir / "metrics.json", results)
    return results


__all__ = ["LMTask", "build_lm_pair", "check_prune", "correct_teacher", "perplexity_task", "run_lm"]
