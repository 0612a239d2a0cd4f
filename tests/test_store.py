"""The teacher-output store: written once, read by sample id, fingerprinted, and a run
that reads it never calls the teacher."""
import numpy as np
import pytest
import torch

import kdforge.store.read as store_module
from kdforge.config import DistillConfig
from kdforge.data import load_data
from kdforge.config import DataConfig
from kdforge.errors import KDForgeError
from kdforge.methods.standard import StandardKD
from kdforge.models.small import MLP
from kdforge.train.batching import probe_batch
from kdforge.store import CachedTeacher, TeacherStore, fingerprint, write_store
from kdforge.teacher import Teacher
from kdforge.train.loop import fit
from kdforge.workflows.teacher_store import cache_teacher_for
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"), 0)


def _teacher(seed=0):
    torch.manual_seed(seed)
    return MLP((1, 8, 8), 10, hidden=[64])


def _cfg():
    return DistillConfig.model_validate({"epochs": 2, "batch_size": 64, "lr": 3e-3,
                                         "losses": [{"kind": "kd", "temperature": 2.0, "alpha": 0.7},
                                                    {"kind": "hint", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.1}]})


def test_k_all_cached_training_equals_live_and_never_calls_teacher(digits, tmp_path):
    teacher_model = _teacher()
    fp = fingerprint(teacher_model, digits.train, None, "all", 2.0)
    write_store(tmp_path / "store", Teacher(teacher_model, ["layers.0"]), digits.train, k="all", fp=fp,
                shard_size=300, dtype="float32")
    results = {}
    for mode in ("live", "cached"):
        torch.manual_seed(1)
        student = MLP((1, 8, 8), 10, hidden=[16])
        live = Teacher(_teacher(), ["layers.0"])
        teacher = CachedTeacher(TeacherStore(tmp_path / "store", fp)) if mode == "cached" else live
        m = StandardKD(student, teacher, _cfg(), probe_batch(digits.train))
        res = fit(m, digits.train, digits.val, _cfg(), tmp_path / mode, 0, quiet=True)
        results[mode] = (res.history[-1]["train/kd"], res.best["val/accuracy"], live.calls, teacher.calls)
    live_kd, live_acc, live_calls, _ = results["live"]
    cached_kd, cached_acc, teacher_calls_when_cached, store_reads = results["cached"]
    assert teacher_calls_when_cached == 0 and store_reads > 0 and live_calls > 0
    assert cached_kd == pytest.approx(live_kd, rel=1e-4)
    assert cached_acc == pytest.approx(live_acc, abs=1e-6)


def test_topk_store_is_smaller_and_reconstructs_top_tokens(digits, tmp_path):
    t = Teacher(_teacher())
    write_store(tmp_path / "all", t, digits.train, k="all", shard_size=500)
    write_store(tmp_path / "k3", t, digits.train, k=3, sampling="topk", shard_size=500)
    full, top = TeacherStore(tmp_path / "all"), TeacherStore(tmp_path / "k3")
    assert top.k == 3 and full.dense and not top.dense
    assert (tmp_path / "k3/shard-00000/indices.npy").exists() and len(list((tmp_path / "k3").glob("shard-*"))) == 3
    idx = torch.tensor([5, 700, 1050])
    dense, _ = CachedTeacher(full)(None, idx=idx)
    recon, _ = CachedTeacher(top)(None, idx=idx)
    live, _ = t(digits.train.x[idx])
    assert torch.allclose(dense, live, atol=1e-2)  # float16 storage
    assert torch.equal(recon.argmax(-1), live.argmax(-1))
    p_top = recon.softmax(-1)
    assert torch.allclose(p_top.topk(3).values.sum(-1), torch.ones(3), atol=1e-4)
    target = CachedTeacher(top).target(idx)
    assert target.values.shape == (3, 3) and torch.equal(target.indices[:, 0].long(), live.argmax(-1))
    assert target.values.dtype == torch.float16  # kept as stored until the loss
    assert isinstance(np.load(tmp_path / "k3/shard-00001/values.npy", mmap_mode="r"), np.memmap)


def test_fingerprint_mismatch_names_what_differs(digits, tmp_path):
    teacher_model = _teacher()
    fp = fingerprint(teacher_model, digits.train, None, 4, 1.0)
    write_store(tmp_path / "s", Teacher(teacher_model), digits.train, k=4, fp=fp)
    TeacherStore(tmp_path / "s", fp)  # same -> fine
    other = fingerprint(_teacher(seed=5), digits.val, None, 4, 2.0)
    with pytest.raises(KDForgeError, match=r"teacher \(store .*data \(store .*temperature \(store 1.0, now 2.0\) differ"):
        TeacherStore(tmp_path / "s", other)
    with pytest.raises(KDForgeError, match="not a teacher store"):
        TeacherStore(tmp_path / "nothing")
    with pytest.raises(KDForgeError, match="holds samples 0"):
        CachedTeacher(TeacherStore(tmp_path / "s"))(None, idx=torch.tensor([10_000]))


def test_recipe_run_writes_store_once_and_cache_teacher_cli(tmp_path):
    from kdforge.recipe_file import parse_recipe
    from kdforge.workflows import run_recipe

    raw = {"run_dir": str(tmp_path / "run"), "data": {"name": "digits"},
           "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": 1}}, "student": {"name": "mlp", "hidden": [8]},
           "distill": {"epochs": 1}, "store": {"path": str(tmp_path / "store"), "k": 4}}
    run_recipe(parse_recipe(raw), quiet=True)
    meta = (tmp_path / "store/meta.json").stat().st_mtime_ns
    raw["teacher"]["checkpoint"] = str(tmp_path / "run/teacher/checkpoints/best")
    raw["run_dir"] = str(tmp_path / "run2")
    run_recipe(parse_recipe(raw), quiet=True)  # same teacher weights: the store is reused, not rewritten
    assert (tmp_path / "store/meta.json").stat().st_mtime_ns == meta
    info = cache_teacher_for(parse_recipe({**raw, "store": {"path": str(tmp_path / "s2"), "k": "all"}}))
    assert info["k"] == 10 and info["sampling"] == "dense" and info["samples"] > 1000
    assert info["bytes_per_position"] == pytest.approx(info["bytes"] / info["samples"], rel=0.02) and not info["packed"]
    with pytest.raises(KDForgeError, match="no `store:` section"):
        cache_teacher_for(parse_recipe({k: v for k, v in raw.items() if k != "store"}))


def test_random_store_layout_reads_and_size_estimate(digits, tmp_path, capsys):
    """sampling: random keeps K draws as ids + counts (fp16) + entropy; a batch spanning shards is
    read in one go, fp16 and sparse; the size printed before writing is the size written."""
    t = Teacher(_teacher())
    path = write_store(tmp_path / "r", t, digits.train, k=4, sampling="random", temperature=2.0, shard_size=300, batch_size=64)
    est = int(capsys.readouterr().out.split(" x ")[1].split(" bytes")[0].replace(",", ""))
    store = TeacherStore(path)
    assert store.sampled and store.temperature == 2.0 and est == 4 * (2 + 2) + 2  # fp16 counts + uint16 ids + fp16 entropy
    files = list(path.rglob("*.npy"))
    assert len(files) == 4 * 3 and 0 <= store.nbytes() - store.n * est <= 128 * len(files)  # npy headers only
    idx = torch.tensor([299, 5, 300, 1050, 5])  # three shards, a repeat, out of order
    vals = store.rows("values", idx)
    assert vals.dtype == torch.float16 and torch.equal(vals[1], vals[4])
    assert torch.equal(vals[2], torch.from_numpy(np.load(path / "shard-00001/values.npy")[0]))
    target = CachedTeacher(store).target(idx)
    assert torch.allclose(target.values.float().sum(-1), torch.ones(5))
    live, _ = t(digits.train.x[idx])
    assert torch.allclose(target.entropy.float(), -(live / 2).softmax(-1).mul((live / 2).log_softmax(-1)).sum(-1), atol=1e-2)
    dense, _ = CachedTeacher(store)(None, idx=idx)  # classification path: softmax at the store's T = the draw frequencies
    p = (dense / 2.0).softmax(-1)
    assert torch.allclose(p.gather(-1, target.indices.long()) * (target.values > 0), target.values.float(), atol=1e-4)


def test_priority_store_keeps_k_distinct_ids_with_unbiased_weights(digits, tmp_path):
    """sampling: priority: k distinct ids per sample, weights max(p, τ) (>= the teacher's probability), read as a sampled target."""
    t = Teacher(_teacher())
    store = TeacherStore(write_store(tmp_path / "p", t, digits.train, k=4, sampling="priority", batch_size=64, quiet=True))
    assert store.sampled and store.sampling == "priority"
    idx = torch.arange(20)
    target = CachedTeacher(store).target(idx)
    p = t(digits.train.x[idx])[0].softmax(-1).gather(-1, target.indices.long())
    assert all(len(row.unique()) == 4 for row in target.indices)
    assert torch.all(target.values.float() >= p - 1e-3)
    u8 = TeacherStore(write_store(tmp_path / "u8", t, digits.train, k=4, sampling="priority", weights="uint8", batch_size=64,
                                  quiet=True))  # one-byte weight codes: 3 bytes per id instead of 4
    assert u8.bytes_per_position() < 0.8 * store.bytes_per_position() and u8.rows("values", idx).dtype == torch.uint8
    coded = CachedTeacher(u8).target(idx)
    assert torch.equal(coded.indices, target.indices)  # same draws (same seed, first batch), weights within one code step
    assert torch.allclose(coded.values, target.values.float(), rtol=0.07)


def test_fingerprint_hashing_is_cached_by_file_identity(tmp_path, monkeypatch, tiny_llama_dir):  # noqa: F811
    import kdforge.workflows.teacher_store as store_mod
    from kdforge.recipe_file import parse_recipe

    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 40)
    recipe = parse_recipe({"method": "token_kd", "run_dir": str(tmp_path / "run"),
                           "data": {"name": "text-lm", "path": str(tmp_path / "t.txt"), "tokenizer": str(tiny_llama_dir), "max_length": 16},
                           "teacher": {"name": "hf", "hf": str(tiny_llama_dir), "task": "causal_lm"},
                           "student": {"name": "hf", "hf": str(tiny_llama_dir), "task": "causal_lm", "layers": [1]},
                           "store": {"path": str(tmp_path / "store")}})
    calls = []
    for name in ("hash_module", "hash_dataset"):
        real = getattr(store_mod, name)
        monkeypatch.setattr(store_mod, name, lambda x, _real=real, _n=name: calls.append(_n) or _real(x))
    teacher, data = torch.nn.Linear(2, 2), [{"input_ids": torch.arange(16)}] * 3
    first = store_mod.recipe_fingerprint(recipe, teacher, data)
    assert sorted(calls) == ["hash_dataset", "hash_module"]
    assert store_mod.recipe_fingerprint(recipe, teacher, data) == first and len(calls) == 2  # rerun: nothing re-hashed
    (tmp_path / "t.txt").write_text("a different text entirely, of some length. " * 40)
    store_mod.recipe_fingerprint(recipe, teacher, data)
    assert calls[2:] == ["hash_dataset"]  # the data file changed: only the data is hashed again
    assert first["sampling"] == "priority" and first["k"] == "64"  # the default store is sparse, priority-sampled


def test_store_written_before_sampling_existed_still_opens(digits, tmp_path):
    import json

    teacher_model = _teacher()
    fp = fingerprint(teacher_model, digits.train, None, 4, 1.0)
    write_store(tmp_path / "s", Teacher(teacher_model), digits.train, k=4, sampling="topk", fp=fp)
    meta = json.loads((tmp_path / "s/meta.json").read_text())
    for key in ("sampling", "temperature", "seed"):
        meta.pop(key)
    meta["fingerprint"].pop("sampling")
    (tmp_path / "s/meta.json").write_text(json.dumps(meta))
    store = TeacherStore(tmp_path / "s", fp)
    assert store.sampling == "topk" and not store.sampled
    with pytest.raises(KDForgeError, match=r"sampling \(store topk, now random\)"):
        TeacherStore(tmp_path / "s", {**fp, "sampling": "random"})


def test_standardized_kd_refuses_a_store_that_dropped_classes(digits, tmp_path):
    """The default k (64) keeps all 10 digits classes (a dense store, standardize allowed); a store
    that kept fewer is refused by the method, naming store.k."""
    t = Teacher(_teacher())
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd", "temperature": 2.0, "standardize": True}]})
    dense = CachedTeacher(TeacherStore(write_store(tmp_path / "d", t, digits.train, quiet=True)))
    assert not dense.sparse
    StandardKD(MLP((1, 8, 8), 10, hidden=[8]), dense, cfg, probe_batch(digits.train))
    sparse = CachedTeacher(TeacherStore(write_store(tmp_path / "s", t, digits.train, k=3, quiet=True)))
    with pytest.raises(KDForgeError, match=r"store.k: .* keeps 3 of 10; set store.k: all"):
        StandardKD(MLP((1, 8, 8), 10, hidden=[8]), sparse, cfg, probe_batch(digits.train))


@pytest.mark.parametrize("in_memory", [0, 2**30])
def test_multi_shard_rows_equal_the_written_rows_from_memory_or_per_shard(digits, tmp_path, monkeypatch, in_memory):
    monkeypatch.setattr(store_module, "IN_MEMORY", in_memory)  # 0: routed per memory-mapped shard; 1 GiB: one array
    t = Teacher(_teacher())
    write_store(tmp_path / "s", t, digits.train, k=3, sampling="topk", shard_size=200, dtype="float32")
    store = TeacherStore(tmp_path / "s")
    idx = torch.tensor([5, 799, 0, 201, 200, len(digits.train) - 1, 5])  # several shards, repeats, both ends
    with torch.no_grad():
        logits = t(digits.train.x[idx])[0]
    top = logits.topk(3, -1)
    torch.testing.assert_close(store.rows("values", idx), top.values)
    assert store.rows("indices", idx).dtype == torch.int32
    assert torch.equal(store.rows("indices", idx).long().sort(-1).values, top.indices.sort(-1).values)
    with pytest.raises(KDForgeError, match="holds samples 0"):
        store.rows("values", torch.tensor([0, len(digits.train)]))


def test_a_writer_killed_while_replacing_a_store_leaves_a_whole_store(digits, tmp_path, monkeypatch):
    """SIGKILL while a rewrite replaces the old store (benchmarks/fault_trials.py --kinds cache once found the
    old store half-deleted: meta.json there, shards missing): the old store is renamed aside before it is
    deleted, so store.path holds a whole store (or none); the next write removes what a dead writer left."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    t, path = Teacher(_teacher()), tmp_path / "store"

    def files():
        return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}

    write_store(path, t, digits.train, k=3, sampling="topk", shard_size=100)
    before = files()

    class Killed(BaseException):
        pass

    real = shutil.rmtree

    def killed_midway(p, *args, **kwargs):  # a store folder's deletion: one shard goes, then the process dies
        shards = sorted(Path(p).glob("shard-*")) if Path(p).is_dir() else []
        if shards:
            real(shards[0])
            raise Killed
        return real(p, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(Killed):
        write_store(path, t, digits.train, k=3, sampling="topk", shard_size=100)
    monkeypatch.undo()
    TeacherStore(path)  # every shard there
    assert files() == before

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that was killed: its pid runs no more
    for name in (f"store.tmp{dead.pid}", f"store.old{dead.pid}", f"store.old{os.getpid()}"):
        (tmp_path / name / "shard-00000").mkdir(parents=True, exist_ok=True)
    (tmp_path / "store.other").mkdir()  # not a writer's folder: kept
    write_store(path, t, digits.train, k=3, sampling="topk", shard_size=100)
    assert files() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.other"]
