"""Checkpoints: model weights in safetensors, training state loaded with
`weights_only=True`, a SHA-256 of each file, and atomic rotation last -> prev.

A checkpoint directory holds `model.safetensors`, `state.pt` and `meta.json`
(checksums). It appears under its final name only once complete; on load a bad
checksum falls back to the previous good checkpoint with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from kdforge.errors import KDForgeError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(dir_: Path, model: nn.Module, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write model + state into `dir_` atomically; the old `dir_` becomes `dir_.prev`."""
    dir_ = Path(dir_)
    tmp = dir_.with_name(dir_.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    meta = {name: _sha256(tmp / name) for name in ("model.safetensors", "state.pt")}
    (tmp / "meta.json").write_text(json.dumps(meta))
    prev = dir_.with_name(dir_.name + ".prev")
    if dir_.exists():
        shutil.rmtree(prev, ignore_errors=True)
        if keep_previous:
            os.replace(dir_, prev)
        else:
            shutil.rmtree(dir_)
    os.replace(tmp, dir_)


def verify(dir_: Path) -> bool:
    try:
        meta = json.loads((Path(dir_) / "meta.json").read_text())
        return all(_sha256(Path(dir_) / name) == digest for name, digest in meta.items())
    except (OSError, ValueError):
        return False


def load_checkpoint(dir_: Path, model: nn.Module) -> dict[str, Any] | None:
    """Load the newest good checkpoint of `dir_` (or its .prev) into `model`; returns its state."""
    dir_ = Path(dir_)
    for cand in (dir_, dir_.with_name(dir_.name + ".prev")):
        if not cand.exists():
            continue
        if not verify(cand):
            warnings.warn(f"checkpoint {cand} is corrupted or incomplete (checksum mismatch); trying the previous one")
            continue
        load_model(model, str(cand / "model.safetensors"))
        try:
            return torch.load(cand / "state.pt", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise KDForgeError(f"refusing to load {cand / 'state.pt'}: it holds more than tensors and plain data ({first})") from None
    return None


def load_weights(path: Path, model: nn.Module) -> None:
    """Weights only, from a .safetensors file or a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    load_model(model, str(path))


def rng_state() -> dict[str, Any]:
    """The random state a resumed run needs: the CPU generator and, when CUDA is present, every GPU's."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(saved: Any) -> None:
    """Inverse of rng_state(); also accepts the CPU-only tensor older checkpoints hold."""
    if isinstance(saved, torch.Tensor):
        torch.set_rng_state(saved)
        return
    torch.set_rng_state(saved["cpu"])
    if saved.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
