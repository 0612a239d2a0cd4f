"""Memory-saving and sparse variants of the token-level divergences.

`chunked(fn, ...)` evaluates a plain divergence from `response.py` over slices of
the sequence axis and combines them into exactly the plain result: each slice's
masked mean is turned back into a masked sum, and the sums are divided by the
total number of kept positions. With a 49k vocabulary the float32 softmax
intermediates of a (B, T, V) batch dominate memory; chunking keeps only
(B, chunk, V) of them alive at once (torchtune's ForwardKLWithChunkedOutputLoss
does the same for forward KL).

`sparse_topk_kl` is forward KL against a teacher stored as its top-k logits and
vocabulary indices (the teacher-output store), renormalised over those k tokens.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.response import jsd, reverse_kl, soft_target_kl, tvd

Divergence = Callable[..., Tensor]

DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": soft_target_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "tvd": tvd,
}


def chunked(
    fn: Divergence,
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    chunk_size: int = 128,
    **kwargs,
) -> Tensor:
    """fn(student, teacher, mask=..., **kwargs) over (B, chunk, V) slices of (B, T, V) logits.

    Returns the same scalar as `fn` on the whole tensors (masked mean over kept
    positions), with the same gradients. mask: (B, T), 1 = position counts.
    """
    if student_logits.dim() != 3:
        return fn(student_logits, teacher_logits, mask=mask, **kwargs)
    b, t, _ = student_logits.shape
    if mask is None:
        mask = torch.ones(b, t, device=student_logits.device)
    mask = mask.to(torch.float32)
    total = mask.sum()
    if total == 0:  # nothing to learn from; keep the graph connected for the caller's backward
        return student_logits.sum() * 0.0
    out = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, t, chunk_size):
        m = mask[:, start : start + chunk_size]
        kept = m.sum()
        if kept == 0:
            continue
        part = fn(student_logits[:, start : start + chunk_size], teacher_logits[:, start : start + chunk_size], mask=m, **kwargs)
        out = out + part * kept  # masked mean -> masked sum
    return out / total


def divergence(
    kind: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int | None = 128,
) -> Tensor:
    """One of forward_kl | reverse_kl | jsd | tvd by name, chunked over T when chunk_size is set."""
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; valid: {', '.join(DIVERGENCES)}")
    kwargs: dict = {"temperature": temperature}
    if kind == "jsd":
        kwargs["beta"] = beta
    fn = DIVERGENCES[kind]
    if chunk_size is None:
        return fn(student_logits, teacher_logits, mask=mask, **kwargs)
    return chunked(fn, student_logits, teacher_logits, mask, chunk_size, **kwargs)


def sparse_topk_kl(
    student_logits: Tensor,
    topk_values: Tensor,
    topk_indices: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """T² · KL(p̂_t ‖ p_s) where p̂_t is the teacher softmax over its top-k tokens only.

    student_logits: (..., V); topk_values, topk_indices: (..., k) teacher logits and
    their vocabulary ids; mask: (...). The student is normalised over the full
    vocabulary, so mass it puts outside the teacher's top-k is penalised. With
    k = V this equals `soft_target_kl`.
    """
    if topk_values.shape != topk_indices.shape or topk_values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"top-k teacher {tuple(topk_values.shape)} / {tuple(topk_indices.shape)} does not fit "
            f"student logits {tuple(student_logits.shape)}"
        )
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, topk_indices.long())  # (..., k)
    log_p_t = F.log_softmax(topk_values.float() / temperature, dim=-1)  # (..., k)
    per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if mask is None:
        loss = per_pos.mean()
    else:
        m = mask.to(per_pos.dtype)
        loss = (per_pos * m).sum() / m.sum().clamp_min(1.0)
    return loss * temperature**2


def sparse_restricted(
    kind: str, student_logits: Tensor, topk_values: Tensor, topk_indices: Tensor, mask: Tensor | None = None, **kwargs
) -> Tensor:
    """Any divergence on the teacher's top-k support: student logits gathered at the
    teacher's indices, both renormalised over those k tokens. (..., V), (..., k), (..., k)."""
    gathered = student_logits.gather(-1, topk_indices.long())
    return divergence(kind, gathered, topk_values, mask, chunk_size=None, **kwargs)


__all__ = ["DIVERGENCES", "chunked", "divergence", "sparse_restricted", "sparse_topk_kl"]
