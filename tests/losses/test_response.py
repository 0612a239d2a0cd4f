"""Response losses equal their formulas and satisfy the identities a user relies on."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdforge.losses import distillation_loss, jsd, reverse_kl, soft_target_kl, tvd


def logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_distillation_loss_equals_reference_formula():
    s, t = logits(16, 10, seed=1), logits(16, 10, seed=2)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3))
    T, a = 4.0, 0.8
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T * a + (1 - a) * F.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, temperature=T, alpha=a), ref, atol=1e-6)


def test_soft_target_kl_hand_computed_two_classes():
    # p_t = softmax([0, ln 3]) = [1/4, 3/4]; p_s = [1/2, 1/2] at T = 1
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert soft_target_kl(s, t, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # at T = 2 the logits are halved and the result is scaled by 4
    p_t = torch.softmax(t / 2, -1)[0]
    exp2 = 4 * sum(p * math.log(p / 0.5) for p in p_t.tolist())
    assert soft_target_kl(s, t, 2.0).item() == pytest.approx(exp2, abs=1e-6)


def test_t_squared_scaling():
    s, t = logits(8, 5, seed=4), logits(8, 5, seed=5)
    T = 3.0
    plain = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    assert soft_target_kl(s, t, T).item() == pytest.approx(plain.item() * T * T, rel=1e-5)


@pytest.mark.parametrize("fn", [soft_target_kl, reverse_kl, jsd, tvd])
def test_zero_on_identical_inputs(fn):
    z = logits(4, 7, 11, seed=6)
    assert fn(z, z.clone()).abs().item() < 1e-6


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 10.0))
def test_divergences_nonnegative_and_tvd_bounded(seed, T):
    s, t = logits(3, 6, seed=seed), logits(3, 6, seed=seed + 1)
    assert soft_target_kl(s, t, T).item() >= -1e-6
    assert reverse_kl(s, t, T).item() >= -1e-6
    assert jsd(s, t, 0.5, T).item() >= -1e-6
    assert 0.0 <= tvd(s, t, T).item() <= 1.0 + 1e-6


def test_jsd_endpoints_are_forward_and_reverse_kl():
    s, t = logits(5, 9, seed=7), logits(5, 9, seed=8)
    assert jsd(s, t, beta=0.0).item() == pytest.approx(soft_target_kl(s, t, 1.0).item(), rel=1e-5)
    assert jsd(s, t, beta=1.0).item() == pytest.approx(reverse_kl(s, t).item(), rel=1e-5)
    # symmetric JSD is bounded by ln 2
    assert jsd(s, t, beta=0.5).item() <= math.log(2) + 1e-6


def test_reverse_kl_is_kl_with_arguments_swapped():
    s, t = logits(6, 4, seed=9), logits(6, 4, seed=10)
    ref = F.kl_div(F.log_softmax(t, -1), F.softmax(s, -1), reduction="batchmean")
    assert reverse_kl(s, t).item() == pytest.approx(ref.item(), rel=1e-5)


def test_mask_excludes_padded_positions():
    s, t = logits(2, 5, 8, seed=11), logits(2, 5, 8, seed=12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    t_garbage = t.clone()
    t_garbage[mask == 0] = 1e3  # what sits at padded positions must not matter
    for fn in (soft_target_kl, reverse_kl, jsd, tvd):
        assert fn(s, t, mask=mask).item() == pytest.approx(fn(s, t_garbage, mask=mask).item(), rel=1e-5)
    kept = mask.bool()
    assert soft_target_kl(s, t, mask=mask).item() == pytest.approx(soft_target_kl(s[kept], t[kept]).item(), rel=1e-5)


def test_gradients_reach_only_the_student():
    s = logits(4, 6, seed=13).requires_grad_(True)
    t = logits(4, 6, seed=14).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        t_frozen = t * 1.0
    distillation_loss(s, t_frozen, y).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="differ in shape"):
        soft_target_kl(torch.zeros(2, 10), torch.zeros(2, 9))
