"""The loop: gradient accumulation is the same as a bigger batch; NaN handling; metrics and checkpoints."""
import json

import pytest
import torch

from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.errors import NonFiniteLoss
from kdforge.methods.supervised import Supervised
from kdforge.models import MLP
from kdforge.train.checkpoint import CheckpointWriter, load_checkpoint, save_checkpoint, verify
from kdforge.train.evaluate import classification_metrics
from kdforge.train.loop import fit


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="digits", train_limit=96), seed=0)


def train(data, tmp, **cfg):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=[16])
    res = fit(Supervised(model), data.train, data.val, DistillConfig(**cfg), tmp, seed=1, quiet=True)
    return model, res


def test_grad_accumulation_equals_larger_batch(data, tmp_path):
    big, _ = train(data, tmp_path / "a", epochs=2, batch_size=16, grad_accum=1, max_grad_norm=None)
    small, _ = train(data, tmp_path / "b", epochs=2, batch_size=8, grad_accum=2, max_grad_norm=None)
    for p, q in zip(big.parameters(), small.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


@pytest.mark.parametrize("lr", [0.03, 0.3])  # here: best = last epoch (weights kept), and best = first (reloaded)
def test_metrics_jsonl_has_one_line_per_epoch_and_best_is_restored(data, tmp_path, lr):
    model, res = train(data, tmp_path, epochs=3, lr=lr)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert res.best["val/accuracy"] == max(r["val/accuracy"] for r in lines)
    assert classification_metrics(model, data.val)["accuracy"] == res.best["val/accuracy"]  # the best weights came back
    assert verify(tmp_path / "checkpoints/last") and verify(tmp_path / "checkpoints/best")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    with pytest.raises(NonFiniteLoss, match="last good checkpoint kept"):
        train(data, tmp_path, epochs=3, lr=1e30, max_grad_norm=None, checkpoint_every=1)
    assert verify(tmp_path / "checkpoints/last")


def test_nan_loss_skip_mode_warns_and_continues(data, tmp_path):
    with pytest.warns(UserWarning, match="step skipped"):
        _, res = train(data, tmp_path, epochs=3, lr=1e30, max_grad_norm=None, on_nonfinite="skip")
    assert any(r.get("train/skipped_steps", 0) > 0 for r in res.history)


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path):
    m = MLP((4,), 2, hidden=[3])
    save_checkpoint(tmp_path / "last", m, {"n": 1})
    save_checkpoint(tmp_path / "last", m, {"n": 2})
    blob = tmp_path / "last/model.safetensors"
    blob.write_bytes(blob.read_bytes()[:-7])  # truncated
    with pytest.warns(UserWarning, match="corrupted"):
        assert load_checkpoint(tmp_path / "last", m) == {"n": 1}


def test_ranks_get_equal_disjoint_shares_that_change_each_epoch():
    from kdforge.train.batching import epoch_batches

    shares = [sum(epoch_batches(1025, 32, seed=0, epoch=0, rank=r, world=2), []) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 512 and not set(shares[0]) & set(shares[1])
    assert len(epoch_batches(1025, 32, 0, 0, 0, 2)) == len(epoch_batches(1025, 32, 0, 0, 1, 2))
    assert sum(epoch_batches(1025, 32, 0, 0), []) != sum(epoch_batches(1025, 32, 0, 1), [])
    assert sorted(sum(epoch_batches(1025, 32, 0, 0), [])) == list(range(1025))  # one process sees everything


def _count_last_saves(monkeypatch, data, tmp, **cfg) -> tuple[int, object]:
    saves = []
    original = CheckpointWriter.submit

    def counted(self, dir_, *a, **k):
        saves.append(dir_.name)
        return original(self, dir_, *a, **k)

    monkeypatch.setattr(CheckpointWriter, "submit", counted)
    _, res = train(data, tmp, epochs=3, **cfg)
    monkeypatch.undo()
    return saves.count("last"), res


def test_checkpoint_interval_skips_early_epoch_saves_but_the_last_epoch_always_saves(monkeypatch, data, tmp_path):
    every, _ = _count_last_saves(monkeypatch, data, tmp_path / "a", checkpoint_interval=0)
    rare, res = _count_last_saves(monkeypatch, data, tmp_path / "b", checkpoint_interval=1e9)
    assert every == 3 and rare == 1
    state = load_checkpoint(tmp_path / "b/checkpoints/last", Supervised(MLP((1, 8, 8), 10, hidden=[16])))
    assert state["loop"]["epoch"] == 3  # resumable, and says the run is complete
    assert verify(tmp_path / "b/checkpoints/best") and res.best["val/accuracy"] == max(r["val/accuracy"] for r in res.history)


class _Recording(Supervised):
    """Supervised, keeping every batch's (loss, samples) to check the loop's running means against."""

    def __init__(self, model):
        super().__init__(model)
        self.seen: list[tuple[float, int]] = []

    def forward(self, batch):
        out = super().forward(batch)
        self.seen.append((float(out["ce"]), len(batch["y"])))
        return out


@pytest.mark.parametrize("log_every", [1, 3, 1000])
def test_epoch_train_loss_is_the_sample_weighted_mean_of_the_batch_losses(data, tmp_path, log_every):
    torch.manual_seed(0)
    method = _Recording(MLP((1, 8, 8), 10, hidden=[16]))
    res = fit(method, data.train, data.val, DistillConfig(epochs=1, batch_size=10, log_every=log_every, tracker="none"),
              tmp_path, seed=1, quiet=True)
    want = sum(loss * n for loss, n in method.seen) / sum(n for _, n in method.seen)
    assert res.history[0]["train/ce"] == pytest.approx(want, rel=1e-6)


def test_select_none_keeps_the_last_epoch_even_when_an_earlier_one_scored_better(data, tmp_path):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=[16])
    res = fit(Supervised(model), data.train, data.val, DistillConfig(epochs=3, lr=0.3), tmp_path, seed=1, quiet=True,
              select=None)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["val/accuracy"] for r in lines) > lines[-1]["val/accuracy"]  # lr 0.3: an earlier epoch was better
    assert res.best["epoch"] == 2
    assert classification_metrics(model, data.val)["accuracy"] == lines[-1]["val/accuracy"]  # the last weights stay


def test_patience_stops_once_val_has_not_improved_for_that_many_epochs_and_a_resume_trains_no_more(data, tmp_path):
    _, full = train(data, tmp_path / "full", epochs=12, lr=0.3)  # lr 0.3: val peaks early, then stalls
    scores = [r["val/accuracy"] for r in full.history]
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    expected = next((i + 1 for i in range(len(scores)) if i - best.index(best[i]) >= 2), len(scores))  # epochs run
    _, res = train(data, tmp_path / "early", epochs=12, lr=0.3, patience=2)
    assert [r["val/accuracy"] for r in res.history] == scores[:expected]  # the same epochs, then the stop
    assert expected < 12, "the planted run never stalls: the test would not exercise the stop"
    _, again = train(data, tmp_path / "early", epochs=12, lr=0.3, patience=2)  # resume of a stopped run
    assert len(again.history) == expected and again.best == res.best
