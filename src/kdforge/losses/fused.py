"""Soft-target KD as one autograd node, for the common case of (N, C) fp32 logits.

    T² · mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T))

is what `soft_target_kl` computes op by op; autograd then records and replays each small op, and
on a small classification job every Python-level call costs more than the arithmetic. Here the
forward runs the ops unrecorded and the backward is the closed form

    ∂L/∂s_i = T / N · (softmax(s_i/T) − softmax(t_i/T)),

so the term costs a handful of calls per step. The cross-entropy half of the classic objective
stays torch's own `cross_entropy` (its backward runs in C++). Tested equal, value and gradient,
to the op-by-op reference (tests/losses/test_fused_kd.py).
"""
from __future__ import annotations

import torch
from torch import Tensor


class _SoftTargetKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, temperature: float) -> Tensor:
        # torch's methods, not the functional wrappers: a small job pays for every Python-level call
        n, inv_t = s.shape[0], 1.0 / temperature
        log_q = s.mul(inv_t).log_softmax(-1)
        log_p = t.mul(inv_t).log_softmax(-1)
        ctx.scale = temperature / n
        ctx.save_for_backward(log_q, log_p)
        return torch.kl_div(log_q, log_p, 2, log_target=True).mul_(temperature * temperature / n)  # 2: sum

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_q, log_p = ctx.saved_tensors
        return log_q.exp().sub_(log_p.exp()).mul_(grad * ctx.scale), None, None


def can_fuse(s: Tensor, t: Tensor) -> bool:
    """The fused KL covers (N, C) float32 logits of equal shape; everything else takes the op-by-op path."""
    return s.dim() == 2 and s.shape == t.shape and s.dtype == torch.float32 and t.dtype == torch.float32


def fused_soft_target_kl(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """T² · KL(p_t^T ‖ p_s^T), mean over the N rows, as one node; see the module doc."""
    return _SoftTargetKL.apply(s, t.detach(), float(temperature))
