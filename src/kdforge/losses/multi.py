"""Losses over several networks' logits: ensembles of teachers and cohorts of peers.

Plain tensor functions, like the rest of `kdforge.losses`: no hooks, no config.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ensemble_soft_targets(teacher_logits: Tensor, temperature: float = 1.0, weights: Tensor | str | None = None) -> Tensor:
    """Multi-teacher soft targets: p = Σ_k w_k · softmax(z_k / T), a (B, C) distribution.

    teacher_logits: (K, B, C) from K teachers. weights: None (mean, w_k = 1/K),
    a (K,) tensor of fixed weights (normalised to sum 1), or "confidence": per
    sample, w_k ∝ the teacher's max probability at T = 1 (a more certain teacher
    counts more; cf. Du et al. 2020 / You et al. 2017 for confidence-weighted ensembles).
    """
    probs = F.softmax(teacher_logits.float() / temperature, dim=-1)  # (K, B, C)
    k = probs.shape[0]
    if weights is None:
        w = torch.full((k, 1), 1.0 / k, dtype=probs.dtype, device=probs.device)  # (K, 1)
    elif isinstance(weights, str):
        if weights != "confidence":
            raise ValueError(f"weights: expected None, a tensor or 'confidence', got {weights!r}")
        conf = F.softmax(teacher_logits.float(), dim=-1).amax(-1)  # (K, B)
        w = conf / conf.sum(0, keepdim=True)  # (K, B), each sample's weights sum to 1
    else:
        w = torch.as_tensor(weights, dtype=probs.dtype, device=probs.device)
        if w.shape != (k,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: need {k} non-negative weights with a positive sum, got {w.tolist()}")
        w = (w / w.sum())[:, None]  # (K, 1)
    return (w[..., None] * probs).sum(0)  # (B, C)


def kl_to_targets(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """T² · KL(p ‖ softmax(z_s / T)), batch mean, for a given target distribution p (B, C).

    Equals `soft_target_kl(z_s, z_t, T)` when p = softmax(z_t / T).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, C)
    p = target_probs.float()
    per = (p * (p.clamp_min(1e-12).log() - log_p_s)).sum(-1)  # (B,)
    return per.mean() * temperature**2


def mutual_learning_losses(logits: list[Tensor], labels: Tensor, temperature: float = 1.0, weight: float = 1.0) -> dict[str, Tensor]:
    """Deep mutual learning (Zhang et al. 2018), one objective per peer k of K:

        L_k = CE(z_k, y) + weight · 1/(K−1) · Σ_{j≠k} T² · KL(softmax(z_j/T) ‖ softmax(z_k/T))

    with the other peers' predictions detached, so L_k moves peer k only and the
    sum of all L_k updates every peer at once. logits: K tensors (B, C); labels: (B,).
    Returns {"peer{k}_ce", "peer{k}_kl"} (the kl already multiplied by `weight`).
    """
    k = len(logits)
    if k < 2:
        raise ValueError(f"mutual learning needs at least 2 peers, got {k}")
    out: dict[str, Tensor] = {}
    for i, z in enumerate(logits):
        targets = [F.softmax(o.detach().float() / temperature, dim=-1) for j, o in enumerate(logits) if j != i]
        kl = sum(kl_to_targets(z, p, temperature) for p in targets) / (k - 1)
        out[f"peer{i}_ce"] = F.cross_entropy(z, labels)
        out[f"peer{i}_kl"] = weight * kl
    return out
