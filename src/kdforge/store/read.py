"""The read side of the teacher-output store: the teacher runs once, training reads its outputs from disk.

Layout of a store folder (written to a temporary folder, then renamed; an old store is renamed
aside before it is deleted, so a writer killed at any moment leaves the old store or the new one
whole, or none - never a partial one):

    meta.json                 fingerprint, sample count, shapes, k, sampling, vocabulary size
    shard-00000/values.npy    (n, *positions, k) top-k logits | weights (sampled; fp16 or uint8 codes) | all logits (dense)
    shard-00000/indices.npy   (n, *positions, k) their vocabulary ids (uint16 when V <= 65536; absent when dense)
    shard-00000/entropy.npy   (n, *positions) teacher entropy (sampled stores: the KL's constant term)
    shard-00000/packed.npy    `weights: packed` (random draws): every sample's packed row (kdforge.store.packing), bytes;
    shard-00000/offsets.npy   (rows + 1,) where each sample's row starts in packed.npy (instead of values + indices)
    shard-00000/feat-NAME.npy (n, *feature shape) chosen teacher features

`sampling: topk` keeps the k largest logits (a biased, renormalised teacher);
`sampling: random` keeps K = k draws from the teacher's softmax at the store's
temperature, as unique ids and weights c / K, which makes forward KL and its gradient
unbiased (kdforge.losses.sparse); `hybrid` keeps the k/2 most likely ids exactly and
k/2 draws from the rest (unbiased too, with less sampling noise); `ht` weights the random draws
p / π (Horvitz–Thompson) and `priority` keeps k distinct ids by priority sampling, weights
max(p, τ) (unbiased, exact where p ≥ τ). k >= V stores every logit (dense).

Rows are keyed by sample id (`batch["idx"]`, the index into the training set):
shard = id // shard_size. Shards are numpy files opened memory-mapped, so every
process or rank reads only the rows it needs; a small part (up to IN_MEMORY bytes) is read
into memory once and a batch is one index_select there, a large one is one fancy index per
shard. Rows stay fp16 and sparse until the device (the loss up-casts).
The fingerprint is (teacher weights, data, tokenizer, k, temperature, sampling);
opening a store whose fingerprint differs from the current one is an error naming
every field that differs (kdforge.store.fingerprint; hashes cached by file identity).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdforge.errors import KDForgeError
from kdforge.losses.sparse import ESTIMATORS, SparseTarget, decode_weights
from kdforge.store.fingerprint import compare
from kdforge.store.packing import unpack_rows
from kdforge.teacher import Teacher

IN_MEMORY = 256 * 2**20  # a store part up to this size is read into memory once, then indexed there


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
            self.sampling = str(self.meta.get("sampling", "topk" if self.k < self.vocab else "dense"))
            self.temperature = float(self.meta.get("temperature", 1.0))
            positions, features = list(self.meta.get("positions", [])), dict(self.meta.get("features", {}))
            fp = dict(self.meta.get("fingerprint", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise KDForgeError(f"teacher store {meta_file} is unreadable ({type(e).__name__}: {str(e)[:100]}); "
                               "rerun `kdforge cache-teacher`") from None
        if expected is not None:
            compare(fp, expected, self.path)
        self._open: dict[str, Tensor | np.ndarray | None] = {}
        self.packed = self.meta.get("values") == "packed-draws"
        self.positions = int(np.prod(positions or [1]))
        self._check_shards(positions, features)

    def _check_shards(self, positions: list[int], features: dict[str, list[int]]) -> None:
        """Every shard file present, with the row count and shape meta.json promises (headers only: memory-mapped)."""
        shapes = {**({} if self.packed else {"values": [*positions, self.k]}),
                  **({} if self.dense or self.packed else {"indices": [*positions, self.k]}),
                  **({"entropy": positions} if self.sampled else {}),
                  **{f"feat-{name}": list(shape) for name, shape in features.items()}}
        for shard in range((self.n + self.shard_size - 1) // self.shard_size):
            rows = min(self.shard_size, self.n - shard * self.shard_size)
            for name, shape in shapes.items():
                arr = self._arr(shard, name)
                if list(arr.shape) != [rows, *shape]:
                    raise KDForgeError(f"teacher store {self.path}: shard-{shard:05d}/{name}.npy has shape {list(arr.shape)}, "
                                       f"meta.json says {[rows, *shape]}; rerun `kdforge cache-teacher`")
            if self.packed and (self._arr(shard, "offsets").shape != (rows + 1,) or self._arr(shard, "offsets")[-1] != len(self._arr(shard, "packed"))):
                raise KDForgeError(f"teacher store {self.path}: shard-{shard:05d}/offsets.npy does not match packed.npy "
                                   f"({rows} rows); rerun `kdforge cache-teacher`")

    @property
    def dense(self) -> bool:
        return self.k == self.vocab

    @property
    def sampled(self) -> bool:
        return self.sampling in ESTIMATORS and not self.dense

    def _arr(self, shard: int, name: str) -> np.ndarray:
        key = f"shard-{shard:05d}/{name}.npy"
        if key not in self._open:
            try:
                self._open[key] = np.asarray(np.load(self.path / key, mmap_mode="r"))  # a plain view of the map: cheaper to index
            except FileNotFoundError:
                raise KDForgeError(f"teacher store {self.path}: {key} is missing; rerun `kdforge cache-teacher`") from None
            except (ValueError, OSError, EOFError) as e:  # a truncated or overwritten file
                raise KDForgeError(f"teacher store {self.path}: {key} is truncated or unreadable ({str(e).splitlines()[0][:100]}); "
                                   "rerun `kdforge cache-teacher`") from None
        return self._open[key]

    def _whole(self, name: str) -> Tensor | np.ndarray | None:
        """Every row of `name` at once: a small part (IN_MEMORY bytes) as one in-memory tensor (uint16 ids
        widened to int32 once), a large single shard as its memory map, a large multi-shard part None."""
        key = f"whole/{name}"
        if key not in self._open:
            shards = [self._arr(i, name) for i in range((self.n + self.shard_size - 1) // self.shard_size)]
            if sum(a.nbytes for a in shards) <= IN_MEMORY:
                whole = np.concatenate(shards)
                self._open[key] = torch.from_numpy(whole.astype(np.int32) if whole.dtype == np.uint16 else whole)
            else:
                self._open[key] = shards[0] if len(shards) == 1 else None
        return self._open[key]

    def _sample_ids(self, idx: Tensor) -> np.ndarray:
        """idx (B,) as int64 numpy, each checked to be a stored sample (one reduction: a negative id reads as a huge one)."""
        ids = idx.numpy(force=True).astype(np.int64, copy=False).reshape(-1)
        if len(ids) and ids.view(np.uint64).max() >= self.n:
            raise self._out_of_range(ids)
        return ids

    def _out_of_range(self, ids: np.ndarray) -> KDForgeError:
        bad = ids[(ids < 0) | (ids >= self.n)]
        return KDForgeError(f"teacher store {self.path} holds samples 0..{self.n - 1}; asked for {bad[:3].tolist()} "
                            "(was it written for this dataset?)")

    def rows(self, name: str, idx: Tensor) -> Tensor:
        """The rows of sample ids idx (B,), as stored (fp16 stays fp16; uint16 ids become int32): one
        index_select from memory, or one fancy-indexed read per memory-mapped shard the batch touches."""
        whole = self._whole(name)
        if isinstance(whole, Tensor):  # in memory: one call per read (a small job pays for every call)
            try:
                return whole.index_select(0, idx if idx.device.type == "cpu" else idx.cpu())
            except IndexError:
                raise self._out_of_range(idx.numpy(force=True).reshape(-1)) from None
        ids = self._sample_ids(idx)
        if whole is not None:  # one memory-mapped shard: one fancy-indexed read, nothing to route
            part = whole[ids]
            return torch.from_numpy(part.astype(np.int32) if part.dtype == np.uint16 else part)
        shards, rows = np.divmod(ids, self.shard_size)
        out = None
        for shard in np.unique(shards):
            sel = shards == shard
            part = self._arr(int(shard), name)[rows[sel]]  # (b, ...) copied out of the memory map
            if out is None:
                out = np.empty((len(ids), *part.shape[1:]), np.int32 if part.dtype == np.uint16 else part.dtype)
            out[sel] = part
        return torch.from_numpy(out)

    def draws(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """A packed store's rows of sample ids idx (B,): (ids, weights c / K), each (B, *positions, k) with k the
        batch's most unique ids at a position (padding slots weigh 0)."""
        ids = self._sample_ids(idx)
        blobs = []
        for shard, row in zip(*np.divmod(ids, self.shard_size)):
            off = self._arr(int(shard), "offsets")
            blobs.append(self._arr(int(shard), "packed")[off[row] : off[row + 1]])
        out_ids, counts = unpack_rows(blobs, self.positions, self.vocab, self.k, int(self.meta["low_bits"]))
        shape = (len(ids), *self.meta.get("positions", []), out_ids.shape[-1])
        return torch.from_numpy(out_ids).view(shape), torch.from_numpy(counts).float().div_(self.k).view(shape)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*.npy"))

    def bytes_per_position(self) -> float:
        """Store bytes per sample position (per token for a language model), logits only."""
        positions = int(np.prod(self.meta.get("positions") or [1]))
        files = [f for f in self.path.rglob("*.npy") if not f.name.startswith("feat-")]
        return sum(f.stat().st_size for f in files) / (self.n * positions)


class CachedTeacher(Teacher):
    """Same interface as `Teacher`, but reads the store by sample id and never runs a model.

    `teacher(x, idx=batch["idx"])` -> (logits (B, *P, V), {feature: tensor}): the stored
    rows move to the device as stored (fp16, sparse) and become dense there, with every
    token off the stored support far below the rest (probability 0 after softmax; for a
    sampled store softmax at the store's temperature gives the weights, renormalised).
    Sequence methods call `target(idx)` instead and keep the teacher sparse into the loss.
    """

    cached = True

    def __init__(self, store: TeacherStore):
        self.store = store
        self.model = None
        self.taps = None
        self.calls = 0  # store reads
        self.samples = 0  # teacher forward work only: set by the workflow when it wrote the store, never by reads
        self.device = torch.device("cpu")
        self.features = tuple(store.meta.get("features", {}))  # the stored feature names

    @property
    def sparse(self) -> bool:
        return not self.store.dense

    @property
    def sampled(self) -> bool:
        return self.store.sampled

    @property
    def temperature(self) -> float:
        return self.store.temperature

    @property
    def vocab_size(self) -> int:
        return self.store.vocab

    def _read(self, name: str, idx: Tensor) -> Tensor:
        return self._on_device(self.store.rows(name, idx))

    def _on_device(self, rows: Tensor) -> Tensor:
        return rows if self.device.type == "cpu" else rows.to(self.device, non_blocking=True)

    def target(self, idx: Tensor) -> SparseTarget:
        """The sparse teacher (B, *P, k) on the device, as stored: top-k logits, or for a sampled
        store the unbiased weights (decoded from uint8 codes if so stored) and the per-position entropy.
        Dense stores give all V ids."""
        self.calls += 1
        if self.store.packed:
            ids, w = self.store.draws(idx)
            return SparseTarget(self._on_device(ids), self._on_device(w), self._read("entropy", idx))
        vals = self._read("values", idx)
        if self.store.dense:
            return SparseTarget(torch.arange(self.store.vocab, device=self.device).expand(vals.shape), vals)
        ids = self._read("indices", idx)
        if self.store.sampled:  # stores written before "values": "weights" hold draw counts
            kind = self.store.meta.get("values")
            w = decode_weights(vals) if kind == "weight-codes" else vals.float() if kind == "weights" else vals.float() / self.store.k
            return SparseTarget(ids, w, self._read("entropy", idx))
        return SparseTarget(ids, vals)

    def __call__(self, inputs=None, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits, _, feats = self.read(idx)
        return logits, feats

    def read(self, idx: Tensor | None) -> tuple[Tensor, SparseTarget | None, dict[str, Tensor]]:
        """(dense logits (B, *P, V), the sparse target as stored (None for a dense store), features):
        one read, for methods whose KD term takes ids + values and whose other terms need every logit."""
        if idx is None:
            raise KDForgeError("a cached teacher needs the batch's sample ids (idx)")
        target = None
        if self.store.dense:
            self.calls += 1
            logits = self._read("values", idx)
            logits = logits if logits.dtype == torch.float32 else logits.float()
        else:
            target = self.target(idx)
            logits = target.dense(self.store.vocab, self.store.temperature)  # scattered on the device
        feats = {name: self._read(f"feat-{name}", idx).float() for name in self.features}
        return logits, target, feats

    def parameters(self):
        return iter(())

    def to(self, device) -> "CachedTeacher":
        self.device = torch.device(device)
        return self


__all__ = ["IN_MEMORY", "CachedTeacher", "TeacherStore"]
