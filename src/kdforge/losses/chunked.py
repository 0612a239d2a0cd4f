"""Memory-saving and sparse variants of the token-level divergences.

`chunked(fn, ...)` evaluates a plain divergence from `response.py` over slices of
the sequence axis and combines them into exactly the plain result: each slice's
masked mean is turned back into a masked sum, and the sums are divided by the
total number of kept positions. With a 49k vocabulary the float32 softmax
intermediates of a (B, T, V) batch dominate memory; chunking keeps only
(B, chunk, V) of them alive at once (torchtune's ForwardKLWithChunkedOutputLoss
does the same for forward KL).

`chunked_head(head, hidden, mask, losses)` goes one step further for language models:
the vocabulary projection itself runs per chunk of positions, from the final hidden
states, under activation checkpointing, so neither the forward nor the backward ever
holds more than one chunk's (B, chunk, V) logits: peak memory scales with the chunk,
not with T × V (the recomputation costs one more head matmul per chunk).

Sparse teachers (top-k or sampled ids from the teacher-output store) are in `sparse.py`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from kdforge.losses.kinds import KINDS, TOKEN_LOGITS

Divergence = Callable[..., Tensor]


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
    chunk_size: int | None = 128,
    **options,
) -> Tensor:
    """A registered logit divergence by kind (kd or forward_kl, reverse_kl, jsd, tvd, ...), chunked over T
    when chunk_size is set. `options` are the kind's term fields (temperature, beta...); others are ignored."""
    kind = "kd" if kind == "forward_kl" else kind
    valid = KINDS.names(TOKEN_LOGITS)
    if kind not in valid or KINDS.get(kind).fn is None:
        raise ValueError(f"unknown divergence {kind!r}; valid: {', '.join(k for k in valid if KINDS.get(k).fn is not None)}")
    spec = KINDS.get(kind)
    kwargs = {k: v for k, v in options.items() if k in spec.options}
    fn = spec.fn
    if chunk_size is None:
        return fn(student_logits, teacher_logits, mask=mask, **kwargs)
    return chunked(fn, student_logits, teacher_logits, mask, chunk_size, **kwargs)


def chunked_head(
    head: Callable[[Tensor], Tensor],
    hidden: Tensor,
    mask: Tensor,
    losses: Callable[[Tensor, slice], dict[str, Tensor]],
    chunk_size: int = 128,
) -> dict[str, Tensor]:
    """Token losses from hidden states (B, T, D), the projection `head` (D -> V) applied per chunk.

    losses(logits (B, c, V), positions) -> {name: masked mean over the chunk's kept positions};
    mask (B, T) says which positions count. Returns {name: masked mean over all T}, equal in
    value and gradient (w.r.t. hidden and the head's weights) to `losses(head(hidden), :)`.
    Each chunk runs under `torch.utils.checkpoint`, so its logits are freed after the forward
    and recomputed in the backward.
    """
    b, t, _ = hidden.shape
    mask = mask.to(torch.float32)
    total = mask.sum()
    names: list[str] = []

    def chunk_losses(h: Tensor, positions: slice) -> tuple[Tensor, ...]:
        out = losses(head(h), positions)  # (B, c, V) lives only inside this call
        names[:] = list(out)
        return tuple(out.values())

    if total == 0:  # nothing to learn from: zeros, still connected to the graph
        return {k: v * 0.0 for k, v in losses(head(hidden[:, :1]), slice(0, 1)).items()}
    if t <= chunk_size:  # one chunk: nothing to save by recomputing it
        return losses(head(hidden), slice(0, t))
    sums: list[Tensor] | None = None
    for start in range(0, t, chunk_size):
        positions = slice(start, start + chunk_size)
        kept = mask[:, positions].sum()
        if kept == 0:
            continue
        parts = checkpoint(chunk_losses, hidden[:, positions], positions, use_reentrant=False)
        sums = [p * kept for p in parts] if sums is None else [s + p * kept for s, p in zip(sums, parts)]  # mean -> sum
    return {name: s / total for name, s in zip(names, sums)}


__all__ = ["chunked", "chunked_head", "divergence"]
