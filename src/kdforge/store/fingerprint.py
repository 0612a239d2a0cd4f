"""Teacher-store fingerprints: what a store was written from, so a stale store is an error.

A fingerprint is (teacher weights, teacher architecture, training data, tokenizer, k,
temperature, sampling), each a short sha256. The architecture (parameter names and
shapes) is known before a teacher trained by the run has its weights, so a store written
by another kind of teacher is refused before anything trains.

Hashing a 135M-parameter teacher or a tokenised corpus takes a while, so `cached_hash`
keeps each hash under the identity of the files it came from (path, size, mtime) in
$KDFORGE_CACHE/fingerprints.json (default ~/.cache/kdforge): a rerun reads it instead of
re-hashing, and touching a file invalidates it. What a recipe's store must carry
(recipe_fingerprint: which files the teacher and data come from) is the workflow's
(kdforge.workflows.teacher_store): this module knows no recipe, model loader or training code.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from kdforge.errors import KDForgeError

FINGERPRINT_FIELDS = ("teacher", "architecture", "data", "tokenizer", "k", "temperature", "sampling")
LATER_FIELDS = ("architecture",)  # absent from stores written before it existed: not checked there


def sample_inputs(dataset, idx: Tensor) -> Tensor:
    """The model inputs of samples `idx` (B,) as one batch: x of (x, y) samples, "x" or "input_ids" of dict samples."""
    batch = default_collate([dataset[i] for i in idx.tolist()])
    return (batch["x"] if "x" in batch else batch["input_ids"]) if isinstance(batch, dict) else batch[0]


def hash_module(model: nn.Module) -> str:
    """sha256 over the parameter and buffer bytes, in name order (16 hex digits)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def hash_architecture(model: nn.Module) -> str:
    """sha256 over the model's class and its parameter and buffer names and shapes (16 hex digits; not dtypes,
    which a device may change: the weights' hash covers them)."""
    spec = [type(model).__name__] + [[name, list(t.shape)] for name, t in sorted(model.state_dict().items())]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def hash_dataset(dataset, batch_size: int = 512) -> str:
    """sha256 over every sample's model input, in order (16 hex digits)."""
    h = hashlib.sha256()
    for start in range(0, len(dataset), batch_size):
        h.update(sample_inputs(dataset, torch.arange(start, min(start + batch_size, len(dataset)))).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def hash_tokenizer(tokenizer) -> str:
    if tokenizer is None:
        return "none"
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def fingerprint(teacher_model: nn.Module, dataset, tokenizer, k: int | str, temperature: float,
                sampling: str = "topk") -> dict[str, str]:
    return {"teacher": hash_module(teacher_model), "architecture": hash_architecture(teacher_model), "data": hash_dataset(dataset), "tokenizer": hash_tokenizer(tokenizer),
            "k": str(k), "temperature": repr(float(temperature)), "sampling": sampling}


def file_identity(paths: list[str | Path]) -> list | None:
    """[(path, size, mtime_ns), ...] of every file under `paths`; None when one is missing."""
    out = []
    for p in paths:
        p = Path(p).expanduser().resolve()
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if not f.is_file():
                return None
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _cache_file() -> Path:
    return Path(os.environ.get("KDFORGE_CACHE", "~/.cache/kdforge")).expanduser() / "fingerprints.json"


def cached_hash(kind: str, identity: list | None, compute) -> str:
    """compute() once per file identity: the result is kept under a key of (kind, identity);
    no identity (a model trained in this run, a built-in dataset) always computes."""
    if identity is None:
        return compute()
    key = hashlib.sha256(json.dumps([kind, identity]).encode()).hexdigest()[:32]
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    value = compute()
    try:  # a cache that cannot be written only costs a re-hash next time
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            cache = json.loads(path.read_text())  # another run may have added entries meanwhile
        except (OSError, ValueError):
            cache = {}
        cache[key] = value
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass
    return value


def compare(stored: dict, current: dict, path: Path) -> None:
    """Every field of `current` must equal the store's (a field left out of `current` is not checked;
    a store written before `sampling` existed is a top-k store)."""
    stored = {"sampling": "topk", **stored}
    diff = [f"{f} (store {stored.get(f)}, now {current.get(f)})" for f in FINGERPRINT_FIELDS
            if f in current and (f in stored or f not in LATER_FIELDS) and stored.get(f) != current.get(f)]
    if diff:
        who = "was written by another teacher" if any(d.startswith(("teacher ", "architecture ")) for d in diff) \
            else "does not match this run"
        raise KDForgeError(f"teacher store {path} {who}: {'; '.join(diff)} differ; "
                           "rerun `kdforge cache-teacher` or point store.path elsewhere")


__all__ = ["FINGERPRINT_FIELDS", "LATER_FIELDS", "cached_hash", "compare", "file_identity", "fingerprint", "hash_architecture",
           "hash_dataset", "hash_module", "hash_tokenizer", "sample_inputs"]
