"""Causal-LM → causal-LM distillation: token-level, sequence-level and on-policy (GKD).

Batches are dicts {"input_ids": (B, T), "loss_mask": (B, T), "idx": (B,)}; the
logits at position t predict token t+1 and are scored where loss_mask[:, t+1] is
1 (prompt and padding positions are 0). The recipe's loss terms choose the
objective per token:

    kd          α · forward KL(p_t ‖ p_s) · T² + (1 − α) · next-token CE   (Hinton; Sanh et al.)
    reverse_kl  KL(p_s ‖ p_t), mode-seeking                              (MiniLLM, Gu et al. 2024)
    jsd         generalized JSD with β                                   (GKD, Agarwal et al. 2024)
    tvd         total variation                                           (Wen et al. 2023)
    ce          next-token CE on the data; hard_ce: on the teacher's argmax

All divergences are computed in chunks over the sequence (`distill.lm.chunk_size`);
for HF causal LMs the vocabulary projection itself runs per chunk, from the final
hidden states (`chunked_head`), so no (B, T, V) logits of either model exist at once.
A teacher read from a sparse store (top-k or sampled ids) uses the sparse losses.

Methods: `token_kd` (teacher scores the data), `sequence_kd` (Kim & Rush 2016:
the student learns the teacher's greedy continuation of each prompt) and `gkd`
(Agarwal et al. 2024: with probability λ a batch is the student's own sampled
continuation, scored by the teacher; otherwise the data).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.losses.chunked import chunked_head, divergence
from kdforge.losses.kinds import KINDS, TOKEN_LOGITS
from kdforge.losses.sparse import SparseTarget, sparse_kl, sparse_restricted
from kdforge.methods.base import Method, register_method
from kdforge.methods.cross_tokenizer import CrossTokenizer
from kdforge.methods.terms import refuse_kinds, term_options
from kdforge.teacher import Teacher


def vocab_size(model) -> int:
    m = model.model if getattr(model, "model", None) is not None else model  # Teacher -> its module
    if hasattr(m, "vocab_size"):
        return int(m.vocab_size)
    raise KDForgeError(f"cannot tell the vocabulary size of {type(m).__name__}")


def check_vocab(student_vocab: int, teacher_vocab: int, s_tok=None, t_tok=None) -> None:
    """Teacher and student must predict the same token ids; the error says how they differ."""
    if s_tok is not None and t_tok is not None:
        sv, tv = s_tok.get_vocab(), t_tok.get_vocab()
        if sv != tv:
            only_t = sorted(set(tv) - set(sv))[:3]
            moved = [w for w in tv if w in sv and sv[w] != tv[w]][:3]
            detail = f"{len(set(tv) - set(sv))} teacher tokens missing from the student's, e.g. {only_t}" if only_t else \
                f"{sum(1 for w in tv if w in sv and sv[w] != tv[w])} tokens have different ids, e.g. " + \
                ", ".join(f"{w!r} (teacher {tv[w]}, student {sv[w]})" for w in moved)
            raise KDForgeError(f"tokenizer mismatch: teacher has {len(tv)} tokens, student {len(sv)}; {detail}; "
                               "token-level distillation needs one shared tokenizer")
    if student_vocab != teacher_vocab:
        bigger = "teacher" if teacher_vocab > student_vocab else "student"
        raise KDForgeError(f"vocabulary mismatch: teacher predicts {teacher_vocab} tokens, student {student_vocab} "
                           f"(the {bigger} has {abs(teacher_vocab - student_vocab)} more); build the student with the teacher's vocabulary")


def check_context(model, length: int, role: str, field: str = "data.max_length") -> None:
    m = model.model if getattr(model, "model", None) is not None else model
    ctx = getattr(m, "max_positions", None)
    if ctx is not None and length > ctx:
        raise KDForgeError(f"{field}: sequences of {length} tokens are longer than the {role}'s context of {ctx} positions")


class LazyLogits:
    """Teacher logits computed only when a slice of positions asks: hidden (B, T, D) -> head -> (B, t, V)."""

    def __init__(self, hidden: Tensor, head: nn.Module):
        self.hidden, self.head = hidden, head

    def __getitem__(self, key) -> "LazyLogits":
        return LazyLogits(self.hidden[key], self.head)

    @torch.no_grad()
    def materialise(self) -> Tensor:
        return self.head(self.hidden)


def next_token_ce(s_logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """s_logits (B, T, V), targets (B, T), mask (B, T) -> masked mean CE."""
    ce = F.cross_entropy(s_logits.float().transpose(1, 2), targets, reduction="none")  # (B, T)
    m = mask.float()
    return (ce * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def sample(model, ids: Tensor, new_tokens: int, *, greedy: bool = False, temperature: float = 1.0,
           eos_id: int | None = None) -> Tensor:
    """Autoregressive continuation of equal-length prompts ids (B, P) -> (B, P + new_tokens).

    A model with `generate` (kdforge's HF causal LMs) decodes with transformers' `generate`
    (key/value cache, GenerationConfig); any other callable `ids -> (B, T, V) logits` re-runs
    the growing prefix each step.
    `eos_id` lets `generate` stop once every row has ended (the plain loop runs on)."""
    if hasattr(model, "generate"):
        return model.generate(ids, new_tokens, do_sample=not greedy, temperature=temperature, eos_id=eos_id)
    forward = model
    for _ in range(new_tokens):
        logits = forward(ids)[:, -1].float()  # (B, V)
        nxt = logits.argmax(-1) if greedy else torch.multinomial((logits / temperature).softmax(-1), 1)[:, 0]
        ids = torch.cat([ids, nxt[:, None]], 1)
    return ids


# what the causal-LM methods act on; the lm workflow exports their student (compress: export stages only)
LM_READS = frozenset({"distill.losses", "distill.lm", "compress.export"})


@register_method("token_kd", workflow="lm", task="causal_lm", tokenizers=True, reads=LM_READS | {"store"})
class TokenKD(Method):
    """Token-level KD on the data (teacher scores every position of the given text)."""

    def __init__(self, student: nn.Module, teacher, cfg, probe: dict[str, Tensor], *, tokenizers=(None, None)):
        super().__init__()
        self.cfg, self.lm = cfg, cfg.lm
        self.terms = list(cfg.losses)
        refuse_kinds(self.terms, TOKEN_LOGITS, self)
        self.teacher = teacher if isinstance(teacher, Teacher) or getattr(teacher, "cached", False) else Teacher(teacher)
        self.student = student
        length = self.sequence_length(probe["input_ids"].shape[1])
        check_context(student, length, "student")
        if not getattr(self.teacher, "cached", False):
            check_context(self.teacher, probe["teacher_ids"].shape[1] if "teacher_ids" in probe else length, "teacher")
        self.cross = None  # distill.lm.cross_tokenizer: the teacher reads its own tokens of the same text
        if self.lm.cross_tokenizer:
            if type(self).forward is not TokenKD.forward:
                raise KDForgeError(f"distill.lm.cross_tokenizer: works with method token_kd, not {type(self).__name__}")
            self.cross = CrossTokenizer(self.lm.cross_tokenizer, self.terms, tokenizers, student, self.teacher)
        else:
            check_vocab(vocab_size(student), vocab_size(self.teacher), *tokenizers)
        if getattr(self.teacher, "sampled", False):  # a sampled store is unbiased for forward KL at its own temperature only
            for i, term in enumerate(self.terms):
                if KINDS.get(term.kind).pair:  # reverse_kl, jsd, tvd...
                    raise KDForgeError(f"distill.losses.{i}: {term.kind} against a random-sampled store is biased; "
                                       "use kd (forward KL), or store.sampling: topk")
                if term.kind == "kd" and float(term.temperature) != self.teacher.temperature:
                    raise KDForgeError(f"distill.losses.{i}.temperature: {term.temperature} differs from the store's sampling "
                                       f"temperature {self.teacher.temperature} (store.temperature); make them equal")

    def sequence_length(self, data_length: int) -> int:
        """Longest sequence this method feeds the models (checked against their context)."""
        return data_length

    def teacher_logits(self, ids: Tensor, idx: Tensor | None):
        """What the teacher says about ids (B, T), sliceable by position: dense (B, T, V) logits,
        a SparseTarget (B, T, k) from a sparse store, or LazyLogits (the live teacher's final
        hidden states, projected per chunk)."""
        if getattr(self.teacher, "cached", False):
            if idx is None:
                raise KDForgeError("the teacher store cannot score generated sequences; use the live teacher for gkd / sequence_kd")
            return self.teacher.target(idx) if self.teacher.sparse else self.teacher(ids, idx=idx)[0]
        model = self.teacher.model
        if self.lm.chunk_size and getattr(model, "head", None) is not None:
            with torch.no_grad():
                hidden = model.hidden_states(ids)  # (B, T, D)
            self.teacher.calls += 1  # teacher work, as Teacher.__call__ counts it
            self.teacher.samples += ids.shape[0]
            return LazyLogits(hidden, model.head)
        return self.teacher(ids)[0]

    def token_losses(self, s: Tensor, t, targets: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """s (B, T, V) student logits; t what the teacher says (see teacher_logits) aligned with s;
        targets (B, T) next tokens; mask (B, T) scored positions. -> {term: weighted loss}."""
        out = {}
        t = t.materialise() if isinstance(t, LazyLogits) else t
        sparse = isinstance(t, SparseTarget)
        for term in self.terms:
            kind = term.kind
            if kind == "ce":
                loss = next_token_ce(s, targets, mask)
            elif kind == "hard_ce":
                loss = next_token_ce(s, t.indices[..., 0].long() if sparse else t.argmax(-1), mask)
            else:  # any registered logit divergence, on the token logits (kd is forward KL)
                if sparse and kind == "kd":
                    loss = sparse_kl(s, t, term.temperature, mask)
                elif sparse:
                    loss = sparse_restricted(kind, s, t, mask, **term_options(term))
                else:
                    loss = divergence(kind, s, t, mask, chunk_size=self.lm.chunk_size, **term_options(term))
                if kind == "kd" and term.alpha < 1.0:
                    loss = term.alpha * loss + (1 - term.alpha) * next_token_ce(s, targets, mask)
            out[kind if kind not in out else f"{kind}:{len(out)}"] = term.weight * loss
        return out

    def needs_teacher(self) -> bool:
        return any(t.kind != "ce" for t in self.terms)

    def score(self, ids: Tensor, mask: Tensor, idx: Tensor | None) -> dict[str, Tensor]:
        """Losses for sequences ids (B, T) whose tokens mask (B, T) marks as targets."""
        targets, mask = ids[:, 1:], mask[:, 1:]  # position t predicts ids[:, t + 1]
        t = self.teacher_logits(ids, idx)[:, :-1] if self.needs_teacher() else None
        head = getattr(self.student, "head", None)
        if self.lm.chunk_size and head is not None:  # the student's (B, T, V) logits never exist at once
            hidden = self.student.hidden_states(ids)[:, :-1]  # (B, T-1, D)

            def losses(s_chunk: Tensor, pos: slice) -> dict[str, Tensor]:
                return self.token_losses(s_chunk, None if t is None else t[:, pos], targets[:, pos], mask[:, pos])

            return chunked_head(head, hidden, mask, losses, self.lm.chunk_size)
        return self.token_losses(self.student(ids)[:, :-1], t, targets, mask)  # (B, T-1, V) predicts ids[:, 1:]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.cross is not None:
            return self.cross.losses(self, batch)
        mask = batch["loss_mask"]
        if "attention_mask" in batch:
            mask = mask * batch["attention_mask"]
        return self.score(batch["input_ids"], mask, batch.get("idx"))


@register_method("sequence_kd", workflow="lm", task="causal_lm", tokenizers=True, reads=LM_READS)  # generates: no store
class SequenceKD(TokenKD):
    """Kim & Rush 2016: the student learns the teacher's greedy continuation of each prompt.

    The first `lm.prompt_tokens` tokens of a sample are the prompt; the teacher's
    continuation of `lm.max_new_tokens` tokens is generated once per sample id and
    kept (greedy decoding is deterministic, so a resumed run regenerates the same).
    With only a `ce` term this is pure sequence-level KD; soft terms add word-level KD
    on the generated text.
    """

    def __init__(self, student, teacher, cfg, probe, **kw):
        super().__init__(student, teacher, cfg, probe, **kw)
        if getattr(self.teacher, "cached", False):
            raise KDForgeError("sequence_kd needs the live teacher (it generates); remove the `store:` section")
        self.generated: dict[int, Tensor] = {}

    def sequence_length(self, data_length: int) -> int:
        return self.lm.prompt_tokens + self.lm.max_new_tokens

    def continuations(self, ids: Tensor, idx: Tensor) -> Tensor:
        p = self.lm.prompt_tokens
        todo = [i for i, k in enumerate(idx.tolist()) if k not in self.generated]
        if todo:
            gen = sample(self.teacher.model, ids[todo, :p], self.lm.max_new_tokens, greedy=True)
            self.teacher.calls += 1  # teacher work: generation runs the frozen model, not Teacher.__call__
            self.teacher.samples += len(todo)
            for row, i in zip(gen, todo):
                self.generated[int(idx[i])] = row.cpu()
        return torch.stack([self.generated[int(k)] for k in idx.tolist()]).to(ids.device)

    def forward(self, batch):
        seq = self.continuations(batch["input_ids"], batch["idx"])  # (B, P + N)
        mask = torch.zeros_like(seq)
        mask[:, self.lm.prompt_tokens :] = 1
        return self.score(seq, mask, None)


@register_method("gkd", workflow="lm", task="causal_lm", tokenizers=True, reads=LM_READS | {"store"})  # store: lmbda 0
class OnPolicyKD(TokenKD):
    """GKD (Agarwal et al. 2024): with probability λ the batch is the student's own sampled
    continuation of the prompt, scored by the teacher token by token; otherwise the data."""

    def __init__(self, student, teacher, cfg, probe, **kw):
        super().__init__(student, teacher, cfg, probe, **kw)
        if getattr(self.teacher, "cached", False) and self.lm.lmbda > 0:
            raise KDForgeError("gkd with lmbda > 0 needs the live teacher to score student samples; set distill.lm.lmbda=0 or remove `store:`")

    def sequence_length(self, data_length: int) -> int:
        return max(data_length, self.lm.prompt_tokens + self.lm.max_new_tokens)

    def forward(self, batch):
        if torch.rand(()) >= self.lm.lmbda:  # off-policy: the data (torch RNG is checkpointed by the loop)
            self.counters["off_policy_batches"] += 1
            return super().forward(batch)
        self.counters["on_policy_batches"] += 1
        p = self.lm.prompt_tokens
        was = self.student.training
        self.student.eval()
        seq = sample(self.student, batch["input_ids"][:, :p], self.lm.max_new_tokens, temperature=self.lm.gen_temperature)
        self.student.train(was)
        mask = torch.zeros_like(seq)
        mask[:, p:] = 1
        return self.score(seq, mask, None)


__all__ = ["OnPolicyKD", "SequenceKD", "TokenKD", "check_context", "check_vocab", "next_token_ce", "sample"]
