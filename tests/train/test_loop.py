"""The loop: gradient accumulation is the same as a bigger batch; NaN handling; metrics and checkpoints."""
import json

import pytest
import torch

from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.errors import NonFiniteLoss
from kdforge.methods.supervised import Supervised
from kdforge.models import MLP
from kdforge.train.checkpoint import load_checkpoint, save_checkpoint, verify
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


def test_metrics_jsonl_has_one_line_per_epoch_and_best_is_restored(data, tmp_path):
    model, res = train(data, tmp_path, epochs=3)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert res.best["val/accuracy"] == max(r["val/accuracy"] for r in lines)
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
