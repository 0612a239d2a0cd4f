"""data.labelled: a few labelled samples plus an unlabelled pool the teacher labels."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.data.base import UNLABELLED
from kdforge.errors import KDForgeError
from kdforge.methods.standard import StandardKD
from kdforge.methods.terms import labelled_ce
from kdforge.train.data import fetch_batch


def test_first_n_keep_labels_the_rest_is_an_unlabelled_pool():
    full = load_data(DataConfig(name="digits"), 0)
    few = load_data(DataConfig(name="digits", labelled=100), 0)
    assert torch.equal(few.train.x, full.train.x)
    assert torch.equal(few.train.y[:100], full.train.y[:100])
    assert (few.train.y[100:] == UNLABELLED).all()
    assert torch.equal(few.val.y, full.val.y) and torch.equal(few.test.y, full.test.y)


def test_no_pool_left_is_an_error_naming_the_field():
    with pytest.raises(KDForgeError, match=r"data\.labelled"):
        load_data(DataConfig(name="digits", labelled=5000), 0)


@pytest.mark.parametrize("counted", [False, True])  # the count taken by fetch_batch, or divided on the device
def test_labelled_ce_is_the_mean_over_labelled_samples_and_zero_without_any(counted):
    z = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, UNLABELLED, 2, UNLABELLED, 3, 1])
    keep = y != UNLABELLED
    n = (lambda labels: int((labels != UNLABELLED).sum())) if counted else (lambda labels: None)
    assert torch.allclose(labelled_ce(z, y, n(y)), F.cross_entropy(z[keep], y[keep]))
    assert torch.allclose(labelled_ce(z, y.clamp_min(0), n(y.clamp_min(0))), F.cross_entropy(z, y.clamp_min(0)))
    unlabelled = torch.full((6,), UNLABELLED)
    none = labelled_ce(z, unlabelled, n(unlabelled))
    assert none.item() == 0.0 and torch.isfinite(none)
    none.backward()  # still part of the graph


def test_fetched_batches_count_their_labelled_samples():
    few = load_data(DataConfig(name="digits", labelled=100), 0)
    batch = fetch_batch(few.train, list(range(90, 110)))
    assert batch["n_labelled"] == 10 == int((batch["y"] != UNLABELLED).sum())


def test_every_soft_term_accepts_unlabelled_samples():
    torch.manual_seed(0)
    batch = {"x": torch.randn(8, 5), "y": torch.tensor([0, 1, 2, UNLABELLED, UNLABELLED, 1, UNLABELLED, 0])}
    cfg = DistillConfig(losses=[{"kind": "kd", "alpha": 0.5}, {"kind": "dkd"}, {"kind": "dist"}, {"kind": "ce"}],
                        filter={"mode": "downweight"})
    out = StandardKD(torch.nn.Linear(5, 3), torch.nn.Linear(5, 3), cfg, batch).step(batch)
    assert all(torch.isfinite(v) for v in out.values()), out
