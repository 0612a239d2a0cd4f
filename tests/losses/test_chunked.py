"""Chunked divergences equal the plain ones (values and gradients)."""
import pytest
import torch

from kdforge.losses import jsd, reverse_kl, soft_target_kl, tvd
from kdforge.losses.chunked import chunked, divergence


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


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunked_head_equals_unchunked_values_and_grads(chunk):
    """Projection inside the chunk loop (checkpointed): same losses, same gradients for the
    hidden states and for the head's weights."""
    from kdforge.losses.chunked import chunked_head

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 11, 16, requires_grad=True)
    t_logits, mask = _logits(3, 11, 50, seed=1), _mask(3, 11)
    targets = torch.randint(0, 50, (3, 11))

    def losses(s, pos):
        ce = torch.nn.functional.cross_entropy(s.transpose(1, 2), targets[:, pos], reduction="none")
        m = mask[:, pos]
        return {"kd": soft_target_kl(s, t_logits[:, pos], 2.0, mask=m), "ce": (ce * m).sum() / m.sum().clamp_min(1)}

    plain = losses(head(hidden), slice(None))
    g_plain = torch.autograd.grad(plain["kd"] + 0.5 * plain["ce"], [hidden, head.weight])
    got = chunked_head(head, hidden, mask, losses, chunk)
    assert set(got) == {"kd", "ce"}
    for k in got:
        assert torch.allclose(got[k], plain[k], atol=1e-6)
    g_got = torch.autograd.grad(got["kd"] + 0.5 * got["ce"], [hidden, head.weight])
    for a, b in zip(g_plain, g_got):
        assert torch.allclose(a, b, atol=1e-6)
