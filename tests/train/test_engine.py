"""The engine: gradient sync by DDP / FSDP2 (not by hand), autocast precision, at most one
host sync per optimizer step, max_steps / eval_every, trackers, and the DataLoader's batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.methods.supervised import Supervised
from kdforge.models import MLP
from kdforge.train.batching import collate_indexed, epoch_batches
from kdforge.train.data import EpochBatchSampler, fetch_batch
from kdforge.train.engine import Engine, resolve_parallel, resolve_precision, shard_units
from kdforge.train.evaluate import classification_metrics
from kdforge.train.loop import fit
from kdforge.train.trackers import NoTracker, choose, open_tracker

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(parallel: str, out: Path, crash_at: int = 0) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(WORKER),
                        parallel, str(out), str(crash_at)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "KDFORGE_DEVICE": "cpu"})
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((out / f"rank{k}.json").read_text()) for k in range(2)]


def _close(a: dict, b: dict, atol: float) -> bool:
    return all(torch.allclose(torch.tensor(a[k]), torch.tensor(b[k]), atol=atol) for k in a)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    return _torchrun("auto", tmp_path_factory.mktemp("ddp"))


def test_two_processes_sync_gradients_through_ddp(ddp):
    assert [r["kind"] for r in ddp] == ["ddp", "ddp"] and ddp[0]["world"] == 2
    assert _close(ddp[0]["weights"], ddp[1]["weights"], 0.0)  # every step all-reduced: the ranks stay identical


def test_fsdp2_shards_and_trains_like_ddp(ddp, tmp_path):
    fsdp = _torchrun("fsdp", tmp_path)
    assert [r["kind"] for r in fsdp] == ["fsdp", "fsdp"]
    assert _close(fsdp[0]["weights"], fsdp[1]["weights"], 0.0)
    assert _close(fsdp[0]["weights"], ddp[0]["weights"], 1e-4)  # the same averaged gradients, sharded instead of replicated


def test_a_two_process_ddp_run_resumes_bit_identically(ddp, tmp_path):
    resumed = _torchrun("auto", tmp_path, crash_at=17)  # epoch 3, batch 5 (6 batches per epoch), after the step-16 checkpoint
    assert _close(resumed[0]["weights"], ddp[0]["weights"], 0.0)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"), seed=0)


def test_bf16_trains_under_autocast_within_two_points_of_fp32(digits, tmp_path):
    acc, seen = {}, set()
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, hidden=[64])
        hook = model.head.register_forward_hook(lambda m, i, o: seen.add((precision, o.dtype)) if m.training else None)
        cfg = DistillConfig(epochs=8, batch_size=32, lr=3e-3, precision=precision, tracker="none")
        fit(Supervised(model), digits.train, digits.val, cfg, tmp_path / precision, seed=0, quiet=True, device="cpu")
        hook.remove()
        acc[precision] = classification_metrics(model, digits.test)["accuracy"]
    assert seen == {("fp32", torch.float32), ("bf16", torch.bfloat16)}  # bf16 really ran in bf16
    assert acc["fp32"] > 0.85 and abs(acc["bf16"] - acc["fp32"]) <= 0.02


def test_precision_and_parallel_resolve_per_device_and_world():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(KDForgeError, match="distill.precision"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_parallel("auto", 1) == "none" and resolve_parallel("auto", 2) == "ddp"
    assert resolve_parallel("fsdp", 4) == "fsdp"


def _count_syncs(monkeypatch, digits, tmp_path, batch_size: int) -> tuple[int, int]:
    """(host reads of tensor values during fit, optimizer steps). Reads made inside torch.optim are
    not counted: AdamW reads its step counter, which torch keeps on the CPU (no device sync); nor the
    data pipeline's count of a batch's labels, taken on the host before the batch moves (no sync)."""
    calls = [0]
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            caller = sys._getframe(1).f_code.co_filename
            calls[0] += "torch/optim/" not in caller and not caller.endswith("kdforge/train/data.py")
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    cfg = DistillConfig(epochs=1, batch_size=batch_size, max_grad_norm=1.0, log_every=10_000, tracker="none")
    res = fit(Supervised(MLP((1, 8, 8), 10, hidden=[16])), digits.train, digits.val, cfg, tmp_path / str(batch_size),
              seed=0, quiet=True, device="cpu")
    monkeypatch.undo()
    return calls[0], res.steps


def test_at_most_one_host_sync_per_optimizer_step(monkeypatch, digits, tmp_path):
    few, steps_few = _count_syncs(monkeypatch, digits, tmp_path, 128)
    many, steps_many = _count_syncs(monkeypatch, digits, tmp_path, 8)
    assert steps_many - steps_few > 100
    assert many - few <= steps_many - steps_few  # extra steps cost at most one read each (evaluation is the same)


def test_max_steps_stops_early_and_eval_every_validates_between_epochs(digits, tmp_path):
    cfg = DistillConfig(epochs=5, batch_size=64, max_steps=7, eval_every=3, tracker="none")
    res = fit(Supervised(MLP((1, 8, 8), 10, hidden=[16])), digits.train, digits.val, cfg, tmp_path, seed=0,
              quiet=True, device="cpu")
    assert res.steps == 7 and len(res.history) == 1  # 20 steps per epoch: stopped inside the first
    evals = [json.loads(x) for x in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6] and all("val/accuracy" in e for e in evals)


def test_trackers_auto_falls_back_and_explicit_needs_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr("kdforge.train.trackers._installed", lambda m: False)
    assert choose("auto") == "none" and isinstance(open_tracker("auto", tmp_path, "x"), NoTracker)
    with pytest.raises(KDForgeError, match="distill.tracker: tensorboard is not installed"):
        choose("tensorboard")
    assert isinstance(open_tracker("tensorboard", tmp_path, "x", enabled=False), NoTracker)  # ranks > 0 never log


def test_batches_are_sliced_at_once_and_equal_per_sample_collation(digits):
    sampler = EpochBatchSampler(len(digits.train), 32, seed=3)
    sampler.set_epoch(2, start=5)
    batches = [b.tolist() for b in sampler]
    assert len(batches) == len(sampler) and batches == epoch_batches(len(digits.train), 32, 3, 2)[5:]  # the resumable order
    got = fetch_batch(digits.train, batches[0])
    want = collate_indexed([(i, digits.train[i]) for i in batches[0]])
    assert got.keys() == {*want, "n_labelled"} and all(torch.equal(got[k], want[k]) for k in want)
    assert got["n_labelled"] == len(batches[0])  # digits: every sample labelled


def test_dataloader_workers_do_not_change_the_result(digits, tmp_path):
    out = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, hidden=[16])
        cfg = DistillConfig(epochs=2, batch_size=64, num_workers=workers, tracker="none")
        fit(Supervised(model), digits.train, digits.val, cfg, tmp_path / str(workers), seed=0, quiet=True, device="cpu")
        out.append(model.state_dict())
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_step_clips_exactly_like_clip_grad_norm_and_skips_a_non_finite_loss():
    eng = Engine.from_config(DistillConfig(precision="fp32", tracker="none"), "cpu")
    torch.manual_seed(0)
    ours, ref = MLP((1, 8, 8), 10, hidden=[16]), MLP((1, 8, 8), 10, hidden=[16])
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(32, 1, 8, 8) * 50  # large inputs: the gradient norm is far above the limit
    for m in (ours, ref):
        m(x).pow(2).mean().backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    assert norm > 0.5
    sgd = torch.optim.SGD(ours.parameters(), lr=0.0)  # lr 0: the step leaves the clipped gradients to compare
    assert eng.step(sgd, list(ours.parameters()), 0.5, torch.tensor(1.0))
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7)
    before = [p.detach().clone() for p in ours.parameters()]
    assert not eng.step(torch.optim.SGD(ours.parameters(), lr=1.0), list(ours.parameters()), 0.5,
                        torch.tensor(float("nan")))
    assert all(torch.equal(p, b) for p, b in zip(ours.parameters(), before))  # no step was taken


def test_a_contiguous_range_is_fetched_as_a_view_equal_to_the_gathered_batch(digits):
    got, want = fetch_batch(digits.train, range(10, 42)), fetch_batch(digits.train, list(range(10, 42)))
    assert got.keys() == want.keys() and got.pop("n_labelled") == want.pop("n_labelled") == 32
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert got["x"].data_ptr() == digits.train.x[10:].data_ptr()  # a view: nothing copied


def test_the_optimizer_is_fused_adamw_on_cpu_and_steps_like_torch_adamw():
    eng = Engine.from_config(DistillConfig(precision="fp32", tracker="none"), "cpu")
    torch.manual_seed(0)
    ours, ref = MLP((1, 8, 8), 10, hidden=[16]), MLP((1, 8, 8), 10, hidden=[16])
    ref.load_state_dict(ours.state_dict())
    opt = eng.optimizer(list(ours.parameters()), 1e-2, 1e-4)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=1e-4, foreach=False)
    assert opt.defaults["fused"] and not ref_opt.defaults["fused"]
    x = torch.randn(32, 1, 8, 8)
    for _ in range(5):
        for m, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fsdp_units_walk_into_containers_and_shard_blocks_inside_out():
    """A ModuleDict (no forward of its own: FSDP2 refuses it) gives one unit per member; a child's
    ModuleList members are blocks, nested blocks before the block holding them; frozen-free children only."""
    inner = torch.nn.Sequential(torch.nn.Linear(2, 2))

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = torch.nn.ModuleList([inner])

        def forward(self, x):
            return self.parts[0](x)

    class Student(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Block(), torch.nn.Linear(2, 2)])
            self.head = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.head(self.layers[1](self.layers[0](x)))

    method = torch.nn.Module()
    method.student = Student()
    method.projections = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 3), "b": torch.nn.Linear(2, 3)})
    method.empty = torch.nn.ReLU()
    blocks, owners = shard_units(method)
    ids = [id(b) for b in blocks]
    assert sorted(ids) == sorted(map(id, [method.student.layers[0], method.student.layers[1], inner]))
    assert ids.index(id(inner)) < ids.index(id(method.student.layers[0]))  # the nested block is sharded first
    assert [id(o) for o in owners] == [id(method.student), id(method.projections["a"]), id(method.projections["b"])]
