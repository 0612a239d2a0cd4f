"""A recipe's teacher store: what it must carry, checked before a run writes anything, and
written once (by rank 0, the teacher run once) before training reads it.

The store itself (kdforge.store: read, write, packing, fingerprint) knows no recipe, model
loader or training code; this module turns a recipe into what the store needs: the files its
teacher and data come from (so hashes are cached by file identity), k, temperature, sampling,
and the process group that decides who writes. `kdforge cache-teacher` calls cache_teacher_for.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from kdforge.data import load_data
from kdforge.data.paired import pair_tokenizers, paired_lm_data
from kdforge.errors import KDForgeError
from kdforge.models.build import build_model
from kdforge.models.hf import load_tokenizer, resolve
from kdforge.store import CachedTeacher, TeacherStore, write_store
from kdforge.store.fingerprint import cached_hash, file_identity, hash_architecture, hash_dataset, hash_module, hash_tokenizer
from kdforge.teacher import Teacher, TokenLogprobTeacher
from kdforge.train import distributed as dist

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
        live, train = Teacher(teacher_model, cfg.features), data.train
        if hasattr(train, "teacher_view"):  # a cross-tokenizer pair (kdforge.data.paired): over the teacher's own tokens,
            live = TokenLogprobTeacher(teacher_model, store_temperature(recipe), cfg.features)  # with their log-probabilities
            train = train.teacher_view()
        write_store(path, live, train, k=store_k(recipe), sampling=cfg.sampling, temperature=store_temperature(recipe),
                    seed=recipe.seed, fp=fp, shard_size=cfg.shard_size, batch_size=batch_size, dtype=cfg.dtype, weights=cfg.weights)
        written = live.samples
    ctx.barrier()
    cached = CachedTeacher(TeacherStore(path, fp))
    cached.samples = written  # teacher forward work done for this run (0 when the store already existed)
    return cached


def cache_teacher_for(recipe) -> dict:
    """Write `recipe.store` from the recipe's teacher; returns what was written."""
    if recipe.store is None:
        raise KDForgeError("store: the recipe has no `store:` section (store.path, store.k)")
    t = recipe.teacher
    if t.name != "hf" and not t.checkpoint:
        raise KDForgeError("teacher.checkpoint: cache-teacher needs a trained teacher (a checkpoint or an hf model); "
                           "or let `kdforge run` write the store after it trains the teacher")
    if getattr(t, "correct", False):
        raise KDForgeError("teacher.correct: the run fine-tunes the teacher first and writes the store from the corrected "
                           "teacher itself; use `kdforge run` (or point teacher.checkpoint at corrected weights, correct: false)")
    if recipe.distill.lm.cross_tokenizer:  # the text in both tokenizations: the store is written over the teacher's
        data = paired_lm_data(recipe.data, *pair_tokenizers(recipe))
    else:
        data = load_data(recipe.data, recipe.seed)
    teacher = build_model(t, data.input_shape, data.num_classes, "teacher", recipe.seed)
    cached = open_or_write(recipe, teacher, data, rewrite=True)
    return {"path": str(cached.store.path), "samples": cached.store.n, "k": cached.store.k, "sampling": cached.store.sampling,
            "vocab": cached.store.vocab, "bytes": cached.store.nbytes(), "bytes_per_position": cached.store.bytes_per_position(),
            "packed": cached.store.packed}


__all__ = ["DEFAULT_K", "cache_teacher_for", "open_or_write", "preflight", "recipe_fingerprint", "store_k", "store_temperature"]
