"""Cross-tokenizer token KD from hidden states, chunked over aligned spans.

The student reads the text as T tokens, the teacher as T' tokens of another vocabulary;
`cross_tokenizer.align_spans` cut it into spans covering the same characters and gave every
token its span id. For span k, with tokens t_1..t_m on one side, the merged log-probability
over candidate last tokens y (GOLD's chain-rule merge) is

    log p(t_1 | ctx) + ... + log p(t_{m-1} | ctx, t_<m-1) + log p(y | ctx, t_<m)     (V,)

so each side needs: the full distribution at one position per span (the one that predicts
the span's last token) and one scalar per other token of the span. Both come from the final
hidden states through the vocabulary projection `head`, applied only to the rows needed and
in chunks of rows (the student's under activation checkpointing), so no (B, T, V) tensor of
either vocabulary exists: peak memory is one chunk's (rows, V) of each side.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from kdforge.losses.cross_tokenizer import SharedVocab, hybrid_per_row, uld_per_row

Head = Callable[[Tensor], Tensor]
KINDS = ("gold", "uld")


def span_ends(span: Tensor, n_spans: int) -> tuple[Tensor, Tensor]:
    """span (B, T) span id per token (-1: none) -> (first, last) token position of each span
    (B, n_spans), -1 where a span has no token on this side."""
    b, t = span.shape
    col = torch.where(span >= 0, span, n_spans)  # tokens of no span go to a spare column
    pos = torch.arange(t, device=span.device).expand(b, t)
    first = torch.full((b, n_spans + 1), t, dtype=torch.long, device=span.device)
    first = first.scatter_reduce(1, col, pos, "amin")[:, :n_spans]
    last = torch.full((b, n_spans + 1), -1, dtype=torch.long, device=span.device)
    last = last.scatter_reduce(1, col, pos, "amax")[:, :n_spans]
    return torch.where(first == t, -1, first), last


def scored_spans(s_span: Tensor, t_span: Tensor, s_mask: Tensor) -> tuple[Tensor, tuple, tuple]:
    """Which spans (B, K) are scored: both sides have tokens, neither side's first token opens
    the sequence (nothing predicts it), and every student token of the span is a target
    (s_mask (B, T)). Returns (valid, (first, last) student, (first, last) teacher)."""
    n = int(max(s_span.max(), t_span.max())) + 1
    (s_first, s_last), (t_first, t_last) = span_ends(s_span, n), span_ends(t_span, n)
    col = torch.where(s_span >= 0, s_span, n)
    targets = torch.ones(s_span.shape[0], n + 1, device=s_span.device)
    targets = targets.scatter_reduce(1, col, s_mask.float(), "amin")[:, :n]
    valid = (s_first >= 1) & (t_first >= 1) & (targets > 0)
    return valid, (s_first, s_last), (t_first, t_last)


def _token_logprobs(head: Head, h: Tensor, targets: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(head(h).float() / temperature, -1).gather(-1, targets[:, None])[:, 0]


def _inner_tokens(span: Tensor, valid: Tensor, last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(batch rows, positions) of every token of a scored span but its last, and span (B, T) clamped to >= 0."""
    safe = span.clamp_min(0)
    pos = torch.arange(span.shape[1], device=span.device).expand_as(span)
    inner = (span >= 0) & valid.gather(1, safe) & (pos != last.gather(1, safe))  # (B, T)
    bi, ti = inner.nonzero(as_tuple=True)
    return bi, ti, safe


def stored_prefix(token_logp: Tensor, span: Tensor, valid: Tensor, last: Tensor) -> Tensor:
    """`prefix_logprobs` from stored log-probabilities: token_logp (B, T) of each token given the ones
    before it (a cross-tokenizer teacher store's, kdforge.teacher.TokenLogprobTeacher) -> (B, K)."""
    bi, ti, safe = _inner_tokens(span, valid, last)
    out = token_logp.new_zeros(valid.shape, dtype=torch.float32)
    return out.index_put((bi, safe[bi, ti]), token_logp[bi, ti].float(), accumulate=True)


def prefix_logprobs(head: Head, hidden: Tensor, ids: Tensor, span: Tensor, valid: Tensor, last: Tensor,
                    temperature: float, rows: int) -> Tensor:
    """Σ log p(token) over each scored span's tokens but its last: (B, K), chunks of `rows`."""
    b, k = valid.shape
    out = hidden.new_zeros(b, k, dtype=torch.float32)
    bi, ti, safe = _inner_tokens(span, valid, last)
    if len(bi) == 0:
        return out + hidden.sum() * 0.0
    parts = []
    for start in range(0, len(bi), rows):
        rb, rt = bi[start : start + rows], ti[start : start + rows]
        h = hidden[rb, rt - 1]  # (r, D): the position that predicts token rt
        if h.requires_grad:
            parts.append(checkpoint(_token_logprobs, head, h, ids[rb, rt], temperature, use_reentrant=False))
        else:
            parts.append(_token_logprobs(head, h, ids[rb, rt], temperature))
    return out.index_put((bi, safe[bi, ti]), torch.cat(parts), accumulate=True)


def cross_token_kd(s_head: Head, s_hidden: Tensor, s_ids: Tensor, s_span: Tensor, s_mask: Tensor,
                   t_head: Head, t_hidden: Tensor, t_ids: Tensor, t_span: Tensor, *, vocab: SharedVocab | None,
                   kind: str = "gold", temperature: float = 1.0, chunk_size: int | None = 128,
                   top_k: int | None = None, t_token_logp: Tensor | None = None) -> Tensor:
    """T² · mean over scored spans of the cross-tokenizer divergence between merged span distributions.

    s_hidden (B, T, D) student final hidden states (head(s_hidden) = next-token logits (B, T, Vs));
    s_ids (B, T) its tokens; s_span (B, T) span id per token (-1: none); s_mask (B, T) the tokens
    that are targets. t_* the same for the teacher (B, T', D'), no gradient; from a teacher store
    t_hidden is its SparseTarget (B, T', k) and t_head its `dense` (rows -> logits), and
    t_token_logp (B, T') the stored log-probability of each teacher token given those before it
    at `temperature` (the chain-rule prefixes are read from it instead of projected). kind: gold (`hybrid_per_row`,
    needs `vocab`) or uld (`uld_per_row` on the whole vocabularies). chunk_size: spans per batch
    row and chunk (rows of B · chunk_size per chunk); None: one chunk. top_k: ULD on the k
    largest probabilities of each side (`uld_per_row`); None: exact.
    With one shared tokenizer (every span one token, vocab.identity) gold equals the forward-KL
    token KD of `soft_target_kl`, value and gradient.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cross-tokenizer loss {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "gold" and vocab is None:
        raise ValueError("the gold loss needs the shared vocabulary (vocab)")
    t_hidden = t_hidden.detach() if isinstance(t_hidden, Tensor) else t_hidden  # a store's SparseTarget: no graph
    valid, (_, s_last), (_, t_last) = scored_spans(s_span, t_span, s_mask)
    rows = (chunk_size or s_span.shape[1] + t_span.shape[1]) * s_span.shape[0]
    with torch.no_grad():
        t_prefix = prefix_logprobs(t_head, t_hidden, t_ids, t_span, valid, t_last, temperature, rows) if t_token_logp is None \
            else stored_prefix(t_token_logp, t_span, valid, t_last)
    s_prefix = prefix_logprobs(s_head, s_hidden, s_ids, s_span, valid, s_last, temperature, rows)
    bi, ki = valid.nonzero(as_tuple=True)
    if len(bi) == 0:  # nothing to learn from; keep the graph connected for the caller's backward
        return s_hidden.sum() * 0.0 + s_prefix.sum() * 0.0
    s_h, t_h = s_hidden[bi, s_last[bi, ki] - 1], t_hidden[bi, t_last[bi, ki] - 1]  # (N, D): predict each span's last token
    s_pre, t_pre = s_prefix[bi, ki], t_prefix[bi, ki]  # (N,)

    def per_row(sh: Tensor, sp: Tensor, th: Tensor, tp: Tensor) -> Tensor:
        ls = F.log_softmax(s_head(sh).float() / temperature, -1) + sp[:, None]  # (r, Vs) merged, unnormalised
        with torch.no_grad():
            lt = F.log_softmax(t_head(th).float() / temperature, -1) + tp[:, None]  # (r, Vt)
        return hybrid_per_row(ls, lt, vocab, top_k) if kind == "gold" else uld_per_row(ls.exp(), lt.exp(), top_k)

    total = s_h.new_zeros((), dtype=torch.float32)
    for start in range(0, len(bi), rows):
        part = (s_h[start : start + rows], s_pre[start : start + rows], t_h[start : start + rows], t_pre[start : start + rows])
        if s_h.requires_grad and len(bi) > rows:  # several chunks: free each chunk's (r, V) until the backward
            total = total + checkpoint(per_row, *part, use_reentrant=False).sum()
        else:
            total = total + per_row(*part).sum()
    return total / len(bi) * temperature**2


__all__ = ["KINDS", "cross_token_kd", "prefix_logprobs", "scored_spans", "span_ends", "stored_prefix"]
