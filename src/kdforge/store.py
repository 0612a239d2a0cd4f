"""The teacher-output store: the teacher runs once, training reads its outputs from disk.

Layout of a store folder (written to a temporary folder, then renamed):

    meta.json                 fingerprint, sample count, shapes, k, vocabulary size
    shard-00000/values.npy    (n, *positions, k) top-k logits (all logits when k = all)
    shard-00000/indices.npy   (n, *positions, k) their vocabulary ids (absent when k = all)
    shard-00000/feat-NAME.npy (n, *feature shape) chosen teacher features

Rows are keyed by sample id (`batch["idx"]`, the index into the training set):
shard = id // shard_size. Shards are numpy files opened memory-mapped, so every
process or rank reads only the rows it needs. The fingerprint is (teacher
weights, data, tokenizer, k, temperature); opening a store whose fingerprint
differs from the current one is an error naming every field that differs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.models.hf import load_tokenizer
from kdforge.teacher import Teacher
from kdforge.train import distributed as dist
from kdforge.train.batching import collate_indexed

FINGERPRINT_FIELDS = ("teacher", "data", "tokenizer", "k", "temperature")


def _inputs(batch: dict) -> Tensor:
    return batch["x"] if "x" in batch else batch["input_ids"]


def hash_module(model: nn.Module) -> str:
    """sha256 over the parameter and buffer bytes, in name order (16 hex digits)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def hash_dataset(dataset, batch_size: int = 512) -> str:
    """sha256 over every sample's model input, in order (16 hex digits)."""
    h = hashlib.sha256()
    for start in range(0, len(dataset), batch_size):
        batch = collate_indexed([(i, dataset[i]) for i in range(start, min(start + batch_size, len(dataset)))])
        h.update(_inputs(batch).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def hash_tokenizer(tokenizer) -> str:
    if tokenizer is None:
        return "none"
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def fingerprint(teacher_model: nn.Module, dataset, tokenizer, k: int | str, temperature: float) -> dict[str, str]:
    return {"teacher": hash_module(teacher_model), "data": hash_dataset(dataset), "tokenizer": hash_tokenizer(tokenizer),
            "k": str(k), "temperature": repr(float(temperature))}


def compare(stored: dict, current: dict, path: Path) -> None:
    """Every field of `current` must equal the store's (a field left out of `current` is not checked)."""
    diff = [f"{f} (store {stored.get(f)}, now {current.get(f)})" for f in FINGERPRINT_FIELDS
            if f in current and stored.get(f) != current.get(f)]
    if diff:
        raise KDForgeError(f"teacher store {path} does not match this run: {'; '.join(diff)} differ; "
                           "rerun `kdforge cache-teacher` or point store.path elsewhere")


@torch.no_grad()
def write_store(path: str | Path, teacher: Teacher, dataset, *, k: int | str = "all", fp: dict | None = None,
                shard_size: int = 1024, batch_size: int = 32, dtype: str = "float16") -> Path:
    """Run `teacher` once over `dataset` (in index order) and write the store at `path`."""
    path = Path(path)
    if len(dataset) == 0:
        raise KDForgeError("cache-teacher: the training set is empty")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, np_dtype = len(dataset), np.dtype(dtype)
    meta: dict = {"fingerprint": fp or {}, "n": n, "shard_size": shard_size, "dtype": dtype}
    files: dict[str, np.ndarray] = {}
    for start in range(0, n, batch_size):
        batch = collate_indexed([(i, dataset[i]) for i in range(start, min(start + batch_size, n))])
        logits, feats = teacher(_inputs(batch), idx=batch["idx"])  # (B, *P, V), {name: (B, ...)}; a CachedTeacher re-sparsifies a store
        vocab = logits.shape[-1]
        kk = vocab if k == "all" else min(int(k), vocab)
        if kk == vocab:
            rows = {"values": logits.float().cpu().numpy()}
        else:
            vals, ids = logits.float().topk(kk, dim=-1)
            rows = {"values": vals.cpu().numpy(), "indices": ids.int().cpu().numpy()}
        rows.update({f"feat-{name}": f.float().cpu().numpy() for name, f in feats.items()})
        if not files:
            meta.update(vocab=vocab, k=kk, positions=list(logits.shape[1:-1]),
                        features={name: list(f.shape[1:]) for name, f in feats.items()})
        for i in range(len(batch["idx"])):
            sid = start + i
            shard, row = divmod(sid, shard_size)
            for name, arr in rows.items():
                key = f"shard-{shard:05d}/{name}.npy"
                if key not in files:
                    rows_in = min(shard_size, n - shard * shard_size)
                    (tmp / key).parent.mkdir(exist_ok=True)
                    dt = np.int32 if name == "indices" else np_dtype
                    files[key] = np.lib.format.open_memmap(tmp / key, mode="w+", dtype=dt, shape=(rows_in, *arr.shape[1:]))
                files[key][row] = arr[i]
    for arr in files.values():
        arr.flush()
    files.clear()
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


class TeacherStore:
    """Read side: rows by sample id from memory-mapped shards."""

    def __init__(self, path: str | Path, expected: dict | None = None):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise KDForgeError(f"store.path: {self.path} is not a teacher store (no meta.json); run `kdforge cache-teacher RECIPE` first")
        try:
            self.meta = json.loads(meta_file.read_text())
            self.n, self.k, self.vocab = int(self.meta["n"]), int(self.meta["k"]), int(self.meta["vocab"])
            self.shard_size = int(self.meta["shard_size"])
            positions, features = list(self.meta.get("positions", [])), dict(self.meta.get("features", {}))
            fp = dict(self.meta.get("fingerprint", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise KDForgeError(f"teacher store {meta_file} is unreadable ({type(e).__name__}: {str(e)[:100]}); "
                               "rerun `kdforge cache-teacher`") from None
        if expected is not None:
            compare(fp, expected, self.path)
        self._open: dict[str, np.ndarray] = {}
        self._check_shards(positions, features)

    def _check_shards(self, positions: list[int], features: dict[str, list[int]]) -> None:
        """Every shard file present, with the row count and shape meta.json promises (headers only: memory-mapped)."""
        shapes = {"values": [*positions, self.k], **({} if self.dense else {"indices": [*positions, self.k]}),
                  **{f"feat-{name}": list(shape) for name, shape in features.items()}}
        for shard in range((self.n + self.shard_size - 1) // self.shard_size):
            rows = min(self.shard_size, self.n - shard * self.shard_size)
            for name, shape in shapes.items():
                arr = self._arr(shard, name)
                if list(arr.shape) != [rows, *shape]:
                    raise KDForgeError(f"teacher store {self.path}: shard-{shard:05d}/{name}.npy has shape {list(arr.shape)}, "
                                       f"meta.json says {[rows, *shape]}; rerun `kdforge cache-teacher`")

    @property
    def dense(self) -> bool:
        return self.k == self.vocab

    def _arr(self, shard: int, name: str) -> np.ndarray:
        key = f"shard-{shard:05d}/{name}.npy"
        if key not in self._open:
            try:
                self._open[key] = np.load(self.path / key, mmap_mode="r")
            except FileNotFoundError:
                raise KDForgeError(f"teacher store {self.path}: {key} is missing; rerun `kdforge cache-teacher`") from None
            except (ValueError, OSError, EOFError) as e:  # a truncated or overwritten file
                raise KDForgeError(f"teacher store {self.path}: {key} is truncated or unreadable ({str(e).splitlines()[0][:100]}); "
                                   "rerun `kdforge cache-teacher`") from None
        return self._open[key]

    def rows(self, name: str, idx: Tensor) -> Tensor:
        ids = idx.tolist()
        bad = [i for i in ids if not 0 <= i < self.n]
        if bad:
            raise KDForgeError(f"teacher store {self.path} holds samples 0..{self.n - 1}; asked for {bad[:3]} (was it written for this dataset?)")
        out = [self._arr(i // self.shard_size, name)[i % self.shard_size] for i in ids]
        return torch.from_numpy(np.stack(out).astype(np.int64 if name == "indices" else np.float32))

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*.npy"))


class CachedTeacher(Teacher):
    """Same interface as `Teacher`, but reads the store by sample id and never runs a model.

    `teacher(x, idx=batch["idx"])` -> (logits (B, *P, V), {feature: tensor}). With top-k
    stores, dense logits put every token outside the top k far below the k-th
    (probability 0 after softmax: the renormalised top-k distribution); sequence
    methods call `topk(idx)` instead and use the sparse losses.
    """

    cached = True

    def __init__(self, store: TeacherStore):
        self.store = store
        self.model = None
        self.taps = None
        self.calls = 0  # store reads
        self.samples = 0  # teacher forward work only: set by open_or_write when it wrote the store, never by reads
        self.device = torch.device("cpu")

    @property
    def sparse(self) -> bool:
        return not self.store.dense

    @property
    def vocab_size(self) -> int:
        return self.store.vocab

    def topk(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(values (B, *P, k), indices (B, *P, k)); indices are 0..V-1 in order when dense."""
        self.calls += 1
        vals = self.store.rows("values", idx)
        if self.store.dense:
            ids = torch.arange(self.store.vocab).expand_as(vals)
        else:
            ids = self.store.rows("indices", idx)
        return vals.to(self.device), ids.to(self.device)

    def __call__(self, inputs=None, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if idx is None:
            raise KDForgeError("a cached teacher needs the batch's sample ids (idx)")
        self.calls += 1
        vals = self.store.rows("values", idx)
        if not self.store.dense:
            ids = self.store.rows("indices", idx)
            fill = vals.min(-1, keepdim=True).values - 1e4
            vals = fill.expand(*vals.shape[:-1], self.store.vocab).clone().scatter_(-1, ids, vals)
        feats = {name: self.store.rows(f"feat-{name}", idx).to(self.device) for name in self.store.meta.get("features", {})}
        return vals.to(self.device), feats

    def parameters(self):
        return iter(())

    def to(self, device) -> "CachedTeacher":
        self.device = torch.device(device)
        return self


def recipe_fingerprint(recipe, teacher_model: nn.Module, dataset) -> dict[str, str]:
    """The fingerprint a recipe's store must carry: its teacher, training set, tokenizer, k, temperature."""
    tok = None
    if recipe.data.tokenizer:
        tok = load_tokenizer(recipe.data.tokenizer, field="data.tokenizer")
    return fingerprint(teacher_model, dataset, tok, recipe.store.k, recipe.store.temperature)


def preflight(recipe, teacher_model: nn.Module, dataset) -> None:
    """Before a run writes anything: an existing store must be readable and match every fingerprint
    field known now (the teacher's weights too when they come from a checkpoint; a teacher trained
    by the run is checked after training)."""
    path = Path(recipe.store.path)
    if path.exists() and not path.is_dir():
        raise KDForgeError(f"store.path: {path} is a file; the store is a folder")
    if not (path / "meta.json").is_file():
        if path.is_dir() and any(path.iterdir()):  # writing the store would replace this folder
            raise KDForgeError(f"store.path: {path} is a folder with other files, not a teacher store (no meta.json); "
                               "give a new folder or the store written by `kdforge cache-teacher`")
        return  # written by the run
    fp = recipe_fingerprint(recipe, teacher_model, dataset)
    if not recipe.teacher.checkpoint:
        fp.pop("teacher")
    TeacherStore(path, fp)


def open_or_write(recipe, teacher_model: nn.Module, data, *, rewrite: bool = False, batch_size: int = 32) -> CachedTeacher:
    """The recipe's store as a CachedTeacher; written first (teacher run once) when absent or `rewrite`."""
    cfg = recipe.store
    fp = recipe_fingerprint(recipe, teacher_model, data.train)
    path = Path(cfg.path)
    ctx = dist.context()
    written = 0
    if ctx.is_main and (rewrite or not (path / "meta.json").is_file()):  # written once, by rank 0, for every rank
        live = Teacher(teacher_model, cfg.features)
        write_store(path, live, data.train, k=cfg.k, fp=fp,
                    shard_size=cfg.shard_size, batch_size=batch_size, dtype=cfg.dtype)
        written = live.samples
    ctx.barrier()
    cached = CachedTeacher(TeacherStore(path, fp))
    cached.samples = written  # teacher forward work done for this run (0 when the store already existed)
    return cached


__all__ = ["CachedTeacher", "open_or_write", "preflight", "recipe_fingerprint", "TeacherStore", "compare", "fingerprint", "hash_dataset", "hash_module", "write_store"]
