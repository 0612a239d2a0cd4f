"""The Python API: any nn.Module teacher and student, any torch Dataset."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset

from kdforge import control as ctl
from kdforge.config import DistillConfig, with_recommended_losses
from kdforge.errors import KDForgeError
from kdforge.inputs import check_models
from kdforge.methods.base import MethodSpec, method_spec
from kdforge.recipe_file import format_validation_error
from kdforge.registry import METHODS
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.train.evaluate import classification_metrics
from kdforge.tuning import resolve_auto


def _needs(spec: MethodSpec) -> str:
    """What a method takes beyond one teacher and one classifier student (kdforge.distill's shapes)."""
    if spec.section:
        return f"its {spec.section}: section"
    if spec.tokenizers or spec.task != "classify":
        return f"{spec.task} models"
    return "several stages"


@dataclass
class DistillResult:
    student: nn.Module
    metrics: dict
    run_dir: Path


@dataclass
class _Splits:
    train: Dataset
    val: Dataset


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train: Dataset,
    val: Dataset,
    config: DistillConfig | dict | None = None,
    *,
    test: Dataset | None = None,
    method: str = "standard",
    run_dir: str | Path | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> DistillResult:
    """Distill `teacher` into `student` (trained in place, best val epoch restored).

    Datasets yield (x, y) pairs (or dicts with "x" and "y"); `config` is a
    DistillConfig or a dict of its fields. Writes checkpoints and metrics.jsonl
    into `run_dir` (a temporary folder when None). With `control` on (auto: the student has at
    most half the teacher's parameters) the same student is also trained on the labels alone;
    `metrics["selection"]` says which of the two is kept (by validation) and by how much KD
    differs from the control, and `student` holds the kept one.
    """
    spec = method_spec(method)  # an unknown key lists the valid ones
    if not spec.fits_api:
        fit = ", ".join(k for k in METHODS if METHODS.get(k).fits_api)
        raise KDForgeError(f"method: {method!r} is run by its {spec.workflow!r} workflow (it needs "
                           f"{_needs(spec)}), not by kdforge.distill; write a recipe and use `kdforge run` "
                           f"(kdforge.distill builds {fit})")
    if not isinstance(config, DistillConfig):
        try:
            config = DistillConfig.model_validate(config or {})
        except ValidationError as e:
            raise KDForgeError(format_validation_error(e, "config")) from None
    check_models(teacher if spec.teacher else None, student, train, val)
    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="kdforge-"))
    config = with_recommended_losses(config, method)  # no losses given: what kdforge recommends (config.recommended_losses)
    metrics: dict = {}
    control = None
    if method == "standard" and ctl.control_applies(config.control, teacher, student, train):  # same init as the student
        control, metrics["control_stage"] = ctl.train_control(run_dir, student, train, val, config, seed, quiet=quiet)
    if spec.teacher:
        control_val = metrics["control_stage"]["best_val"]["accuracy"] if control is not None else None
        metrics["teacher_diagnostics"] = ctl.teacher_diagnostics(teacher, train, val, control_val)
    config = resolve_auto(config, teacher, student, train, seed, run_dir / "auto", method=method, quiet=quiet)
    m = spec.build(student, teacher, config, probe_batch(train))
    metrics["stage"] = train_stage("student", run_dir, m, _Splits(train, val), config, seed, quiet=quiet)
    if control is not None:  # kept by validation; test (when given) read for both after the choice
        metrics["selection"] = ctl.choose(metrics["stage"], metrics["control_stage"])
        if test is not None:
            metrics["test_distilled"] = classification_metrics(student, test)
            metrics["test_control"] = classification_metrics(control, test)
            metrics["selection"]["test"] = {
                "kd_minus_control": metrics["test_distilled"]["accuracy"] - metrics["test_control"]["accuracy"]}
        ctl.keep(student, control, metrics["selection"])
    if test is not None:
        metrics["test"] = classification_metrics(student, test)  # the kept student's
    return DistillResult(student=student, metrics=metrics, run_dir=run_dir)

