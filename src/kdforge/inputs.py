"""Before any training: the teacher and the student run on batches of the data they will see.

A wrong sample shape, float labels, a model that crashes on the inputs or returns a
dict / tuple instead of logits becomes a one-line KDForgeError naming the culprit,
instead of a traceback from deep inside the first training step.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.errors import KDForgeError
from kdforge.train.batching import collate_indexed

IGNORE_INDEX = -100  # torch's cross-entropy ignore_index: a training sample without a label


def spread(n: int, k: int = 8) -> list[int]:
    """Up to k indices from the start, the middle and the end of a dataset of n samples."""
    return sorted({*range(min(k, n)), *(i * (n - 1) // (k - 1) for i in range(k))}) if n else []


def train_batch(ds: Dataset, name: str) -> dict:
    if not hasattr(ds, "__len__") or len(ds) == 0:
        raise KDForgeError(f"{name}: the dataset is empty (or has no len()); give a map-style Dataset with samples")
    idx = spread(len(ds))
    try:
        batch = collate_indexed([(i, ds[i]) for i in idx])
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError) as e:
        shapes = {i: tuple(getattr(_x(ds[i]), "shape", ())) for i in idx}
        odd = next((i for i in idx if shapes[i] != shapes[idx[0]]), None)
        which = f"sample {odd} has input shape {shapes[odd]}, sample {idx[0]} {shapes[idx[0]]}" if odd is not None \
            else str(e).splitlines()[0][:150]
        raise KDForgeError(f"{name}: samples cannot be batched: {which}; every sample must be an (x, y) pair "
                           "of one fixed shape") from None
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
def model_logits(model: nn.Module, x: Tensor, role: str, *, allow_output: bool) -> Tensor:
    """The model's (B, C) logits on x; `allow_output`: an object with .logits (HF ModelOutput) is accepted."""
    was = model.training
    model.eval()
    try:
        out = model(x)
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        raise KDForgeError(f"{role}: cannot run on a batch of train inputs x {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}: "
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


def check_models(teacher: nn.Module | None, student: nn.Module, train: Dataset, val: Dataset) -> None:
    """One batch from the start, middle and end of train (and val) through both models, before any training:
    shapes, label types and output types give a one-line KDForgeError naming the culprit.
    Datasets of other dicts (language-model windows: input_ids, loss_mask) are left to their method."""
    if hasattr(train, "__len__") and len(train) and isinstance(train[0], dict) and "x" not in train[0]:
        return
    tb, vb = train_batch(train, "train"), train_batch(val, "val")
    if tuple(tb["x"].shape[1:]) != tuple(vb["x"].shape[1:]):
        raise KDForgeError(f"val: inputs have shape {tuple(vb['x'].shape[1:])}, train inputs {tuple(tb['x'].shape[1:])}")
    s = model_logits(student, tb["x"], "student", allow_output=False)
    if teacher is not None:
        t = model_logits(teacher, tb["x"], "teacher", allow_output=True)
        if t.shape[1] != s.shape[1]:
            raise KDForgeError(f"teacher predicts {t.shape[1]} classes but student predicts {s.shape[1]}; "
                               "they must match (set student num_classes to the teacher's)")
    labels = torch.cat([tb["y"], vb["y"]])
    bad = [int(v) for v in labels[labels != IGNORE_INDEX] if not 0 <= int(v) < s.shape[1]]
    if bad:
        raise KDForgeError(f"train/val: labels {sorted(set(bad))[:5]} are outside the student's {s.shape[1]} classes (0..{s.shape[1] - 1})")
