"""The fused KD objective equals the op-by-op formula, in value and gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdforge.data.base import UNLABELLED
from kdforge.losses import soft_target_kl
from kdforge.losses.fused import IGNORE, can_fuse, kd_objective
from kdforge.methods.terms import StepContext, TERMS


def reference(s, t, y, temperature, alpha):
    """α · T² · KL(p_t^T ‖ p_s^T) + (1 − α) · CE over the labelled rows, from the library's plain losses."""
    kd = soft_target_kl(s, t, temperature)
    if alpha == 1.0:
        return kd
    return alpha * kd + (1 - alpha) * F.cross_entropy(s, y, ignore_index=IGNORE)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), c=st.integers(2, 7), temperature=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
       alpha=st.sampled_from([0.0, 0.3, 0.8, 1.0]), unlabelled=st.integers(0, 8), seed=st.integers(0, 10**6),
       upstream=st.floats(0.1, 3.0))
def test_value_and_gradient_equal_the_formula(n, c, temperature, alpha, unlabelled, seed, upstream):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(n, c, generator=g)).requires_grad_(True)
    t = 3 * torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    y[:min(unlabelled, n - 1)] = IGNORE  # at least one row stays labelled
    n_labelled = int((y != IGNORE).sum())
    fused = kd_objective(s, t, y, temperature, alpha, n_labelled)
    ref = reference(s, t, y, temperature, alpha)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    (g_fused,) = torch.autograd.grad(fused * upstream, s)
    (g_ref,) = torch.autograd.grad(ref * upstream, s)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-5, atol=1e-6)


def test_the_kd_term_takes_the_fused_path_and_agrees_with_the_op_by_op_path():
    torch.manual_seed(0)
    s = torch.randn(16, 5, requires_grad=True)
    t, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    term = type("Term", (), {"kind": "kd", "temperature": 3.0, "alpha": 0.6, "standardize": False, "weight": 1.0})()
    assert can_fuse(s, t, 16, term.alpha)
    fast = TERMS.get("kd")(term, StepContext(s_logits=s, t_logits=t, labels=y, n_labelled=16))
    slow = TERMS.get("kd")(term, StepContext(s_logits=s, t_logits=t, labels=y, n_labelled=None))  # no count: op by op
    assert fast.grad_fn is not None and type(fast.grad_fn).__name__ != type(slow.grad_fn).__name__
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(torch.autograd.grad(fast, s)[0], torch.autograd.grad(slow, s)[0])


def test_what_the_fused_path_does_not_cover_falls_back():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert UNLABELLED == IGNORE  # the data's "unlabelled" is the label the fused cross-entropy ignores
    assert not can_fuse(s.bfloat16(), t, 4, 0.5)  # autocast logits
    assert not can_fuse(s[None], t[None], 4, 0.5)  # (B, T, V): sequences take the masked path
    assert not can_fuse(s, t[:, :2], 4, 0.5)  # a shape mismatch gets the op-by-op path's error
    assert not can_fuse(s, t, None, 0.5) and not can_fuse(s, t, 0, 0.5)
    assert can_fuse(s, t, 0, 1.0)  # no cross-entropy: nothing needs a label
