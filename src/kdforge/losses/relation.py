"""Relation-based distillation: match how samples relate, not the samples themselves."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """e: (B, D) -> (B, B) Euclidean distances."""
    sq = e.pow(2).sum(1)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp_min(eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RKD distance loss (Park et al. 2019): smooth-L1 between pairwise distances,
    each normalised by its mean over distinct pairs. e_s: (B, D_s), e_t: (B, D_t)."""
    if e_s.shape[0] < 2:
        raise ValueError("rkd_distance needs a batch of at least 2 samples")
    d_s = _pairwise_distances(e_s.float())
    d_t = _pairwise_distances(e_t.float())
    off = ~torch.eye(len(e_s), dtype=torch.bool, device=e_s.device)
    d_s = d_s / d_s[off].mean().clamp_min(1e-12)
    d_t = d_t / d_t[off].mean().clamp_min(1e-12)
    return F.smooth_l1_loss(d_s[off], d_t[off])


def _angles(e: Tensor) -> Tensor:
    """e: (B, D) -> (B, B, B) cosines of the angle at vertex j between i and k."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # (B, B, D): e[i] - e[j] at [j, i]
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2))


def rkd_angle(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RKD angle loss (Park et al. 2019): smooth-L1 between the cosines of all triplet
    angles. e_s: (B, D_s), e_t: (B, D_t). Cost O(B³·D)."""
    if e_s.shape[0] < 3:
        raise ValueError("rkd_angle needs a batch of at least 3 samples")
    return F.smooth_l1_loss(_angles(e_s.float()), _angles(e_t.float()))


def similarity_preserving(e_s: Tensor, e_t: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): ‖norm(G_s) − norm(G_t)‖²_F / B²,
    G = E·Eᵀ with rows L2-normalised. e_s: (B, ...), e_t: (B, ...)."""
    b = e_s.shape[0]
    g_s = F.normalize(e_s.reshape(b, -1).float() @ e_s.reshape(b, -1).float().t(), dim=1)
    g_t = F.normalize(e_t.reshape(b, -1).float() @ e_t.reshape(b, -1).float().t(), dim=1)
    return (g_s - g_t).pow(2).sum() / (b * b)


def similarity_matrix_loss(e_s: Tensor, e_t: Tensor) -> Tensor:
    """MSE between in-batch cosine-similarity matrices (embedding distillation). (B, D_s), (B, D_t)."""
    s = F.normalize(e_s.float(), dim=-1)
    t = F.normalize(e_t.float(), dim=-1)
    return F.mse_loss(s @ s.t(), t @ t.t())
