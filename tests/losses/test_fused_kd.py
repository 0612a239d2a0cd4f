"""The fused soft-target KL equals the op-by-op formula, in value and gradient."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdforge.losses import soft_target_kl
from kdforge.losses.fused import can_fuse, fused_soft_target_kl
from kdforge.methods.terms import TERMS, StepContext


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), c=st.integers(2, 7), temperature=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
       seed=st.integers(0, 10**6), upstream=st.floats(0.1, 3.0))
def test_value_and_gradient_equal_the_formula(n, c, temperature, seed, upstream):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(n, c, generator=g)).requires_grad_(True)
    t = 3 * torch.randn(n, c, generator=g)
    fused, ref = fused_soft_target_kl(s, t, temperature), soft_target_kl(s, t, temperature)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    (g_fused,) = torch.autograd.grad(fused * upstream, s)
    (g_ref,) = torch.autograd.grad(ref * upstream, s)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-5, atol=1e-6)


def _term(alpha):
    return type("Term", (), {"kind": "kd", "temperature": 3.0, "alpha": alpha, "standardize": False, "weight": 1.0})()


def test_the_kd_term_takes_the_fused_path_and_agrees_with_the_op_by_op_path():
    torch.manual_seed(0)
    s = torch.randn(16, 5, requires_grad=True)
    t, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    y[:3] = -100  # unlabelled rows: no cross-entropy
    for alpha in (0.6, 1.0):
        fast = TERMS.get("kd")(_term(alpha), StepContext(s_logits=s, t_logits=t, labels=y, n_labelled=13))
        ones = torch.ones(16)  # a sample weight of 1 everywhere forces the op-by-op path, same value
        slow = TERMS.get("kd")(_term(alpha), StepContext(s_logits=s, t_logits=t, labels=y, n_labelled=13, sample_weight=ones))
        torch.testing.assert_close(fast, slow)
        torch.testing.assert_close(torch.autograd.grad(fast, s)[0], torch.autograd.grad(slow, s)[0])
    kl = TERMS.get("kd")(_term(1.0), StepContext(s_logits=s, t_logits=t, labels=y))
    assert type(kl.grad_fn).__name__ == "_SoftTargetKLBackward"  # the fused node, not a chain of ops


def test_what_the_fused_path_does_not_cover_falls_back():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert can_fuse(s, t)
    assert not can_fuse(s.bfloat16(), t)  # autocast logits
    assert not can_fuse(s[None], t[None])  # (B, T, V): sequences take the masked path
    assert not can_fuse(s, t[:, :2])  # a shape mismatch gets the op-by-op path's error
