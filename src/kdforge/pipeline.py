"""Runs a recipe: data -> teacher (trained here unless a checkpoint is given) ->
distilled student -> test metrics -> run directory with report.

Everything that can be checked is checked before the run directory is written,
so bad input never leaves a half-written run.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from kdforge.config import Recipe
from kdforge.recipe_file import dump_recipe
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.inputs import check_models
from kdforge.models.build import build_model
from kdforge.models.small import count_parameters
from kdforge.registry import METHODS
from kdforge.rundir import environment, write_json, write_text
from kdforge.stages import train_stage
from kdforge.store import preflight as store_preflight
from kdforge.train import distributed as dist
from kdforge.train.batching import probe_batch  # noqa: F401 (kdforge.pipeline.probe_batch is used by benchmarks)
from kdforge.train.calibrate import LogitBias, calibrate_bias
from kdforge.train.evaluate import classification_metrics
from kdforge.tuning import resolve_auto


def record_work(run_dir: Path, ctx, **counts: int) -> None:
    """Add this process group's counts to RUN/work.json (kept apart from metrics.json, which a
    resumed run must reproduce exactly)."""
    counts = ctx.sum_dict(counts)
    if ctx.is_main:
        path = run_dir / "work.json"
        work = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {k: int(work.get(k, 0) + v) for k, v in counts.items()})


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    if resume:
        if not (run_dir / "recipe.yaml").exists():
            raise KDForgeError(f"--resume: {run_dir} is not a kdforge run directory (no recipe.yaml)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise KDForgeError(f"run_dir {run_dir} already exists; use --resume to continue it or --force to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def run_recipe(recipe: Recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    driver = getattr(METHODS.get(recipe.method), "run_recipe", None)
    if driver is not None:  # methods with their own stages (born_again, mutual, data_free, multi_teacher)
        return driver(recipe, resume=resume, force=force, quiet=quiet)
    run_dir = Path(recipe.run_dir)
    torch.set_num_threads(torch.get_num_threads())
    data = load_data(recipe.data, recipe.seed)
    shape, classes = data.input_shape, data.num_classes
    student = build_model(recipe.student, shape, classes, "student", recipe.seed + 1)
    needs_teacher = recipe.method != "supervised"
    teacher = build_model(recipe.teacher, shape, classes, "teacher", recipe.seed) if needs_teacher else None
    probe = probe_batch(data.train)
    check_models(teacher, student, data.train, data.val)  # both models run on the data's batches, before anything is written
    if needs_teacher:  # validate method + layer names + class counts on a throwaway copy
        METHODS.build(recipe.method, copy.deepcopy(student), copy.deepcopy(teacher), recipe.distill, probe)
        if recipe.store is not None:  # an existing teacher store must be readable and fit, before anything is written
            store_preflight(recipe, teacher, data.train)

    ctx = dist.context(recipe.device)
    if ctx.is_main:  # under torchrun only rank 0 writes; the others wait for it
        prepare_run_dir(run_dir, resume, force)
        write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        write_json(run_dir / "env.json", {**environment(recipe.seed), "world_size": ctx.world})
    ctx.barrier()

    results: dict = {"seed": recipe.seed, "method": recipe.method}
    if needs_teacher:
        if not recipe.teacher.checkpoint:
            teacher_method = METHODS.build("supervised", teacher)
            results["teacher_stage"] = train_stage("teacher", run_dir, teacher_method, data, recipe.teacher.train, recipe.seed, quiet=quiet)
        results["teacher"] = {**classification_metrics(teacher, data.test), "params": count_parameters(teacher)}
    source = teacher
    if recipe.store is not None and needs_teacher:  # training reads the teacher-output store (written once)
        from kdforge.store import open_or_write

        source = open_or_write(recipe, teacher, data)
    cfg = recipe.distill
    if needs_teacher:  # kd temperature/alpha "auto": searched on held-out training data with the live teacher
        cfg = resolve_auto(cfg, teacher, student, data.train, recipe.seed, run_dir / "auto", method=recipe.method, quiet=quiet)
    method = METHODS.build(recipe.method, student, source, cfg, probe)
    results["student_stage"] = train_stage("student", run_dir, method, data, cfg, recipe.seed, quiet=quiet)
    if needs_teacher:  # teacher work, all ranks and all invocations (a resumed run adds to it): not a metric
        record_work(run_dir, ctx, teacher_forward_samples=method.teacher.samples)
    omitted = list(recipe.data.omit_classes)
    results["student"] = {**classification_metrics(student, data.test, classes=omitted), "params": count_parameters(student)}
    if cfg.bias_calibration != "none":  # Hinton et al. §3: C logit biases fitted on held-out data, weights untouched
        held_out = data.calib if data.calib is not None else data.val
        bias = calibrate_bias(student, held_out, teacher if cfg.bias_calibration == "teacher" else None)
        student = LogitBias(student, bias)
        results["student_calibrated"] = {**classification_metrics(student, data.test, classes=omitted),
                                         "params": count_parameters(student), "bias": bias.tolist()}
    write_json(run_dir / "metrics.json", results)
    write_text(run_dir / "report.md", render_report(recipe, results))
    if recipe.compress:  # compression stages, gates and the HTML report (kdforge.compress_stages)
        from kdforge.compress_stages import compress_recipe

        results = compress_recipe(recipe, run_dir, student, teacher, data, results, quiet=quiet)
    return results


def render_report(recipe: Recipe, results: dict) -> str:
    omitted = list(recipe.data.omit_classes)  # classes the transfer set lacks: their test accuracy is shown too
    lines = [f"# kdforge run — {recipe.data.name}, method {recipe.method}, seed {recipe.seed}", "",
             "| model | params | test accuracy |" + "".join(f" accuracy on class {c} |" for c in omitted),
             "|---|---:|---:|" + "---:|" * len(omitted)]
    for role in ("teacher", "student", "student_calibrated"):
        if role in results:
            r = results[role]
            lines.append(f"| {role} | {r['params']:,} | {r['accuracy']:.4f} |"
                         + "".join(f" {r[f'accuracy_class_{c}']:.4f} |" if f"accuracy_class_{c}" in r else " - |" for c in omitted))
    stage = results["student_stage"]
    if "filtered" in stage:
        lines += ["", f"Confidence filter: {int(stage['filtered'])} of {int(stage['seen'])} sample-visits filtered."]
    return "\n".join(lines) + "\n"
