"""Workflow `classify`, of methods `standard` and `supervised` (their MethodSpec.workflow): a classifier
teacher (trained here unless a checkpoint is given) -> distilled student -> test
metrics -> optional logit-bias calibration -> compress stages -> report.

Everything that can be checked is checked before the run directory is written,
so bad input never leaves a half-written run.
"""
from __future__ import annotations

import copy

from kdforge import control as ctl
from kdforge.data import load_data
from kdforge.inputs import check_models
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage, train_supervised
from kdforge.train.batching import probe_batch
from kdforge.train.calibrate import LogitBias, calibrate_bias
from kdforge.tuning import resolve_auto
from kdforge.workflows.compress import compress_recipe
from kdforge.workflows.phases import split_phases
from kdforge.workflows.run import Run, build_method, eval_row, report_markdown
from kdforge.workflows.teacher_store import open_or_write
from kdforge.workflows.teacher_store import preflight as store_preflight
from kdforge.workflows.transfer_set import prepare_transfer_set


@WORKFLOWS.register("classify")
def run_standard(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    data = load_data(recipe.data, recipe.seed)
    shape, classes = data.input_shape, data.num_classes
    student = build_model(recipe.student, shape, classes, "student", recipe.seed + 1)
    needs_teacher = recipe.method != "supervised"
    teacher = build_model(recipe.teacher, shape, classes, "teacher", recipe.seed) if needs_teacher else None
    originals = data.train
    data, transfer = prepare_transfer_set(recipe, data, student, teacher)  # data.augment, student.trim_vocab
    intermediate, distill = split_phases(recipe.distill)
    probe = probe_batch(data.train)
    check_models(teacher, student, data.train, data.val)  # both models run on the data's batches, before anything is written
    if needs_teacher:  # validate method + layer names + class counts on a throwaway copy
        build_method(recipe, copy.deepcopy(student), copy.deepcopy(teacher), probe)
        if recipe.store is not None:  # an existing teacher store must be readable and fit, before anything is written
            store_preflight(recipe, teacher, data.train)

    run = Run.open(recipe, resume=resume, force=force)
    results: dict = {"seed": recipe.seed, "method": recipe.method, **({"transfer_set": transfer} if transfer else {})}
    if needs_teacher:
        if not recipe.teacher.checkpoint:
            results["teacher_stage"] = train_supervised("teacher", run.dir, teacher, data, recipe.teacher.train,
                                                        recipe.seed, quiet=quiet)
        results["teacher"] = eval_row(teacher, data)
    control = None
    if needs_teacher and ctl.control_applies(recipe.distill.control, teacher, student, originals):
        # before anything trains the student: the control starts from the same weights (and trimmed vocabulary)
        control, results["control_stage"] = ctl.train_control(run.dir, student, originals, data.val, distill,
                                                              recipe.seed, quiet=quiet)
    if needs_teacher:
        control_val = results["control_stage"]["best_val"]["accuracy"] if control is not None else None
        results["teacher_diagnostics"] = ctl.teacher_diagnostics(teacher, originals, data.val, control_val)
    source = teacher
    if recipe.store is not None and needs_teacher:  # training reads the teacher-output store (written once)
        source = open_or_write(recipe, teacher, data)
    cfg = distill
    if needs_teacher:  # kd temperature/alpha "auto": searched on held-out training data with the live teacher
        cfg = resolve_auto(cfg, teacher, student, data.train, recipe.seed, run.dir / "auto", method=recipe.method, quiet=quiet)
    if intermediate is not None:  # TinyBERT's two phases: the feature terms alone first (live teacher, original texts)
        first = build_method(recipe, student, teacher, probe, cfg=intermediate)
        results["intermediate_stage"] = train_stage("student-intermediate", run.dir, first, data, intermediate, recipe.seed,
                                                    quiet=quiet, train=originals, select=None)  # the head is untrained yet
    method = build_method(recipe, student, source, probe, cfg=cfg)
    results["student_stage"] = train_stage("student", run.dir, method, data, cfg, recipe.seed, quiet=quiet)
    if needs_teacher:  # teacher work, all ranks and all invocations (a resumed run adds to it): not a metric
        run.record_work(teacher_forward_samples=method.teacher.samples)
    omitted = list(recipe.data.omit_classes)
    results["student"] = eval_row(student, data, omitted)
    if control is not None:  # test read for both, after the choice made on validation
        results["student_distilled"], results["control"] = results["student"], eval_row(control, data, omitted)
        results["selection"] = ctl.choose(results["student_stage"], results["control_stage"])
        results["selection"]["test"] = {"kd_minus_control": results["student"]["accuracy"] - results["control"]["accuracy"]}
        ctl.keep(student, control, results["selection"])
        results["student"] = results[{"distilled": "student_distilled", "control": "control"}[results["selection"]["kept"]]]
    if cfg.bias_calibration != "none":  # Hinton et al. §3: C logit biases fitted on held-out data, weights untouched
        held_out = data.calib if data.calib is not None else data.val
        bias = calibrate_bias(student, held_out, teacher if cfg.bias_calibration == "teacher" else None)
        student = LogitBias(student, bias)
        results["student_calibrated"] = {**eval_row(student, data, omitted), "bias": bias.tolist()}
    report = render_report(recipe, results)
    run.finish(results, report)
    if recipe.compress:  # compression stages, gates and the HTML report (kdforge.workflows.compress)
        results = compress_recipe(recipe, run.dir, student, teacher, data, results, quiet=quiet, preamble=report, ctx=run.ctx)
    return results


def render_report(recipe, results: dict) -> str:
    """report.md of a standard / supervised run: test accuracy, and that on each class the transfer set lacked."""
    omitted = list(recipe.data.omit_classes)
    columns = [("test accuracy", "accuracy"), *((f"accuracy on class {c}", f"accuracy_class_{c}") for c in omitted)]
    names = {"teacher": "teacher", "student_distilled": "student (distilled)", "control": "student (labels alone, control)",
             "student": "student (kept)", "student_calibrated": "student (kept, calibrated)"}
    if "control" not in results:  # no control arm: the rows keep their metrics.json names
        names = {role: role for role in ("teacher", "student", "student_calibrated")}
    rows = {names[role]: results[role] for role in names if role in results}
    stage = results["student_stage"]
    notes = [f"Confidence filter: {int(stage['filtered'])} of {int(stage['seen'])} sample-visits filtered."] \
        if "filtered" in stage else []
    return report_markdown(recipe, rows, columns, [*ctl.report_lines(results), *notes])


__all__ = ["render_report", "run_standard"]
