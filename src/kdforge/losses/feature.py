"""Feature-based distillation: hints (FitNets), projections, attention transfer."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def hint_loss(h_s: Tensor, h_t: Tensor) -> Tensor:
    """FitNets (Romero et al. 2015) hint: mean squared error ‖h_s − h_t‖² / numel.

    h_s, h_t: same shape, e.g. (B, D), (B, T, D) or (B, C, H, W). Project h_s
    first (see `Projection`) when widths differ.
    """
    if h_s.shape != h_t.shape:
        raise ValueError(f"hint: student {tuple(h_s.shape)} vs teacher {tuple(h_t.shape)}; add a Projection")
    return F.mse_loss(h_s.float(), h_t.float())


def cosine_loss(h_s: Tensor, h_t: Tensor) -> Tensor:
    """1 − cos(h_s, h_t) over the last axis, averaged. h_s, h_t: (..., D)."""
    return (1.0 - F.cosine_similarity(h_s.float(), h_t.float(), dim=-1)).mean()


class Projection(nn.Module):
    """Learned map from the student's width to the teacher's.

    Linear for (B, D) and (B, T, D) features; a 1×1 convolution for (B, C, H, W)
    maps, with bilinear resizing when the spatial sizes differ.
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        self.conv = len(student_shape) == 4
        if self.conv:
            self.proj: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False)
            self.size = tuple(teacher_shape[2:])
        else:
            self.proj = nn.Linear(student_shape[-1], teacher_shape[-1], bias=False)

    def forward(self, h: Tensor) -> Tensor:
        h = self.proj(h)
        if self.conv and tuple(h.shape[2:]) != self.size:
            h = F.interpolate(h, size=self.size, mode="bilinear", align_corners=False)
        return h


def attention_map(h: Tensor, p: int = 2) -> Tensor:
    """Zagoruyko & Komodakis 2017: spatial attention of a (B, C, H, W) map -> (B, H·W), L2-normalised."""
    a = h.float().pow(p).mean(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_transfer(h_s: Tensor, h_t: Tensor, p: int = 2) -> Tensor:
    """Attention transfer: mean squared distance of normalised attention maps.

    h_s: (B, C_s, H, W), h_t: (B, C_t, H', W'); channel counts may differ, and the
    student map is resized to the teacher's spatial size if needed.
    """
    if h_s.dim() != 4 or h_t.dim() != 4:
        raise ValueError("attention_transfer expects (B, C, H, W) feature maps")
    if h_s.shape[2:] != h_t.shape[2:]:
        h_s = F.interpolate(h_s, size=h_t.shape[2:], mode="bilinear", align_corners=False)
    return (attention_map(h_s, p) - attention_map(h_t, p)).pow(2).mean()


def attention_distribution_kl(attn_s: Tensor, attn_t: Tensor, eps: float = 1e-12) -> Tensor:
    """MiniLM (Wang et al. 2020): KL between self-attention distributions.

    attn_s, attn_t: (B, heads, T, T) rows that sum to 1; head counts must match
    (average teacher heads first otherwise). Mean over batch, heads and rows.
    """
    if attn_s.shape != attn_t.shape:
        attn_t = attn_t.mean(1, keepdim=True).expand_as(attn_s) if attn_s.shape[0] == attn_t.shape[0] else attn_t
    a_t = attn_t.float().clamp_min(eps)
    a_s = attn_s.float().clamp_min(eps)
    return (a_t * (a_t.log() - a_s.log())).sum(-1).mean()


def flatten_features(h: Tensor) -> Tensor:
    """(B, ...) -> (B, D): the per-sample embedding relation losses work on."""
    return h.reshape(h.shape[0], -1) if h.dim() != 3 else h.mean(1)


__all__ = [
    "hint_loss",
    "cosine_loss",
    "Projection",
    "attention_map",
    "attention_transfer",
    "attention_distribution_kl",
    "flatten_features",
]
