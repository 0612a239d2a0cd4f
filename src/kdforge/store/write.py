"""The write side of the teacher-output store: run the teacher once, keep its outputs (layout: kdforge.store.read)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdforge.errors import KDForgeError
from kdforge.losses.sparse import ESTIMATORS, encode_weights, sample_target, topk_target
from kdforge.store.fingerprint import sample_inputs
from kdforge.store.packing import low_bits_for, pack_draws
from kdforge.teacher import Teacher

SAMPLINGS = ("topk", *ESTIMATORS)


def _sparse_rows(logits: Tensor, k: int | str, sampling: str, temperature: float, gen: torch.Generator,
                 weights: str = "float16", power: float = 1.0, normalise: bool = False) -> dict[str, Tensor]:
    """(B, *P, V) teacher logits -> the arrays one batch adds to the store (sampled weights as uint8 codes
    when weights = "uint8")."""
    vocab = logits.shape[-1]
    kk = vocab if k == "all" else min(int(k), vocab)
    if kk == vocab:
        return {"values": logits}
    if sampling in ESTIMATORS:
        target = sample_target(logits, kk, temperature, generator=gen, estimator=sampling, power=power, normalise=normalise)
        if weights == "packed":  # random draws: the ids with their counts c = w·K, packed per sample at the end
            return {"entropy": target.entropy, "draws": (target.indices, (target.values * kk).round().long())}
        values = encode_weights(target.values, gen) if weights == "uint8" else target.values
        return {"values": values, "indices": target.indices, "entropy": target.entropy}
    target = topk_target(logits, kk)
    return {"values": target.values, "indices": target.indices}


@torch.no_grad()
def write_store(path: str | Path, teacher: Teacher, dataset, *, k: int | str = 64, sampling: str = "priority",
                temperature: float = 1.0, seed: int = 0, fp: dict | None = None, shard_size: int = 1024,
                batch_size: int = 32, dtype: str = "float16", weights: str = "float16", power: float = 1.0,
                normalise: bool = False, quiet: bool = False) -> Path:
    """Run `teacher` once over `dataset` (in index order) and write the store at `path`.

    k: ids kept per position ("all" or k >= V: dense); sampling: topk | random | hybrid | ht | priority (K = k draws
    from softmax(logits / temperature), seeded by `seed`); weights: float16, or uint8 for a sampled store's
    weights (log-grid codes, stochastically rounded: still unbiased, 1 byte instead of 2), or packed for a random
    store (ids and draw counts packed losslessly, about 2 bytes per id: kdforge.store.packing); power < 1:
    priority sampling by sizes p^power (a flatter proposal, importance-weighted).
    Prints the store's size before writing."""
    path = Path(path)
    if sampling not in SAMPLINGS:
        raise KDForgeError(f"store.sampling: {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    if len(dataset) == 0:
        raise KDForgeError("cache-teacher: the training set is empty")
    if weights == "packed" and sampling != "random":
        raise KDForgeError(f"store.weights: packed keeps draw counts, so it needs store.sampling: random (got {sampling})")
    _remove_stale(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, np_dtype = len(dataset), np.dtype(dtype)
    gen = torch.Generator().manual_seed(seed)
    meta: dict = {"fingerprint": fp or {}, "n": n, "shard_size": shard_size, "dtype": dtype}
    files: dict[str, np.ndarray] = {}
    blobs: dict[int, list[np.ndarray]] = {}  # a packed store's rows, per shard
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))  # (B,) sample ids
        logits, feats = teacher(sample_inputs(dataset, idx), idx=idx)  # (B, *P, V), {name: (B, ...)}; a CachedTeacher re-sparsifies a store
        rows = _sparse_rows(logits.cpu(), k, sampling, temperature, gen, weights, power, normalise)
        rows.update({f"feat-{name}": f.cpu() for name, f in feats.items()})
        draws = rows.pop("draws", None)  # a packed store's (ids, counts)
        if start == 0:
            vocab, kk = logits.shape[-1], (rows["values"] if draws is None else draws[0]).shape[-1]
            meta.update(vocab=vocab, k=kk, sampling=sampling if kk < vocab else "dense", temperature=float(temperature), values="weights",
                        seed=seed, power=power, normalise=normalise, positions=list(logits.shape[1:-1]), features={name: list(f.shape[1:]) for name, f in feats.items()})
            if "values" in rows and rows["values"].dtype == torch.uint8:
                meta["values"] = "weight-codes"
            if draws is not None:
                meta.update(values="packed-draws", low_bits=low_bits_for(vocab, (draws[1] > 0).sum(-1).float().mean().item()))
        packed = [pack_draws(ids.numpy(), c.numpy(), meta["vocab"], meta["k"], meta["low_bits"]) for ids, c in zip(*draws)] \
            if draws is not None else []  # one packed row per sample
        if start == 0:
            types = {name: np.dtype(np.uint16 if vocab <= 65536 else np.int32) if name == "indices"
                     else np.dtype(np.uint8) if rows[name].dtype == torch.uint8 else np_dtype for name in rows}
            per_sample = sum(int(np.prod(arr.shape[1:])) * types[name].itemsize for name, arr in rows.items())
            if packed:  # the first batch's packed rows, as the estimate (+ 8 bytes of offset)
                per_sample += 8 + sum(map(len, packed)) / len(packed)
            if not quiet:
                print(f"teacher store {path}: {n} samples x {per_sample:,.0f} bytes = {n * per_sample / 1e6:,.2f} MB "
                      f"({'dense' if kk == vocab else f'{sampling} k={kk} of {vocab}'}, {dtype if draws is None else 'packed'})", flush=True)
        for i, row in enumerate(packed):
            blobs.setdefault((start + i) // shard_size, []).append(row)
        lo, b = 0, len(idx)
        while lo < b:  # the batch's rows, one contiguous slice per shard it touches
            shard, row = divmod(start + lo, shard_size)
            m = min(b - lo, shard_size - row)
            for name, arr in rows.items():
                key = f"shard-{shard:05d}/{name}.npy"
                if key not in files:
                    (tmp / key).parent.mkdir(exist_ok=True)
                    shape = (min(shard_size, n - shard * shard_size), *arr.shape[1:])
                    files[key] = np.lib.format.open_memmap(tmp / key, mode="w+", dtype=types[name], shape=shape)
                files[key][row : row + m] = arr[lo : lo + m].float().numpy().astype(types[name]) \
                    if arr.is_floating_point() else arr[lo : lo + m].numpy().astype(types[name])
            lo += m
    for arr in files.values():
        arr.flush()
    files.clear()
    for shard, parts in blobs.items():
        np.save(tmp / f"shard-{shard:05d}/packed.npy", np.concatenate(parts))
        np.save(tmp / f"shard-{shard:05d}/offsets.npy", np.cumsum([0, *map(len, parts)], dtype=np.int64))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _replace(tmp, path)
    return path


def _replace(tmp: Path, path: Path) -> None:
    """Put the finished folder `tmp` at `path`. An old store there is renamed aside first and deleted
    after, so a process killed at any moment leaves at `path` the old store whole, the new one whole,
    or nothing (between the two renames) - never a half-deleted store a later run would open."""
    old = path.with_name(path.name + f".old{os.getpid()}")
    if path.exists():
        _remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_stale(path: Path) -> None:
    """The temporary (.tmpPID) and set-aside (.oldPID) folders of `path` left by a writer that was killed:
    those whose process no longer runs (a live writer's are left alone)."""
    if not path.parent.is_dir():
        return
    pattern = re.compile(re.escape(path.name) + r"\.(?:tmp|old)(\d+)")
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _remove(p)


__all__ = ["SAMPLINGS", "write_store"]
