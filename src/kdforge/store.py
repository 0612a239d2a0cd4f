"""The teacher-output store: the teacher runs once, training reads its outputs from disk.

Layout of a store folder (written to a temporary folder, then renamed):

    meta.json                 fingerprint, sample count, shapes, k, sampling, vocabulary size
    shard-00000/values.npy    (n, *positions, k) top-k logits | draw counts (random) | all logits (dense)
    shard-00000/indices.npy   (n, *positions, k) their vocabulary ids (uint16 when V <= 65536; absent when dense)
    shard-00000/entropy.npy   (n, *positions) teacher entropy (random only: the KL's constant term)
    shard-00000/feat-NAME.npy (n, *feature shape) chosen teacher features

`sampling: topk` keeps the k largest logits (a biased, renormalised teacher);
`sampling: random` keeps K = k draws from the teacher's softmax at the store's
temperature, as unique ids and counts, which makes forward KL and its gradient
unbiased (kdforge.losses.sparse). k >= V stores every logit (dense).

Rows are keyed by sample id (`batch["idx"]`, the index into the training set):
shard = id // shard_size. Shards are numpy files opened memory-mapped, so every
process or rank reads only the rows it needs; a batch is read with one fancy
index per shard and stays fp16 and sparse until the device (the loss up-casts).
The fingerprint is (teacher weights, data, tokenizer, k, temperature, sampling);
opening a store whose fingerprint differs from the current one is an error naming
every field that differs. Hashing weights and data is cached by file identity
(path, size, mtime) in $KDFORGE_CACHE/fingerprints.json (default ~/.cache/kdforge),
so a rerun does not re-hash a 135M-parameter teacher.
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
from kdforge.losses.sparse import SparseTarget, sample_target, topk_target
from kdforge.models.hf import load_tokenizer, resolve
from kdforge.teacher import Teacher
from kdforge.train import distributed as dist
from kdforge.train.batching import collate_indexed

FINGERPRINT_FIELDS = ("teacher", "data", "tokenizer", "k", "temperature", "sampling")
SAMPLINGS = ("topk", "random")


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


def fingerprint(teacher_model: nn.Module, dataset, tokenizer, k: int | str, temperature: float,
                sampling: str = "topk") -> dict[str, str]:
    return {"teacher": hash_module(teacher_model), "data": hash_dataset(dataset), "tokenizer": hash_tokenizer(tokenizer),
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
            if f in current and stored.get(f) != current.get(f)]
    if diff:
        raise KDForgeError(f"teacher store {path} does not match this run: {'; '.join(diff)} differ; "
                           "rerun `kdforge cache-teacher` or point store.path elsewhere")


def _sparse_rows(logits: Tensor, k: int | str, sampling: str, temperature: float, gen: torch.Generator) -> dict[str, Tensor]:
    """(B, *P, V) teacher logits -> the arrays one batch adds to the store."""
    vocab = logits.shape[-1]
    kk = vocab if k == "all" else min(int(k), vocab)
    if kk == vocab:
        return {"values": logits}
    if sampling == "random":
        target = sample_target(logits, kk, temperature, generator=gen)
        return {"values": target.values * kk, "indices": target.indices, "entropy": target.entropy}  # counts: exact in fp16
    target = topk_target(logits, kk)
    return {"values": target.values, "indices": target.indices}


@torch.no_grad()
def write_store(path: str | Path, teacher: Teacher, dataset, *, k: int | str = 64, sampling: str = "random",
                temperature: float = 1.0, seed: int = 0, fp: dict | None = None, shard_size: int = 1024,
                batch_size: int = 32, dtype: str = "float16", quiet: bool = False) -> Path:
    """Run `teacher` once over `dataset` (in index order) and write the store at `path`.

    k: ids kept per position ("all" or k >= V: dense); sampling: topk | random (K = k draws
    from softmax(logits / temperature), seeded by `seed`). Prints the store's size before writing."""
    path = Path(path)
    if sampling not in SAMPLINGS:
        raise KDForgeError(f"store.sampling: {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    if len(dataset) == 0:
        raise KDForgeError("cache-teacher: the training set is empty")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, np_dtype = len(dataset), np.dtype(dtype)
    gen = torch.Generator().manual_seed(seed)
    meta: dict = {"fingerprint": fp or {}, "n": n, "shard_size": shard_size, "dtype": dtype}
    files: dict[str, np.ndarray] = {}
    for start in range(0, n, batch_size):
        batch = collate_indexed([(i, dataset[i]) for i in range(start, min(start + batch_size, n))])
        logits, feats = teacher(_inputs(batch), idx=batch["idx"])  # (B, *P, V), {name: (B, ...)}; a CachedTeacher re-sparsifies a store
        rows = _sparse_rows(logits.cpu(), k, sampling, temperature, gen)
        rows.update({f"feat-{name}": f.cpu() for name, f in feats.items()})
        if not files:
            vocab, kk = logits.shape[-1], rows["values"].shape[-1]
            meta.update(vocab=vocab, k=kk, sampling=sampling if kk < vocab else "dense", temperature=float(temperature),
                        seed=seed, positions=list(logits.shape[1:-1]), features={name: list(f.shape[1:]) for name, f in feats.items()})
            types = {name: np.dtype(np.uint16 if vocab <= 65536 else np.int32) if name == "indices" else np_dtype for name in rows}
            per_sample = sum(int(np.prod(arr.shape[1:])) * types[name].itemsize for name, arr in rows.items())
            if not quiet:
                print(f"teacher store {path}: {n} samples x {per_sample:,} bytes = {n * per_sample / 1e6:,.3g} MB "
                      f"({'dense' if kk == vocab else f'{sampling} k={kk} of {vocab}'}, {dtype})", flush=True)
        lo, b = 0, len(batch["idx"])
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
            self.sampling = str(self.meta.get("sampling", "topk" if self.k < self.vocab else "dense"))
            self.temperature = float(self.meta.get("temperature", 1.0))
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
                  **({"entropy": positions} if self.sampled else {}),
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

    @property
    def sampled(self) -> bool:
        return self.sampling == "random" and not self.dense

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
        """The rows of sample ids idx (B,), as stored (fp16 stays fp16; uint16 ids become int32):
        one fancy-indexed read per shard the batch touches."""
        ids = idx.detach().cpu().numpy().astype(np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.n)]
        if len(bad):
            raise KDForgeError(f"teacher store {self.path} holds samples 0..{self.n - 1}; asked for {bad[:3].tolist()} (was it written for this dataset?)")
        shards, rows = np.divmod(ids, self.shard_size)
        out = None
        for shard in np.unique(shards):
            sel = shards == shard
            part = self._arr(int(shard), name)[rows[sel]]  # (b, ...) copied out of the memory map
            if out is None:
                out = np.empty((len(ids), *part.shape[1:]), np.int32 if part.dtype == np.uint16 else part.dtype)
            out[sel] = part
        return torch.from_numpy(out)

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
    sampled store softmax at the store's temperature gives the draw frequencies).
    Sequence methods call `target(idx)` instead and keep the teacher sparse into the loss.
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
    def sampled(self) -> bool:
        return self.store.sampled

    @property
    def temperature(self) -> float:
        return self.store.temperature

    @property
    def vocab_size(self) -> int:
        return self.store.vocab

    def _read(self, name: str, idx: Tensor) -> Tensor:
        return self.store.rows(name, idx).to(self.device, non_blocking=True)

    def target(self, idx: Tensor) -> SparseTarget:
        """The sparse teacher (B, *P, k) on the device, as stored: top-k logits, or for a sampled
        store the weights c / K and the per-position entropy. Dense stores give all V ids."""
        self.calls += 1
        vals = self._read("values", idx)
        if self.store.dense:
            return SparseTarget(torch.arange(self.store.vocab, device=self.device).expand(vals.shape), vals)
        ids = self._read("indices", idx)
        if self.store.sampled:
            return SparseTarget(ids, vals.float() / self.store.k, self._read("entropy", idx))
        return SparseTarget(ids, vals)

    def __call__(self, inputs=None, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if idx is None:
            raise KDForgeError("a cached teacher needs the batch's sample ids (idx)")
        if self.store.dense:
            self.calls += 1
            logits = self._read("values", idx).float()
        else:
            logits = self.target(idx).dense(self.store.vocab, self.store.temperature)  # scattered on the device
        feats = {name: self._read(f"feat-{name}", idx).float() for name in self.store.meta.get("features", {})}
        return logits, feats

    def parameters(self):
        return iter(())

    def to(self, device) -> "CachedTeacher":
        self.device = torch.device(device)
        return self


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
        "data": cached_hash("data", data_ident, lambda: hash_dataset(dataset)),
        "tokenizer": cached_hash("tokenizer", tok_ident, lambda: hash_tokenizer(load_tokenizer(d.tokenizer, field="data.tokenizer")))
        if d.tokenizer else "none",
        "k": str(recipe.store.k), "temperature": repr(store_temperature(recipe)), "sampling": recipe.store.sampling,
    }


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
        write_store(path, live, data.train, k=cfg.k, sampling=cfg.sampling, temperature=store_temperature(recipe),
                    seed=recipe.seed, fp=fp, shard_size=cfg.shard_size, batch_size=batch_size, dtype=cfg.dtype)
        written = live.samples
    ctx.barrier()
    cached = CachedTeacher(TeacherStore(path, fp))
    cached.samples = written  # teacher forward work done for this run (0 when the store already existed)
    return cached


__all__ = ["CachedTeacher", "open_or_write", "preflight", "recipe_fingerprint", "TeacherStore", "cached_hash", "compare",
           "file_identity", "fingerprint", "hash_dataset", "hash_module", "store_temperature", "write_store"]
