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
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file
from torch import nn

from kdforge.errors import KDForgeError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(model: nn.Module, copy: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights as CPU copies (tied names kept once, as safetensors' save_model does) and the
    metadata naming each dropped alias: safe to write from another thread while training goes on.
    `copy=False` keeps CPU tensors as they are (for weights that no longer change, e.g. after the last step)."""
    tensors, kept, aliases = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype) if t.device.type != "meta" else name
        if key in kept:
            aliases[name] = kept[key]
            continue
        kept[key] = name
        tensors[name] = t.detach().to("cpu", copy=copy).contiguous()
    return tensors, aliases


def _copy_state(state: Any, copy: bool = True) -> Any:
    """Plain data as is, every tensor copied to the CPU (optimizer moments are updated in place)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=copy)
    if isinstance(state, dict):
        return {k: _copy_state(v, copy) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_copy_state(v, copy) for v in state)
    return state


def _write(dir_: Path, tensors: dict, aliases: dict, state: dict, keep_previous: bool) -> None:
    tmp = dir_.with_name(dir_.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata=aliases or None)
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


def save_checkpoint(dir_: Path, model: nn.Module, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write model + state into `dir_` atomically; the old `dir_` becomes `dir_.prev`."""
    _write(Path(dir_), *snapshot(model), state, keep_previous)


class CheckpointWriter:
    """Writes checkpoints on a worker thread while training goes on. What is written is copied when
    it is submitted (later steps cannot change it). One write runs at a time; a checkpoint submitted
    for a folder that already has one waiting replaces it (only the newest `last` or `best` matters),
    so a fast loop never waits for a slow disk. `wait()` (before anything reads a checkpoint back, at
    the end of a run) re-raises a failed write. A process killed mid-write keeps the previous complete
    checkpoint (each one appears by an atomic rename)."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple] = {}
        self._busy = self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="kdforge-checkpoint", daemon=True)
        self._thread.start()

    def submit(self, dir_: Path, model: nn.Module, state: dict[str, Any], keep_previous: bool = True,
               copy: bool = True) -> None:
        """`copy=False`: the caller changes neither the weights nor the state until `wait()` (the last checkpoint
        of a run: nothing trains after it, so the copy would only cost time and memory)."""
        self.submit_snapshot(dir_, snapshot(model, copy), state, keep_previous, copy)

    def submit_snapshot(self, dir_: Path, weights: tuple[dict, dict], state: dict[str, Any],
                        keep_previous: bool = True, copy: bool = True) -> None:
        """As `submit`, for weights already taken by `snapshot` (e.g. a best epoch kept in memory)."""
        self._raise()
        job = (Path(dir_), *weights, _copy_state(state, copy), keep_previous)
        with self._cond:
            self._pending.pop(job[0], None)  # a newer checkpoint of the same folder supersedes the waiting one
            self._pending[job[0]] = job
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._pending.pop(next(iter(self._pending)))
                self._busy = True
            try:
                _write(*job)
            except BaseException as e:  # noqa: BLE001 (re-raised in the training thread)
                self._error = e
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        with self._cond:
            while self._pending or self._busy:
                self._cond.wait()
        self._raise()

    def close(self) -> None:
        """Finish every pending write and stop the thread (re-raises a failed write)."""
        self.wait()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()


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
