"""token_kd across tokenizers (`distill.lm.cross_tokenizer: uld | gold`).

The batch carries the text in both tokenizations with span ids (`data.paired`); the student
reads `input_ids`, the live teacher `teacher_ids`; or, from a teacher store written over the
teacher's tokens (`kdforge cache-teacher` with a cross-tokenizer recipe), the store's sparse
distribution of every teacher token and the log-probability of each teacher token
(kdforge.teacher.TokenLogprobTeacher), read by the batch's sample ids. The kd term becomes
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
from kdforge.teacher import TOKEN_LOGP


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
        for i, term in enumerate(terms):
            if term.kind not in ("kd", "ce"):
                raise KDForgeError(f"distill.losses.{i}: {term.kind} compares the two models token by token; with "
                                   "distill.lm.cross_tokenizer use kd (the aligned-span loss) and ce")
        self.stored = bool(getattr(teacher, "cached", False))
        if self.stored:
            check_store(teacher.store, terms)
        self.kind = kind
        t_size = teacher.vocab_size if self.stored else getattr(teacher.model, "vocab_size", None)
        sizes = (getattr(student, "vocab_size", None), t_size)  # output rows (>= tokens)
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
        t_hidden = t_logp = None
        if any(t.kind == "kd" for t in method.terms) and self.stored:  # the store's rows stand in for the teacher's hidden states
            t_hidden, t_head, t_logp = stored_teacher(method.teacher, batch)
        elif any(t.kind == "kd" for t in method.terms):
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
                                      temperature=float(term.temperature), chunk_size=chunk, top_k=method.lm.uld_top_k,
                                      t_token_logp=t_logp)
                if term.alpha < 1.0:
                    loss = term.alpha * loss + (1 - term.alpha) * ce
            out[term.kind if term.kind not in out else f"{term.kind}:{len(out)}"] = term.weight * loss
        return out


def check_store(store, terms) -> None:
    """A teacher store can stand in for the live teacher only if it was written over the teacher's tokens with
    each token's log-probability, at the temperature of every kd term (the prefixes are stored at it)."""
    if TOKEN_LOGP not in store.meta.get("features", {}):
        raise KDForgeError(f"store.path: {store.path} was written over the student's tokens, not for cross-tokenizer "
                           "distillation (it has no teacher-token log-probabilities); rerun `kdforge cache-teacher` "
                           "with this recipe or point store.path at a new folder")
    for i, term in enumerate(terms):
        if term.kind == "kd" and float(term.temperature) != store.temperature:
            raise KDForgeError(f"distill.losses.{i}.temperature: {term.temperature} differs from the temperature the "
                               f"cross-tokenizer store {store.path} was written at ({store.temperature}, store.temperature); "
                               "make them equal")


def stored_teacher(teacher, batch: dict[str, Tensor]):
    """(rows, head, token log-probabilities (B, T')) of a cross-tokenizer store for the batch's sample ids: the
    sparse target (B, T', k) as the rows, its `dense` (at the store's temperature) as the head."""
    if "idx" not in batch:
        raise KDForgeError("a cached teacher needs the batch's sample ids (idx)")
    target = teacher.target(batch["idx"])  # counts one store read
    logp = teacher.store.rows(f"feat-{TOKEN_LOGP}", batch["idx"]).to(batch["input_ids"].device).float()
    vocab, temperature = teacher.store.vocab, teacher.store.temperature
    return target, lambda rows: rows.dense(vocab, temperature), logp


def next_token_ce(head: nn.Module, hidden: Tensor, ids: Tensor, mask: Tensor, chunk: int | None) -> Tensor:
    """Masked mean next-token cross-entropy of the student's own tokens, the head applied per chunk."""
    targets, m = ids[:, 1:], mask[:, 1:]

    def losses(logits: Tensor, pos: slice) -> dict[str, Tensor]:
        ce = F.cross_entropy(logits.float().transpose(1, 2), targets[:, pos], reduction="none")  # (B, c)
        mm = m[:, pos].float()
        return {"ce": (ce * mm).sum() / mm.sum().clamp_min(1.0)}

    return chunked_head(head, hidden[:, :-1], m, losses, chunk or hidden.shape[1])["ce"]


__all__ = ["CrossTokenizer"]
