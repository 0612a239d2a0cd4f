"""The Python API: any nn.Module teacher and student, any torch Dataset."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.config import DistillConfig
from kdforge.errors import KDForgeError
from kdforge.registry import METHODS
from kdforge.stages import train_stage
from kdforge.train.batching import collate_indexed
from kdforge.train.batching import probe_batch
from kdforge.train.evaluate import classification_metrics
from kdforge.tuning import resolve_auto


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
    into `run_dir` (a temporary folder when None).
    """
    from pydantic import ValidationError

    from kdforge.config import format_validation_error

    if not isinstance(config, DistillConfig):
        try:
            config = DistillConfig.model_validate(config or {})
        except ValidationError as e:
            raise KDForgeError(format_validation_error(e, "config")) from None
    _check_inputs(teacher if method != "supervised" else None, student, train, val)
    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="kdforge-"))
    config = resolve_auto(config, teacher, student, train, seed, run_dir / "auto", method=method, quiet=quiet)
    m = METHODS.build(method, student, teacher, config, probe_batch(train))
    stage = train_stage("student", run_dir, m, _Splits(train, val), config, seed, quiet=quiet)
    metrics = {"stage": stage}
    if test is not None:
        metrics["test"] = classification_metrics(student, test)
    return DistillResult(student=student, metrics=metrics, run_dir=run_dir)


def _spread(n: int, k: int = 8) -> list[int]:
    """Up to k indices from the start, the middle and the end of a dataset of n samples."""
    return sorted({*range(min(k, n)), *(i * (n - 1) // (k - 1) for i in range(k))}) if n else []


def _batch(ds: Dataset, name: str) -> dict:
    if not hasattr(ds, "__len__") or len(ds) == 0:
        raise KDForgeError(f"{name}: the dataset is empty (or has no len()); give a map-style Dataset with samples")
    idx = _spread(len(ds))
    try:
        batch = collate_indexed([(i, ds[i]) for i in idx])
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError) as e:
        shapes = sorted({str(tuple(getattr(_x(ds[i]), "shape", ()))) for i in idx[:4]})
        raise KDForgeError(f"{name}: samples {idx[0]}..{idx[-1]} cannot be batched (input shapes {', '.join(shapes)}): "
                           f"{str(e).splitlines()[0][:150]}; every sample must be an (x, y) pair of fixed shape") from None
    if not isinstance(batch, dict) or "x" not in batch or "y" not in batch:
        raise KDForgeError(f"{name}: samples must be (x, y) pairs or dicts with 'x' and 'y'; got keys {sorted(batch)}")
    y = batch["y"]
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dim() != 1:
        what = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise KDForgeError(f"{name}: labels y must be integer class ids (one per sample), got {what}")
    if not isinstance(batch["x"], Tensor):
        raise KDForgeError(f"{name}: inputs x must be tensors, got {type(batch['x']).__name__}")
    return batch


def _x(sample):
    return sample["x"] if isinstance(sample, dict) else sample[0] if isinstance(sample, (tuple, list)) else sample


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, role: str, *, allow_output: bool) -> Tensor:
    """The model's (B, C) logits on x; `allow_output`: an object with .logits (HF ModelOutput) is accepted."""
    was = model.training
    model.eval()
    try:
        out = model(x)
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        raise KDForgeError(f"{role}: cannot run on a batch of train inputs x {tuple(x.shape)}: "
                           f"{str(e).splitlines()[0][:150]}") from None
    finally:
        model.train(was)
    if allow_output and not isinstance(out, Tensor) and isinstance(getattr(out, "logits", None), Tensor):
        out = out.logits
    if not isinstance(out, Tensor):
        got = f"a dict (keys {', '.join(map(str, list(out)[:4]))})" if isinstance(out, dict) else f"a {type(out).__name__}"
        raise KDForgeError(f"{role}: forward must return a logits tensor (B, C), got {got}; wrap the model so it "
                           "returns the logits")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise KDForgeError(f"{role}: forward must return logits of shape (B, C) = ({x.shape[0]}, classes), "
                           f"got {tuple(out.shape)} for x {tuple(x.shape)}")
    return out


def _check_inputs(teacher: nn.Module | None, student: nn.Module, train: Dataset, val: Dataset) -> None:
    """One batch from the start, middle and end of train (and val) through both models, before any training:
    shapes, label types and output types give a one-line KDForgeError naming the culprit."""
    tb, vb = _batch(train, "train"), _batch(val, "val")
    if tuple(tb["x"].shape[1:]) != tuple(vb["x"].shape[1:]):
        raise KDForgeError(f"val: inputs have shape {tuple(vb['x'].shape[1:])}, train inputs {tuple(tb['x'].shape[1:])}")
    s = _logits(student, tb["x"], "student", allow_output=False)
    if teacher is not None:
        _logits(teacher, tb["x"], "teacher", allow_output=True)
    bad = [int(v) for v in torch.cat([tb["y"], vb["y"]]) if not 0 <= int(v) < s.shape[1]]
    if bad:
        raise KDForgeError(f"train/val: labels {sorted(set(bad))[:5]} are outside the student's {s.shape[1]} classes (0..{s.shape[1] - 1})")
