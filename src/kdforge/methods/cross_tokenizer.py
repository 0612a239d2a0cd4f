"""token_kd across tokenizers (`distill.lm.cross_tokenizer: uld | gold`).

The batch carries the text in both tokenizations with span ids (`data.paired`); the student
reads `input_ids`, the live teacher `teacher_ids`. The kd term becomes
α · T² · (mean over aligned spans of ULD or GOLD's hybrid) + (1 − α) · next-token CE, and
ce stays the student's own next-token cross-entropy. Both models' vocabulary projections run
from their final hidden states on the rows each span needs, in chunks (`losses.cross_chunked`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.data.paired import check_alignable, vocab_pair
from kdforge.errors import KDForgeError
from kdforge.losses.chunked import chunked_head
from kdforge.losses.cross_chunked import cross_token_kd


def _projection(model: nn.Module, ids: Tensor, chunk_size: int | None) -> tuple[Tensor, nn.Module]:
    """(final hidden states (B, T, D), head) for a model whose head projects them; else (logits, identity)."""
    head = getattr(model, "head", None)
    if chunk_size and head is not None and hasattr(model, "hidden_states"):
        return model.hidden_states(ids), head
    return model(ids), nn.Identity()


class CrossTokenizer:
    """What token_kd needs to distill across tokenizers: the pair's shared vocabulary (gold) and the losses."""

    def __init__(self, kind: str, terms, tokenizers, student: nn.Module, teacher):
        s_tok, t_tok = tokenizers
        check_alignable(s_tok, t_tok)
        if getattr(teacher, "cached", False):
            raise KDForgeError("store: distill.lm.cross_tokenizer reads the live teacher; a teacher store written with the "
                               "teacher's tokenizer is not supported yet: remove the `store:` section")
        for i, term in enumerate(terms):
            if term.kind not in ("kd", "ce"):
                raise KDForgeError(f"distill.losses.{i}: {term.kind} compares the two models token by token; with "
                                   "distill.lm.cross_tokenizer use kd (the aligned-span loss) and ce")
        self.kind = kind
        sizes = (getattr(student, "vocab_size", None), getattr(teacher.model, "vocab_size", None))  # output rows (>= tokens)
        self.vocab = vocab_pair(s_tok, t_tok, *sizes) if kind == "gold" else None

    def losses(self, method, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """{term: weighted loss} for a paired batch (see module doc)."""
        for key in ("teacher_ids", "student_span", "teacher_span"):
            if key not in batch:
                raise KDForgeError(f"distill.lm.cross_tokenizer: the batch has no {key!r}; cross-tokenizer distillation "
                                   "reads paired windows (kdforge.data.paired)")
        ids, chunk = batch["input_ids"], method.lm.chunk_size
        mask = batch["loss_mask"] * batch["attention_mask"] if "attention_mask" in batch else batch["loss_mask"]
        s_hidden, s_head = _projection(method.student, ids, chunk)
        t_hidden = None
        if any(t.kind == "kd" for t in method.terms):
            with torch.no_grad():
                t_hidden, t_head = _projection(method.teacher.model, batch["teacher_ids"], chunk)
            method.teacher.calls += 1  # teacher work, as Teacher.__call__ counts it
            method.teacher.samples += ids.shape[0]
        ce = None
        out: dict[str, Tensor] = {}
        for term in method.terms:
            if term.kind == "ce" or getattr(term, "alpha", 1.0) < 1.0:
                ce = ce if ce is not None else next_token_ce(s_head, s_hidden, ids, mask, chunk)
            if term.kind == "ce":
                loss = ce
            else:
                loss = cross_token_kd(s_head, s_hidden, ids, batch["student_span"], mask, t_head, t_hidden,
                                      batch["teacher_ids"], batch["teacher_span"], vocab=self.vocab, kind=self.kind,
                                      temperature=float(term.temperature), chunk_size=chunk, top_k=method.lm.uld_top_k)
                if term.alpha < 1.0:
                    loss = term.alpha * loss + (1 - term.alpha) * ce
            out[term.kind if term.kind not in out else f"{term.kind}:{len(out)}"] = term.weight * loss
        return out


def next_token_ce(head: nn.Module, hidden: Tensor, ids: Tensor, mask: Tensor, chunk: int | None) -> Tensor:
    """Masked mean next-token cross-entropy of the student's own tokens, the head applied per chunk."""
    targets, m = ids[:, 1:], mask[:, 1:]

    def losses(logits: Tensor, pos: slice) -> dict[str, Tensor]:
        ce = F.cross_entropy(logits.float().transpose(1, 2), targets[:, pos], reduction="none")  # (B, c)
        mm = m[:, pos].float()
        return {"ce": (ce * mm).sum() / mm.sum().clamp_min(1.0)}

    return chunked_head(head, hidden[:, :-1], m, losses, chunk or hidden.shape[1])["ce"]


__all__ = ["CrossTokenizer"]
