"""The text benchmark's teacher: all-MiniLM-L6-v2 + a classification head fine-tuned once per
(dataset, data settings, schedule) and cached outside the repository, so reruns skip it.

The fine-tune is resumable (checkpoints every `CHECKPOINT_EVERY` steps under the cache
folder: a killed run continues where it stopped) and trims each batch's trailing padding
columns before the encoder (right padding is masked, so the logits are the same; a batch of
short queries costs its longest query, not `max_length`). Used by benchmarks/text.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import Tensor, nn

from kdforge.config import TrainConfig
from kdforge.methods.supervised import Supervised
from kdforge.train.checkpoint import load_weights
from kdforge.train.loop import fit

CACHE = Path.home() / ".cache/kdforge"
CHECKPOINT_EVERY = 50


class TrimPadding(nn.Module):
    """(B, L) right-padded ids -> the wrapped classifier on ids[:, :longest real row]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        real = (ids != self.model.pad_id).sum(1).max().clamp_min(1)  # (B,) lengths -> the batch's longest
        return self.model(ids[:, : int(real)])


def cache_dir(dataset: str, data_cfg: dict, train_cfg: dict, root: Path = CACHE) -> Path:
    """One folder per dataset, data settings and teacher schedule (a changed setting fine-tunes anew)."""
    key = hashlib.sha256(json.dumps({"data": data_cfg, "train": train_cfg}, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"text-{dataset}-teacher-{key}"


def fine_tuned_teacher(teacher: nn.Module, data, dataset: str, data_cfg: dict, train_cfg: dict,
                       root: Path = CACHE, *, best_so_far: bool = False) -> dict:
    """Fine-tune `teacher` in place (or load the cached weights) -> {"path", "cached", "stopped_after"}.

    best_so_far: when a fine-tune was stopped before its last epoch, take its best epoch so far
    (on val) instead of continuing; "stopped_after" then says after how many epochs."""
    folder = cache_dir(dataset, data_cfg, train_cfg, root)
    weights = folder / "teacher.safetensors"
    if weights.is_file():
        load_weights(weights, teacher)
        return {"path": weights, "cached": True, "stopped_after": None, "history": history(folder)}
    best = folder / "run/checkpoints/best"
    if best_so_far and best.is_dir():
        load_weights(best, TrimPadding(teacher))
        epochs = [json.loads(line) for line in open(folder / "run/metrics.jsonl") if line.strip()]  # one per finished epoch
        return {"path": best, "cached": True, "stopped_after": len(epochs),
                "epoch_minutes": [e.get("seconds", 0.0) / 60 for e in epochs]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({"dataset": dataset, "data": data_cfg, "train": train_cfg}, indent=1))
    cfg = TrainConfig(**train_cfg, checkpoint_every=CHECKPOINT_EVERY)
    fit(Supervised(TrimPadding(teacher)), data.train, data.val, cfg, folder / "run", 0, desc="teacher")  # best epoch on val
    tmp = weights.with_suffix(".tmp")
    save_model(teacher, str(tmp))
    tmp.replace(weights)
    shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)  # the resumable states are not needed any more
    return {"path": weights, "cached": False, "stopped_after": None, "history": history(folder)}


def history(folder: Path) -> list[dict]:
    """The fine-tune's metrics, one dict per epoch it ran ([] when the folder has none)."""
    metrics = folder / "run/metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


__all__ = ["CACHE", "TrimPadding", "cache_dir", "fine_tuned_teacher", "history"]
