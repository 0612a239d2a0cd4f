"""The classic KD objective as one autograd node, for the common case of (N, C) fp32 logits.

    α · T² · mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T)) + (1 − α) · CE(s, y) over the labelled rows

is what `soft_target_kl` and `cross_entropy` compute op by op; autograd then records and
replays a dozen small nodes per step. Here the forward runs the same ops without recording
them and the backward is the closed form

    ∂L/∂s_i = α · T / N · (softmax(s_i/T) − softmax(t_i/T)) + (1 − α) / n · (softmax(s_i) − onehot(y_i)),

(n the labelled count; rows labelled IGNORE = -100, torch's ignore_index, add no cross-entropy), three elementwise
ops. On a small classification job this halves the cost of the loss's forward + backward.
Tested equal, value and gradient, to the op-by-op reference (tests/test_fused_kd.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # torch's cross-entropy ignore_index: a row with this label has no cross-entropy term



class _KDObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, labels: Tensor, temperature: float, alpha: float, n_labelled: int) -> Tensor:
        # torch's methods, not the functional wrappers: a small job pays for every Python-level call
        n, inv_t = s.shape[0], 1.0 / temperature
        log_q = s.mul(inv_t).log_softmax(-1)
        log_p = t.mul(inv_t).log_softmax(-1)
        kl = torch.kl_div(log_q, log_p, 2, log_target=True)  # Σ_i KL_i (reduction 2 = sum)
        ctx.consts = temperature, alpha, n, n_labelled
        kd_scale = alpha * temperature * temperature / n
        if alpha == 1.0:
            ctx.save_for_backward(log_q, log_p)
            return kl.mul_(kd_scale)
        log_r = s.log_softmax(-1)
        ce = F.nll_loss(log_r, labels, ignore_index=IGNORE, reduction="sum")  # Σ over labelled rows
        ctx.save_for_backward(log_q, log_p, log_r, labels)
        return kl.mul_(kd_scale).add_(ce, alpha=(1.0 - alpha) / n_labelled)

    @staticmethod
    def backward(ctx, grad: Tensor):
        temperature, alpha, n, n_labelled = ctx.consts
        log_q, log_p = ctx.saved_tensors[:2]
        out = log_q.exp().sub_(log_p.exp()).mul_(alpha * temperature / n)  # α·T/N · (q − p)
        if alpha != 1.0:
            log_r, labels = ctx.saved_tensors[2:]
            ce_scale = (1.0 - alpha) / n_labelled
            if n_labelled < n:  # unlabelled rows: no cross-entropy gradient
                keep = (labels != IGNORE)[:, None].to(log_r.dtype)
                r, rows, minus = log_r.exp().mul_(keep), labels.clamp_min(0)[:, None], keep.mul_(-ce_scale)
            else:
                r, rows, minus = log_r.exp(), labels[:, None], log_r.new_full((n, 1), -ce_scale)
            out.add_(r, alpha=ce_scale).scatter_add_(1, rows, minus)  # + (1 − α)/n · (softmax(s) − onehot(y))
        return out.mul_(grad), None, None, None, None, None


def can_fuse(s: Tensor, t: Tensor, n_labelled: int | None, alpha: float) -> bool:
    """The fused objective covers (N, C) float32 logits of equal shape with a known labelled count
    (some labelled when α < 1); everything else takes the op-by-op path."""
    return (s.dim() == 2 and s.shape == t.shape and s.dtype == torch.float32 and t.dtype == torch.float32
            and n_labelled is not None and (n_labelled > 0 or alpha == 1.0))


def kd_objective(s: Tensor, t: Tensor, labels: Tensor, temperature: float, alpha: float, n_labelled: int) -> Tensor:
    """α · T² · KL + (1 − α) · CE (mean over the `n_labelled` labelled rows), one node; see the module doc."""
    return _KDObjective.apply(s, t.detach(), labels, float(temperature), float(alpha), int(n_labelled))
