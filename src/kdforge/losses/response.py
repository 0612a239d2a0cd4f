"""Response-based distillation losses: functions of logits, nothing else.

All functions accept logits of shape (B, C) or (B, T, V). An optional `mask`
of shape (B,) or (B, T) (1 = keep, 0 = padding/prompt) excludes positions; the
result is the mean over kept positions (per-position sums over the class axis).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _f32(t: Tensor) -> Tensor:
    """float32 (the losses' precision under autocast too), without a no-op cast call when it already is."""
    return t if t.dtype == torch.float32 else t.float()


def _reduce(per_pos: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    """per_pos: (B,) or (B, T) per-position loss -> scalar mean over kept positions."""
    if reduction == "none":
        return per_pos if mask is None else per_pos * mask.to(per_pos.dtype)
    if mask is None:
        return per_pos.mean()
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum() / m.sum().clamp_min(1.0)


def soft_target_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hinton et al. 2015: T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), mean over positions.

    For (B, C) logits and no mask this equals
    `F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T²`.
    The T² keeps gradient magnitudes comparable across temperatures.
    """
    _check_pair(student_logits, teacher_logits)
    log_p_s = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
    log_p_t = F.log_softmax(_f32(teacher_logits) / temperature, dim=-1)
    per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B,) or (B, T)
    return _reduce(per_pos, mask, reduction) * temperature**2


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.8,
) -> Tensor:
    """The classic objective: α · T² · KL(p_t^T ‖ p_s^T) + (1 − α) · CE(z_s, y).

    student_logits, teacher_logits: (B, C); labels: (B,) class ids.
    """
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    ce = F.cross_entropy(student_logits, labels)
    return alpha * kd + (1.0 - alpha) * ce


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """KL(p_s ‖ p_t), mode-seeking (MiniLLM, Gu et al. 2024). Shapes as above."""
    _check_pair(student_logits, teacher_logits)
    log_p_s = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
    log_p_t = F.log_softmax(_f32(teacher_logits) / temperature, dim=-1)
    return _reduce((log_p_s.exp() * (log_p_s - log_p_t)).sum(-1), mask, "mean")


def jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Generalized JSD (GKD, Agarwal et al. 2024): β·KL(p_t ‖ m) + (1−β)·KL(p_s ‖ m), m = β·p_t + (1−β)·p_s.

    β = 0 gives forward KL(p_t ‖ p_s) and β = 1 reverse KL(p_s ‖ p_t), as in TRL's
    generalized_jsd_loss; 0 < β < 1 is the symmetric, bounded family.
    """
    _check_pair(student_logits, teacher_logits)
    log_p_s = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
    log_p_t = F.log_softmax(_f32(teacher_logits) / temperature, dim=-1)
    if beta == 0.0:
        per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    elif beta == 1.0:
        per_pos = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)
    else:
        b = torch.tensor(beta, dtype=log_p_s.dtype, device=log_p_s.device)
        log_m = torch.logsumexp(torch.stack([log_p_t + b.log(), log_p_s + (1 - b).log()]), dim=0)
        kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(-1)
        kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(-1)
        per_pos = beta * kl_t + (1 - beta) * kl_s
    return _reduce(per_pos, mask, "mean")


def tvd(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Total variation distance ½·Σ|p_t − p_s| (Wen et al. 2023, f-divergence KD). In [0, 1]."""
    _check_pair(student_logits, teacher_logits)
    p_s = F.softmax(_f32(student_logits) / temperature, dim=-1)
    p_t = F.softmax(_f32(teacher_logits) / temperature, dim=-1)
    return _reduce(0.5 * (p_t - p_s).abs().sum(-1), mask, "mean")


def _check_pair(s: Tensor, t: Tensor) -> None:
    if s.shape != t.shape:
        raise ValueError(
            f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ in shape "
            "(do teacher and student predict the same classes / vocabulary?)"
        )
