"""Chunked divergences equal the plain ones (values and gradients); sparse top-k KL equals dense KL at k = V."""
import pytest
import torch

from kdforge.losses import jsd, reverse_kl, soft_target_kl, tvd
from kdforge.losses.chunked import chunked, divergence, sparse_restricted, sparse_topk_kl


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def _mask(b, t, seed=9):
    m = (torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) > 0.3).float()
    m[:, :3] = 0  # a prompt that is never scored
    return m


@pytest.mark.parametrize(
    "fn,kwargs",
    [(soft_target_kl, {"temperature": 2.0}), (reverse_kl, {}), (jsd, {"beta": 0.3}), (jsd, {"beta": 0.0}), (tvd, {})],
)
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_chunked_equals_plain_values_and_grads(fn, kwargs, chunk):
    t_logits = _logits(3, 11, 50, seed=1)
    mask = _mask(3, 11)
    s1 = _logits(3, 11, 50, seed=2).requires_grad_(True)
    s2 = s1.detach().clone().requires_grad_(True)
    plain = fn(s1, t_logits, mask=mask, **kwargs)
    chunk_loss = chunked(fn, s2, t_logits, mask, chunk, **kwargs)
    assert torch.allclose(plain, chunk_loss, atol=1e-6)
    plain.backward()
    chunk_loss.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)


def test_chunked_without_mask_and_all_masked():
    s, t = _logits(2, 9, 20, seed=3), _logits(2, 9, 20, seed=4)
    assert torch.allclose(divergence("reverse_kl", s, t, chunk_size=4), reverse_kl(s, t), atol=1e-6)
    s.requires_grad_(True)
    zero = divergence("forward_kl", s, t, torch.zeros(2, 9), chunk_size=4)
    assert zero.item() == 0.0
    zero.backward()  # still differentiable


def test_unknown_divergence_is_named():
    with pytest.raises(ValueError, match="unknown divergence 'kl2'"):
        divergence("kl2", _logits(1, 2, 3), _logits(1, 2, 3))


def test_sparse_topk_kl_equals_dense_at_k_all():
    s, t = _logits(2, 5, 30, seed=5), _logits(2, 5, 30, seed=6)
    vals, idx = t.topk(30, dim=-1)
    mask = _mask(2, 5)
    dense = soft_target_kl(s, t, 3.0, mask=mask)
    assert torch.allclose(sparse_topk_kl(s, vals, idx, 3.0, mask=mask), dense, atol=1e-5)


def test_sparse_topk_kl_small_k_is_close_for_peaked_teacher_and_zero_at_match():
    t = _logits(4, 6, 40, seed=7) * 4  # peaked teacher: top-16 holds almost all mass
    vals, idx = t.topk(16, dim=-1)
    assert sparse_topk_kl(t, vals, idx).item() == pytest.approx(soft_target_kl(t, t).item(), abs=0.05)
    # student equal to the renormalised top-k teacher -> zero
    s = torch.full_like(t, -1e4).scatter(-1, idx, vals)
    assert sparse_topk_kl(s, vals, idx).item() == pytest.approx(0.0, abs=1e-5)
    assert sparse_restricted("reverse_kl", s, vals, idx).item() == pytest.approx(0.0, abs=1e-5)


def test_sparse_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        sparse_topk_kl(_logits(2, 5, 30), torch.zeros(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.long))
