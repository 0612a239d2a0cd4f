import pytest
import torch

from kdforge.losses import rkd_angle, rkd_distance, similarity_preserving


def emb(n=6, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_rkd_distance_invariant_to_scale_rotation_and_width():
    e = emb()
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    assert rkd_distance(e, 7.0 * e @ q).item() == pytest.approx(0.0, abs=1e-6)
    # embedding into a wider space (zero padding) preserves distances: no projection needed
    assert rkd_distance(e, torch.cat([e, torch.zeros(6, 3)], 1)).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_distance(e, emb(seed=1)).item() > 0


def test_rkd_distance_hand_computed():
    # three points on a line: distances 1, 2, 1 (mean 4/3) vs an equilateral triangle (all equal)
    line = torch.tensor([[0.0], [1.0], [2.0]])
    tri = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]])
    d_s = torch.tensor([1, 2, 1, 1, 1, 2]) / (4 / 3)
    expected = torch.nn.functional.smooth_l1_loss(d_s, torch.ones(6))
    assert rkd_distance(line, tri).item() == pytest.approx(expected.item(), abs=1e-6)


def test_rkd_angle_invariant_to_similarity_transforms():
    e = emb(5, 4, seed=2)
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    assert rkd_angle(e, 3.0 * e @ q + 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle(e, emb(5, 4, seed=3)).item() > 0


def test_similarity_preserving_zero_for_same_gram_and_positive_otherwise():
    e = emb(seed=4)
    assert similarity_preserving(e, 2.0 * e).item() == pytest.approx(0.0, abs=1e-7)
    assert similarity_preserving(e, emb(seed=5)).item() > 0


def test_small_batches_are_refused():
    with pytest.raises(ValueError):
        rkd_angle(emb(2), emb(2))
