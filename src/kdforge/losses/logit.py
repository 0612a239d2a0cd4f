"""Logit losses that improve on vanilla KD for classification: DKD, logit standardization, DIST.

All take (B, C) logits; `weight` (B,) optionally weights samples (confidence
filtering), the result is the weighted mean over samples.

- DKD, Zhao et al. CVPR 2022 ("Decoupled Knowledge Distillation"): the KD loss
  splits into a target-class term (TCKD, binary KL on p(target) vs the rest) and
  a non-target term (NCKD, KL between distributions over the non-target classes);
  vanilla KD couples NCKD to (1 − p_t(target)), DKD weights them freely (α, β).
- Logit standardization, Sun et al. CVPR 2024: z-score each sample's logits before
  the softened softmax, so the student matches the teacher's logit *relations*
  rather than their magnitude (a small student cannot reach a big teacher's range).
- DIST, Huang et al. NeurIPS 2022: 1 − Pearson correlation between student and
  teacher probabilities, across classes (inter) and across the batch (intra);
  a relation match that tolerates a stronger teacher's sharper outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """(…, C) -> per-row z-scores: (z − mean(z)) / std(z) over the class axis (Sun et al. 2024, Alg. 1)."""
    z = logits.float()
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def _weighted_mean(per_sample: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return per_sample.mean()
    w = weight.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1e-12)


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Σ_c p · (log p − log q) per row, with 0 · log 0 = 0. (B, K) -> (B,)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float | Tensor = 8.0,
    temperature: float = 4.0,
    weight: Tensor | None = None,
) -> Tensor:
    """α · TCKD + β · NCKD, both · T² (Zhao et al. 2022, Eq. 7; defaults of their CIFAR-100 setup).

    TCKD = KL([p_t(y), 1 − p_t(y)] ‖ [p_s(y), 1 − p_s(y)]) with p = softmax(z/T);
    NCKD = KL(p̂_t ‖ p̂_s), p̂ = softmax over the classes other than y.
    student_logits, teacher_logits: (B, C); labels: (B,). With α = 1, β = 1 − p_t(y)
    per sample this is exactly vanilla KD (tested).
    """
    s, t = student_logits.float() / temperature, teacher_logits.float() / temperature
    target = F.one_hot(labels, s.shape[-1]).bool()  # (B, C)
    log_p_s, log_p_t = F.log_softmax(s, -1), F.log_softmax(t, -1)

    def binary(log_p: Tensor) -> Tensor:  # (B, 2): log p(y), log(1 − p(y))
        log_y = log_p.masked_select(target)
        log_rest = torch.logsumexp(log_p.masked_fill(target, float("-inf")), -1)
        return torch.stack([log_y, log_rest], -1)

    tckd = _kl_rows(binary(log_p_t), binary(log_p_s))
    # non-target distributions: drop the target class from the softmax
    nt_s = F.log_softmax(s.masked_fill(target, float("-inf")), -1)
    nt_t = F.log_softmax(t.masked_fill(target, float("-inf")), -1)
    nckd = _kl_rows(nt_t.masked_fill(target, 0.0), nt_s.masked_fill(target, 0.0))
    per = alpha * tckd + beta * nckd  # beta may be a (B,) tensor
    return _weighted_mean(per, weight) * temperature**2


def standardized_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0, weight: Tensor | None = None
) -> Tensor:
    """T² · KL(softmax(Z(z_t)/T) ‖ softmax(Z(z_s)/T)), Z = per-sample z-score (Sun et al. 2024)."""
    log_p_s = F.log_softmax(standardize(student_logits) / temperature, -1)
    log_p_t = F.log_softmax(standardize(teacher_logits) / temperature, -1)
    return _weighted_mean(_kl_rows(log_p_t, log_p_s), weight) * temperature**2


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of a with the same row of b. (N, K) -> (N,)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """T² · (β · inter + γ · intra) (Huang et al. 2022, Eq. 9).

    inter = 1 − mean_i Pearson(p_s[i, :], p_t[i, :])  (each sample's class ranking)
    intra = 1 − mean_c Pearson(p_s[:, c], p_t[:, c])  (each class across the batch)
    p = softmax(z/T), logits (B, C). `weight` weights samples in the inter term and
    drops samples with weight 0 from the intra term.
    """
    p_s = F.softmax(student_logits.float() / temperature, -1)
    p_t = F.softmax(teacher_logits.float() / temperature, -1)
    inter = 1 - _weighted_mean(_pearson_rows(p_s, p_t), weight)
    if weight is not None:
        keep = weight > 0
        p_s, p_t = p_s[keep], p_t[keep]
    intra = 1 - _pearson_rows(p_s.T, p_t.T).mean() if len(p_s) > 1 else p_s.new_zeros(())
    return temperature**2 * (beta * inter + gamma * intra)
