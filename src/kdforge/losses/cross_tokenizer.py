"""Cross-tokenizer distillation: a teacher and a student that do not share a vocabulary.

Three pieces, each a plain function:

- `align_spans`: the two tokenizations of one text, cut into spans that cover the same
  characters (the text exactly once, in order). A cut is a character position where both
  tokenizers end a token and no later token of either starts before it (GOLD's byte-offset
  walk, Patiño et al. 2025, made robust to overlapping offsets of byte-level tokens that
  split one character). A span holds one or more tokens of each side.
- `shared_vocab`: the tokens both vocabularies hold, found by comparing token strings after
  undoing the space markers (byte-level `Ġ`, sentencepiece `▁`, WordPiece `##`).
- The divergences on one aligned span, given each side's merged log-probabilities:
  `uld_loss` (Boizard et al. 2024, ULD: the L1 (Wasserstein-1) distance between the two
  probability vectors sorted in decreasing order, zero-padded to a common length) and
  `hybrid_loss` (GOLD: exact KL on the shared tokens, ULD on the rest, weighted by the
  fraction of the teacher's vocabulary that is shared).

A span of several tokens is scored by GOLD's chain-rule ("bayesian") merge: the full
distribution at the span's last token times the probabilities of the tokens before it,
log p(t_1..t_{m-1}) + log p(y | ctx, t_1..t_{m-1}) for every candidate last token y.
`cross_chunked.py` computes these per chunk of spans from hidden states.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple, Sequence

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------
# alignment


def _cuts(offsets: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """(running end of each token, the ends after which no later token starts earlier)."""
    ends, run = [], 0
    for _, e in offsets:
        run = max(run, int(e))
        ends.append(run)
    cuts, later_start = [], None  # later_start: the smallest start of any later token
    for i in range(len(offsets) - 1, -1, -1):
        if later_start is None or later_start >= ends[i]:
            cuts.append(ends[i])
        s, e = int(offsets[i][0]), int(offsets[i][1])
        if e > s:  # an empty token (a special token at (0, 0)) starts nothing
            later_start = s if later_start is None else min(later_start, s)
    return ends, cuts


def align_spans(s_offsets: Sequence[Sequence[int]], t_offsets: Sequence[Sequence[int]],
                text_len: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Spans of a text that both tokenizations cover with whole tokens.

    s_offsets, t_offsets: (start, end) character offsets of each student / teacher token in
    the text (a fast tokenizer's offset mapping); text_len: the text's length in characters.
    Returns (student span id per token, teacher span id per token, spans as (start, end)):
    the spans partition [0, text_len) in order, and every token lies inside its span. The
    whitespace a tokenizer leaves uncovered (WordPiece) belongs to the span after it.
    """
    s_ends, s_cuts = _cuts(s_offsets)
    t_ends, t_cuts = _cuts(t_offsets)
    common = sorted((set(s_cuts) & set(t_cuts)) - {0})
    if not common or common[-1] < text_len:
        common.append(text_len)  # trailing text covered by one side only (or by neither)
    elif common[-1] > text_len:
        raise ValueError(f"token offsets run to {common[-1]}, past the text's {text_len} characters")
    spans = list(zip([0, *common[:-1]], common))
    return [bisect_left(common, e) for e in s_ends], [bisect_left(common, e) for e in t_ends], spans


# ---------------------------------------------------------------------------------------------
# shared vocabulary


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character of each byte (byte-level BPE vocabularies), inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DECODER = _byte_decoder()
STYLES = ("byte_level", "metaspace", "wordpiece", "plain")


def token_text(token: str, style: str) -> bytes | None:
    """The UTF-8 bytes a vocabulary entry stands for, with a leading space where the entry
    marks one; None when it cannot be told. style: byte_level (GPT-2 / Llama-3 / Qwen / SmolLM:
    `Ġ` is a space, every character one byte), metaspace (sentencepiece: `▁` is a space,
    `<0xNN>` a byte), wordpiece (BERT: `##` continues a word, anything else starts one after a
    space, except a lone punctuation mark) or plain (the string itself)."""
    if style == "byte_level":
        try:
            return bytes(BYTE_DECODER[c] for c in token)
        except KeyError:
            return None
    if style == "metaspace":
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                return bytes([int(token[3:5], 16)])
            except ValueError:
                return None
        return token.replace("▁", " ").encode()
    if style == "wordpiece":
        if token.startswith("##"):
            return token[2:].encode()
        return token.encode() if len(token) == 1 and not token.isalnum() else (" " + token).encode()
    if style == "plain":
        return token.encode()
    raise ValueError(f"unknown token style {style!r}; valid: {', '.join(STYLES)}")


class SharedVocab(NamedTuple):
    """Which student ids and teacher ids stand for the same string (s_ids[m] <-> t_ids[m]), the
    ids of each side left over (s_rest, t_rest), and the weight GOLD gives the exact-KL part:
    the shared fraction of the teacher's vocabulary (the ULD part gets 1 - weight)."""

    s_ids: Tensor
    t_ids: Tensor
    s_rest: Tensor
    t_rest: Tensor
    weight: float
    identity: bool  # same ids, same order, nothing left over: the plain KL applies unindexed


def _canonical(tokens: Sequence[str], style: str, special: set[str]) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for i, tok in enumerate(tokens):
        if tok is None:
            continue
        key = ("special", tok) if tok in special else ("text", token_text(tok, style))
        if key[1] is not None:
            out.setdefault(key, i)  # several ids for one string: the first
    return out


def shared_vocab(s_tokens: Sequence[str], t_tokens: Sequence[str], s_style: str = "plain", t_style: str = "plain",
                 s_special: set[str] = frozenset(), t_special: set[str] = frozenset(),
                 s_size: int | None = None, t_size: int | None = None) -> SharedVocab:
    """Match two vocabularies by what their entries spell.

    s_tokens / t_tokens: each side's token string by id (None for an unused id); styles: see
    `token_text`; special tokens match only an identical special token; s_size / t_size: the
    models' output sizes when they exceed the tokenizers' (padding rows match nothing).
    """
    s_size, t_size = s_size or len(s_tokens), t_size or len(t_tokens)
    if list(s_tokens) == list(t_tokens) and s_style == t_style and s_size == t_size:
        ids = torch.arange(t_size)
        empty = torch.zeros(0, dtype=torch.long)
        return SharedVocab(ids, ids, empty, empty, 1.0, True)
    s_map = _canonical(s_tokens, s_style, set(s_special))
    pairs = sorted((t_id, s_map[key]) for key, t_id in _canonical(t_tokens, t_style, set(t_special)).items() if key in s_map)
    t_ids = torch.tensor([t for t, _ in pairs], dtype=torch.long)
    s_ids = torch.tensor([s for _, s in pairs], dtype=torch.long)

    def rest(ids: Tensor, size: int) -> Tensor:
        keep = torch.ones(size, dtype=torch.bool)
        keep[ids] = False
        return keep.nonzero()[:, 0]

    return SharedVocab(s_ids, t_ids, rest(s_ids, s_size), rest(t_ids, t_size), len(pairs) / t_size, False)


# ---------------------------------------------------------------------------------------------
# divergences on aligned spans


def _masked_mean(per_row: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return per_row.mean()
    m = mask.to(per_row.dtype)
    return (per_row * m).sum() / m.sum().clamp_min(1.0)


def uld_distance(p_student_sorted: Tensor, p_teacher_sorted: Tensor) -> Tensor:
    """Σ_i |a_i − b_i| of two probability vectors sorted in decreasing order, the shorter one
    zero-padded: (..., Vs), (..., Vt) -> (...). Boizard et al. 2024, eq. 3 (W1 of the sorted vectors)."""
    vs, vt = p_student_sorted.shape[-1], p_teacher_sorted.shape[-1]
    if vs < vt:
        p_student_sorted = torch.nn.functional.pad(p_student_sorted, (0, vt - vs))
    elif vt < vs:
        p_teacher_sorted = torch.nn.functional.pad(p_teacher_sorted, (0, vs - vt))
    return (p_student_sorted - p_teacher_sorted).abs().sum(-1)


def uld_loss(p_student: Tensor, p_teacher: Tensor, mask: Tensor | None = None, top_k: int | None = None) -> Tensor:
    """ULD between (possibly unnormalised) probabilities (N, Vs) and (N, Vt) of aligned
    positions: sorted, zero-padded L1, mean over the rows mask (N,) keeps. Zero when one
    vector is a permutation of the other (up to the zero padding). top_k: see `uld_per_row`."""
    return _masked_mean(uld_per_row(p_student, p_teacher, top_k), mask)


def uld_per_row(p_student: Tensor, p_teacher: Tensor, top_k: int | None = None) -> Tensor:
    """(N, Vs), (N, Vt) -> (N,) ULD per row. With top_k, the k largest of each side are compared
    exactly and the rest by the difference of their masses, |Σ tail_s − Σ tail_t|: a lower bound
    of the exact tail L1 (equal when one tail dominates the other), at the cost of a top-k
    instead of a sort of the whole vocabulary."""
    vs, vt = p_student.shape[-1], p_teacher.shape[-1]
    if vs == 0 or vt == 0:
        return p_student.sum(-1) * 0.0
    if top_k is None or top_k >= max(vs, vt):
        return uld_distance(p_student.sort(-1, descending=True).values, p_teacher.sort(-1, descending=True).values)
    a, b = p_student.topk(min(top_k, vs), -1).values, p_teacher.topk(min(top_k, vt), -1).values
    tail = (p_student.sum(-1) - a.sum(-1)) - (p_teacher.sum(-1) - b.sum(-1))
    return uld_distance(a, b) + tail.abs()


def shared_kl(logp_student: Tensor, logp_teacher: Tensor, vocab: SharedVocab) -> Tensor:
    """Σ_m p_t(t_m) (log p_t(t_m) − log p_s(s_m)) over the shared pairs: (N, Vs), (N, Vt) -> (N,).
    The exact forward KL when the vocabularies are one (vocab.identity)."""
    if not vocab.identity:
        logp_student = logp_student[:, vocab.s_ids.to(logp_student.device)]
        logp_teacher = logp_teacher[:, vocab.t_ids.to(logp_teacher.device)]
    return (logp_teacher.exp() * (logp_teacher - logp_student)).sum(-1)


def hybrid_per_row(logp_student: Tensor, logp_teacher: Tensor, vocab: SharedVocab, top_k: int | None = None) -> Tensor:
    """GOLD's hybrid per aligned row: weight · KL on the shared ids + (1 − weight) · ULD on the rest."""
    kl = shared_kl(logp_student, logp_teacher, vocab)
    if vocab.identity or vocab.weight == 1.0:
        return kl
    rest = uld_per_row(logp_student[:, vocab.s_rest.to(logp_student.device)].exp(),
                       logp_teacher[:, vocab.t_rest.to(logp_teacher.device)].exp(), top_k)
    return vocab.weight * kl + (1.0 - vocab.weight) * rest


def hybrid_loss(logp_student: Tensor, logp_teacher: Tensor, vocab: SharedVocab, mask: Tensor | None = None,
                top_k: int | None = None) -> Tensor:
    """GOLD's hybrid loss between merged log-probabilities (N, Vs) and (N, Vt) of aligned spans,
    mean over the rows mask (N,) keeps. Equals the forward KL when the two vocabularies are one."""
    return _masked_mean(hybrid_per_row(logp_student, logp_teacher, vocab, top_k), mask)


__all__ = ["BYTE_DECODER", "STYLES", "SharedVocab", "align_spans", "hybrid_loss", "hybrid_per_row", "shared_kl",
           "shared_vocab", "token_text", "uld_distance", "uld_loss", "uld_per_row"]
