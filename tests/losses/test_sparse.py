"""Sparse teacher targets: top-k equals dense KL at k = V; the sampled target is unbiased
(its Monte-Carlo mean loss and gradient converge to the dense ones, top-k's do not)."""
import pytest
import torch

from kdforge.losses import soft_target_kl
from kdforge.losses.sparse import SparseTarget, sample_target, sparse_kl, sparse_restricted, sparse_topk_kl, topk_target


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


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_kl_is_unbiased_in_value_and_gradient(temperature):
    """Mean over many independent samples -> the dense KL and its gradient; top-k stays off."""
    torch.manual_seed(0)
    teacher = _logits(2, 3, 40, seed=11)  # a spread-out teacher: top-8 misses real mass
    student = _logits(2, 3, 40, seed=12).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    dense = soft_target_kl(student, teacher, temperature, mask=mask)
    (g_dense,) = torch.autograd.grad(dense, student)

    gen, n, k = torch.Generator().manual_seed(1), 4000, 8
    draws = sample_target(teacher.expand(n, *teacher.shape), k, temperature, generator=gen)  # n independent stores
    s = student.expand(n, *student.shape)
    per_sample = torch.stack([sparse_kl(s[i], draws[i], temperature, mask) for i in range(n)])
    (g_mean,) = torch.autograd.grad(per_sample.mean(), student, retain_graph=True)
    (g_one,) = torch.autograd.grad(per_sample[0], student)
    se = per_sample.std() / n**0.5
    assert abs(per_sample.mean().item() - dense.item()) < 4 * se.item()
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
