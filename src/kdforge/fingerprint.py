"""Teacher-store fingerprints: what a store was written from, so a stale store is an error.

A fingerprint is (teacher weights, teacher architecture, training data, tokenizer, k,
temperature, sampling), each a short sha256. The architecture (parameter names and
shapes) is known before a teacher trained by the run has its weights, so a store written
by another kind of teacher is refused before anything trains.

Hashing a 135M-parameter teacher or a tokenised corpus takes a while, so `cached_hash`
keeps each hash under the identity of the files it came from (path, size, mtime) in
$KDFORGE_CACHE/fingerprints.json (default ~/.cache/kdforge): a rerun reads it instead of
re-hashing, and touching a file invalidates it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.models.hf import load_tokenizer, resolve
from kdforge.train.batching import collate_indexed

FINGERPRINT_FIELDS = ("teacher", "architecture", "data", "tokenizer", "k", "temperature", "sampling")
LATER_FIELDS = ("architecture",)  # absent from stores written before it existed: not checked there


def model_inputs(batch: dict) -> Tensor:
    return batch["x"] if "x" in batch else batch["input_ids"]


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
        batch = collate_indexed([(i, dataset[i]) for i in range(start, min(start + batch_size, len(dataset)))])
        h.update(model_inputs(batch).contiguous().numpy().tobytes())
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


DEFAULT_K = 64


def store_k(recipe) -> int | str:
    """The ids a recipe's store keeps per position: store.k, or 64 when it is left out."""
    return DEFAULT_K if recipe.store.k is None else recipe.store.k


def store_temperature(recipe) -> float:
    """The temperature a store samples at: store.temperature, else the kd term's, else 1."""
    if recipe.store.temperature is not None:
        return float(recipe.store.temperature)
    kd = [t.temperature for t in recipe.distill.losses if t.kind == "kd" and isinstance(getattr(t, "temperature", None), (int, float))]
    return float(kd[0]) if kd else 1.0


def _model_files(sec) -> list | None:
    """Files a model section's weights come from (checkpoint, hf folder or .gguf); None: trained in the run."""
    if not sec.checkpoint and not (sec.name == "hf" and sec.task == "causal_lm"):  # other teachers may train first
        return None
    paths = [sec.checkpoint] if sec.checkpoint else []
    if sec.name == "hf" and sec.hf:
        folder, gguf = resolve(sec.hf, "hf")
        paths.append(Path(folder) / gguf if gguf else folder)
    ident = file_identity(paths)
    return None if ident is None else [ident, sec.model_dump(mode="json")]


def recipe_fingerprint(recipe, teacher_model: nn.Module, dataset) -> dict[str, str]:
    """The fingerprint a recipe's store must carry: its teacher, training set, tokenizer, k, temperature,
    sampling. Weights, data and tokenizer are hashed once per file identity (see cached_hash)."""
    d = recipe.data
    tok_ident = file_identity([Path(p) / g if g else p for p, g in [resolve(d.tokenizer, "data.tokenizer")]]) if d.tokenizer else None
    data_files = file_identity([p for p in (d.path, d.test_path) if p])
    data_ident = None if not d.path or data_files is None or (d.tokenizer and tok_ident is None) else \
        [data_files, tok_ident, d.model_dump(mode="json"), recipe.seed, len(dataset)]
    return {
        "teacher": cached_hash("teacher", _model_files(recipe.teacher), lambda: hash_module(teacher_model)),
        "architecture": hash_architecture(teacher_model),
        "data": cached_hash("data", data_ident, lambda: hash_dataset(dataset)),
        "tokenizer": cached_hash("tokenizer", tok_ident, lambda: hash_tokenizer(load_tokenizer(d.tokenizer, field="data.tokenizer")))
        if d.tokenizer else "none",
        "k": str(store_k(recipe)), "temperature": repr(store_temperature(recipe)), "sampling": recipe.store.sampling,
    }


__all__ = ["FINGERPRINT_FIELDS", "LATER_FIELDS", "cached_hash", "compare", "file_identity", "fingerprint", "hash_architecture",
           "hash_dataset", "hash_module",
           "hash_tokenizer", "model_inputs", "recipe_fingerprint", "store_k", "store_temperature"]
