"""The control arm: the same student trained on the labels alone, next to every distillation.

KD exists to beat the student trained without it; a run that only compares with the teacher
cannot say whether it did. With `distill.control` on, a run trains a copy of the student (the
same initialisation, vocabulary trim and seed) on the labelled training samples alone with the
distillation's schedule (stage `control`, cached and resumable like every stage), reports both
students and their difference on validation and test, and keeps the better one **by validation**
(test is read once, for both, after the choice). Compression and export then use the kept one.

`auto` turns it on wherever labels exist and the student is cheap next to the teacher: at most
half the teacher's parameters (one more student training then costs less than the teacher's).

Teacher diagnostics, read before the student stage and never fatal: the teacher's accuracy on
the training split (memorisation) and validation, its calibration (ECE, 15 bins) and confidence
(mean top probability and entropy against log C). Warnings: the teacher is not at least
`TEACHER_MARGIN` better than the control on validation (KD has little to transfer); the teacher
is under-confident (its mean top probability on training data sits `UNDERCONFIDENT_GAP` or more
below its training accuracy: at T >= 1 its soft targets are close to uniform).
"""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from kdforge.data.base import UNLABELLED
from kdforge.models.small import count_parameters
from kdforge.stages import train_supervised
from kdforge.train.evaluate import predict

TEACHER_MARGIN = 0.03  # the teacher should beat the control by 3 accuracy points on validation
UNDERCONFIDENT_GAP = 0.25  # mean top probability this far below the training accuracy: under-confident


def control_applies(setting, teacher: nn.Module | None, student: nn.Module, train: Dataset) -> bool:
    """distill.control: true / false as given; auto: labels exist and the student has at most half the
    teacher's parameters."""
    if setting is not True and setting != "auto":
        return False
    if teacher is None or not isinstance(teacher, nn.Module) or not any(True for _ in _labelled_ids(train)):
        return False
    return setting is True or count_parameters(student) * 2 <= count_parameters(teacher)


def _labels(train: Dataset) -> np.ndarray:
    if hasattr(train, "y"):
        return np.asarray(train.y)
    return np.array([int(s["y"] if isinstance(s, dict) else s[1]) for s in train])


def _labelled_ids(train: Dataset) -> np.ndarray:
    return np.flatnonzero(_labels(train) != UNLABELLED)


def labelled_only(train: Dataset) -> Dataset:
    """The labelled samples of a training split (data.labelled leaves a teacher-only pool beside them)."""
    keep = _labelled_ids(train)
    if len(keep) == len(train):
        return train
    return train.subset(keep) if hasattr(train, "subset") else Subset(train, keep.tolist())


class _Split:
    def __init__(self, train: Dataset, val: Dataset):
        self.train, self.val = train, val


def train_control(run_dir: Path, student: nn.Module, train: Dataset, val: Dataset, cfg, seed: int, *,
                  quiet: bool = False) -> tuple[nn.Module, dict]:
    """A copy of the untrained `student` trained on the labelled part of `train` (stage RUN/control) ->
    (the control, its stage result). A finished stage is reloaded, not retrained."""
    control = copy.deepcopy(student)
    stage = train_supervised("control", run_dir, control, _Split(labelled_only(train), val), cfg, seed, quiet=quiet)
    return control, stage


def choose(kd_stage: dict, control_stage: dict, metric: str = "accuracy") -> dict:
    """Which student the run keeps, by validation only: the distilled one unless the control is strictly better."""
    kd, ctl = kd_stage["best_val"][metric], control_stage["best_val"][metric]
    kept = "control" if ctl > kd else "distilled"
    why = (f"validation {metric}: distilled {kd:.4f}, control (labels alone) {ctl:.4f}; "
           + ("the control is better, so the run keeps it" if kept == "control" else
              "the distilled student is not worse, so the run keeps it"))
    return {"kept": kept, "reason": why, "val": {"distilled": kd, "control": ctl, "kd_minus_control": kd - ctl}}


def keep(student: nn.Module, control: nn.Module, choice: dict) -> None:
    """Load the control's weights into `student` when the choice says so (the student object is what
    compression and export go on with)."""
    if choice["kept"] == "control":
        student.load_state_dict(control.state_dict())


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over confidence bins of |accuracy − mean confidence| weighted by the bin's share. probs (N, C)."""
    conf, pred = probs.max(-1)
    right = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.float().mean().item() * abs(right[sel].mean().item() - conf[sel].mean().item())
    return ece


def teacher_diagnostics(teacher: nn.Module, train: Dataset, val: Dataset, control_val: float | None = None) -> dict:
    """The teacher's fit, calibration and confidence, with the warnings they call for (see the module doc)."""
    out: dict = {}
    for name, part in (("train", labelled_only(train)), ("val", val)):
        logits, y = predict(teacher, part)
        probs = F.softmax(logits.float(), -1)
        out[f"{name}_accuracy"] = (probs.argmax(-1) == y).float().mean().item()
        out[f"{name}_mean_top_prob"] = probs.max(-1).values.mean().item()
        out[f"{name}_entropy"] = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
        out[f"{name}_ece"] = expected_calibration_error(probs, y)
    out["max_entropy"] = math.log(logits.shape[-1])
    notes = []
    if control_val is not None:
        out["control_val_accuracy"] = control_val
        if out["val_accuracy"] < control_val + TEACHER_MARGIN:
            notes.append(f"the teacher is not {TEACHER_MARGIN:.0%} better than the student trained alone on validation "
                         f"({out['val_accuracy']:.4f} vs {control_val:.4f}): KD has little to transfer; train the teacher "
                         "longer or pick a stronger one (the run keeps whichever student validates better)")
    if out["train_mean_top_prob"] <= out["train_accuracy"] - UNDERCONFIDENT_GAP:
        notes.append(f"the teacher is under-confident: right on {out['train_accuracy']:.0%} of the training samples but its "
                     f"mean top probability is {out['train_mean_top_prob']:.2f} (entropy {out['train_entropy']:.2f} of at most "
                     f"{out['max_entropy']:.2f} nats), so its soft targets are nearly flat; train it longer, or use "
                     "standardize: true or a temperature below 1")
    out["warnings"] = notes
    for note in notes:
        warnings.warn(f"teacher diagnostics: {note}", stacklevel=2)
    return out


def report_lines(results: dict) -> list[str]:
    """report.md paragraphs: KD against the control, which student was kept and why, the teacher's diagnostics."""
    lines = []
    if "control" in results and "selection" in results:
        sel, s, c = results["selection"], results["student_distilled"], results["control"]
        test = s["accuracy"] - c["accuracy"]
        lines.append(f"**KD against training alone**: the distilled student scores {s['accuracy']:.4f} on test, the same "
                     f"student trained on the labels alone (control) {c['accuracy']:.4f}: {test:+.4f} "
                     f"(validation {sel['val']['kd_minus_control']:+.4f}). Kept: **{sel['kept']}** — {sel['reason']}.")
    d = results.get("teacher_diagnostics")
    if d:
        lines.append(f"Teacher diagnostics: accuracy {d['train_accuracy']:.4f} on training data, {d['val_accuracy']:.4f} on "
                     f"validation; ECE {d['val_ece']:.4f} (validation); mean top probability {d['train_mean_top_prob']:.3f}, "
                     f"entropy {d['train_entropy']:.3f} of at most {d['max_entropy']:.3f} nats (training data).")
        lines += [f"**Warning**: {w}." for w in d["warnings"]]
    return lines


__all__ = ["TEACHER_MARGIN", "UNDERCONFIDENT_GAP", "choose", "control_applies", "expected_calibration_error", "keep",
           "labelled_only", "report_lines", "teacher_diagnostics", "train_control"]
