"""Sparse teacher targets: top-k equals dense KL at k = V; the sampled target is unbiased
(its Monte-Carlo mean loss and gradient converge to the dense ones, top-k's do not)."""
import pytest
import torch

from kdforge.losses import soft_target_kl
from kdforge.losses.sparse import (SparseTarget, decode_weights, encode_weights, sample_target, sparse_kl, sparse_restricted,
                                   sparse_topk_kl, topk_target)


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def _mask(b, t, seed=9):
    m = (torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) > 0.3).float()
    m[:, :1] = 0
    return m


def test_sparse_topk_kl_equals_dense_at_k_all():
    s, t = _logits(2, 5, 30, seed=5), _logits(2, 5, 30, seed=6)
    vals, idx = t.topk(30, dim=-1)
    mask = _mask(2, 5)
    dense = soft_target_kl(s, t, 3.0, mask=mask)
    assert torch.allclose(sparse_topk_kl(s, vals, idx, 3.0, mask=mask), dense, atol=1e-5)


def test_sparse_topk_kl_small_k_is_close_for_peaked_teacher_and_zero_at_match():
    t = _logits(4, 6, 40, seed=7) * 4  # peaked teacher: top-16 holds almost all mass
    target = topk_target(t, 16)
    assert sparse_kl(t, target).item() == pytest.approx(soft_target_kl(t, t).item(), abs=0.05)
    s = target.dense(40)  # student equal to the renormalised top-k teacher -> zero
    assert sparse_kl(s, target).item() == pytest.approx(0.0, abs=1e-5)
    assert sparse_restricted("reverse_kl", s, target).item() == pytest.approx(0.0, abs=1e-5)


def test_sparse_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        sparse_topk_kl(_logits(2, 5, 30), torch.zeros(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.long))


def test_sampled_target_layout():
    t = _logits(3, 4, 50, seed=1)
    target = sample_target(t, 16, generator=torch.Generator().manual_seed(0))
    w, ids = target.values, target.indices
    assert w.shape == ids.shape == (3, 4, 16) and target.entropy.shape == (3, 4)
    assert torch.allclose(w.sum(-1), torch.ones(3, 4))
    assert torch.all(w[..., :-1] >= w[..., 1:])  # most drawn first, padding (weight 0) last
    assert torch.all((w * 16 - (w * 16).round()).abs() < 1e-5)  # counts / K
    real = ids.masked_fill(w == 0, -1)
    for row in real.reshape(-1, 16):  # every real id appears once
        kept = row[row >= 0]
        assert len(kept.unique()) == len(kept)
    assert torch.allclose(target.entropy, -(t.softmax(-1) * t.log_softmax(-1)).sum(-1), atol=1e-5)
    # dense() is a distribution with exactly the sampled weights
    assert torch.allclose(target.dense(50).softmax(-1).gather(-1, ids) * (w > 0), w, atol=1e-6)


@pytest.mark.parametrize("estimator,power", [("random", 1.0), ("ht", 1.0), ("priority", 1.0), ("priority", 0.5)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_kl_is_unbiased_in_value_and_gradient(temperature, estimator, power):
    """Mean over many independent samples -> the dense KL and its gradient; top-k stays off."""
    torch.manual_seed(0)
    teacher = _logits(2, 3, 40, seed=11)  # a spread-out teacher: top-8 misses real mass
    student = _logits(2, 3, 40, seed=12).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    dense = soft_target_kl(student, teacher, temperature, mask=mask)
    (g_dense,) = torch.autograd.grad(dense, student)

    gen, n, k = torch.Generator().manual_seed(1), 4000, 8
    draws = sample_target(teacher.expand(n, *teacher.shape), k, temperature, generator=gen, estimator=estimator, power=power)
    groups = 20  # n stores in 20 groups: each group's loss is the mean of its stores' losses (equal masks)
    g = n // groups
    s = student.expand(g, *student.shape)
    per_group = torch.stack([sparse_kl(s, draws[i * g : (i + 1) * g], temperature, mask.expand(g, *mask.shape))
                             for i in range(groups)])
    (g_mean,) = torch.autograd.grad(per_group.mean(), student)
    (g_one,) = torch.autograd.grad(sparse_kl(student, draws[0], temperature, mask), student)
    se = per_group.std() / groups**0.5
    assert abs(per_group.mean().item() - dense.item()) < 4 * se.item()
    # gradient: the Monte-Carlo mean is close, one sample is not (the test could fail)
    err_mean, err_one = (g_mean - g_dense).norm() / g_dense.norm(), (g_one - g_dense).norm() / g_dense.norm()
    assert err_mean < 0.05 < err_one
    top = sparse_kl(student, topk_target(teacher, k), temperature, mask)
    (g_top,) = torch.autograd.grad(top, student)
    assert (g_top - g_dense).norm() / g_dense.norm() > 5 * err_mean  # top-k is biased, however many samples


def test_sampled_target_refused_by_restricted_divergences():
    t = sample_target(_logits(2, 3, 20), 4)
    with pytest.raises(ValueError, match="only forward KL"):
        sparse_restricted("reverse_kl", _logits(2, 3, 20, seed=2), t)


def test_slicing_keeps_entropy_aligned():
    t = sample_target(_logits(2, 5, 20), 4)
    part = t[:, :-1]
    assert isinstance(part, SparseTarget) and part.values.shape == (2, 4, 4) and part.entropy.shape == (2, 4)
    assert torch.equal(t[1].indices, t.indices[1]) and t[1].entropy.shape == (5,)


def test_hybrid_target_is_exact_on_the_head_unbiased_and_less_noisy():
    teacher = _logits(2, 3, 40, seed=11)
    student = _logits(2, 3, 40, seed=12).requires_grad_(True)
    p = teacher.softmax(-1)
    one = sample_target(teacher, 8, head=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one.indices[..., :4], p.topk(4).indices)  # the head: the 4 most likely ids, exactly
    assert torch.allclose(one.values[..., :4], p.topk(4).values)
    assert torch.allclose(one.values.sum(-1), torch.ones(2, 3), atol=1e-5)
    (g_dense,) = torch.autograd.grad(soft_target_kl(student, teacher), student)
    errs = {}
    for head in (0, 4):
        gen, n = torch.Generator().manual_seed(1), 3000
        draws = sample_target(teacher.expand(n, *teacher.shape), 8, generator=gen, head=head)
        s = student.expand(n, *student.shape)
        per_sample = torch.stack([sparse_kl(s[i], draws[i]) for i in range(n)])
        (g_mean,) = torch.autograd.grad(per_sample.mean(), student, retain_graph=True)
        assert (g_mean - g_dense).norm() / g_dense.norm() < 0.05  # unbiased, either way
        errs[head] = per_sample.var().item()
    assert errs[4] < 0.5 * errs[0]  # exact head: less than half the variance of plain sampling


def _weights(target: SparseTarget, vocab: int) -> torch.Tensor:
    """(..., V) the sampled weights summed per id."""
    return torch.zeros(*target.values.shape[:-1], vocab).scatter_add_(-1, target.indices.long(), target.values.float())


def test_ht_and_priority_layout():
    """ht: the random draws' ids, weighted p / (1 − (1 − p)^K); priority: k distinct ids, each weighted
    max(p, τ) with one τ per position, so every id with p ≥ τ carries its exact probability."""
    t = _logits(3, 4, 50, seed=1)
    p = t.softmax(-1)
    rnd = sample_target(t, 16, generator=torch.Generator().manual_seed(0))
    ht = sample_target(t, 16, generator=torch.Generator().manual_seed(0), estimator="ht")
    assert torch.equal(_weights(rnd, 50) > 0, _weights(ht, 50) > 0)  # the same draws
    p_ids = p.gather(-1, ht.indices)
    assert torch.allclose(ht.values, torch.where(ht.values > 0, p_ids / (1 - (1 - p_ids) ** 16), 0.0), rtol=1e-4)
    pr = sample_target(t, 16, generator=torch.Generator().manual_seed(0), estimator="priority")
    for ids, w, row_p in zip(pr.indices.reshape(-1, 16), pr.values.reshape(-1, 16), p.reshape(-1, 50)):
        assert len(ids.unique()) == 16 and torch.all(w >= row_p[ids] - 1e-7)
        tau = w.min()
        assert torch.allclose(w, torch.maximum(row_p[ids], tau))
        assert set(torch.nonzero(row_p >= tau)[:, 0].tolist()) <= set(ids.tolist())  # above τ: always kept
    for target in (ht, pr):  # most likely kept id first
        p_kept = torch.where(target.values > 0, p.gather(-1, target.indices), -1.0)
        assert torch.all(p_kept[..., :-1] >= p_kept[..., 1:])
    sn = sample_target(t, 16, generator=torch.Generator().manual_seed(0), estimator="priority", normalise=True)
    assert torch.equal(sn.indices, pr.indices) and torch.allclose(sn.values, pr.values / pr.values.sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="not one of"):
        sample_target(t, 4, estimator="poisson")


def test_priority_sampling_has_the_least_error_per_slot():
    """On a spread-out teacher, E‖w − p‖² of priority sampling < Horvitz–Thompson < plain counts / K, at equal k."""
    teacher = _logits(8, 200, seed=3)
    p = teacher.softmax(-1)
    err = {}
    for est in ("random", "ht", "priority"):
        draws = sample_target(teacher.expand(400, *teacher.shape), 16, generator=torch.Generator().manual_seed(2), estimator=est)
        err[est] = ((_weights(draws, 200) - p) ** 2).sum(-1).mean().item()
    assert err["priority"] < err["ht"] < err["random"]


def test_uint8_weight_codes_are_unbiased_and_close():
    """One-byte codes: decoding gives a grid point within one 6.5% step of w, and the mean over many
    stochastic roundings is w (0 stays 0, 1 stays 1, weights below the grid round to 0 or its last point)."""
    w = torch.tensor([1.0, 0.5, 0.3, 0.0625, 0.01, 1e-5, 1e-8, 0.0])
    codes = encode_weights(w.expand(20000, 8), torch.Generator().manual_seed(0))
    assert codes.dtype == torch.uint8
    dec = decode_weights(codes)
    assert torch.allclose(dec.mean(0), w, rtol=0.01, atol=1e-9)
    assert torch.all((dec[:, :6] / w[:6] - 1).abs() < 0.07) and torch.all(dec[:, -1] == 0) and torch.all(dec[:, 0] == 1)
