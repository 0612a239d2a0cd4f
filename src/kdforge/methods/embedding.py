"""Sentence-embedding distillation: the student matches the teacher's embeddings.

Loss = w_mse · MSE(e_s, e_t) + w_cos · (1 − cos(e_s, e_t)) + w_rel · MSE of the in-batch
cosine-similarity matrices (as in Reimers & Gurevych 2020 "Making monolingual
sentence embeddings multilingual" for the first term, and relation KD for the last).
The recipe's loss terms pick weights by kind: `hint` → MSE, `similarity` → the
similarity-matrix loss; anything else → cosine. When the student is narrower a
learned projection (part of the evaluated student) maps it to the teacher's width.

The workflow (kdforge.workflows.embedding) measures it: mean teacher–student cosine, recall@10 of the
teacher's nearest neighbours among the student's, and linear-probe accuracy.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kdforge.losses.kinds import EMBEDDINGS, KINDS
from kdforge.methods.base import Method, register_method
from kdforge.teacher import Teacher


EMBEDDING_TERMS = {"hint": "mse", "cosine": "cosine", "similarity": "relation"}  # kind -> its logged name, in sum order


class Projected(nn.Module):
    """student embedder followed by a Linear map to the teacher's width: x -> (B, D_t)."""

    def __init__(self, embedder: nn.Module, d_s: int, d_t: int):
        super().__init__()
        self.embedder = embedder
        self.proj = nn.Linear(d_s, d_t, bias=False) if d_s != d_t else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.embedder(x))


@register_method("embedding", workflow="embedding", task="embed", reads=frozenset({"distill.losses"}))
class EmbeddingKD(Method):
    def __init__(self, student: nn.Module, teacher, cfg, probe: dict[str, Tensor]):
        super().__init__()
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        with torch.no_grad():
            d_s = student(probe["x"]).shape[-1]
        d_t = self.teacher(probe["x"], idx=probe.get("idx"))[0].shape[-1]
        self.teacher.calls -= 1
        self.student = Projected(student, d_s, d_t)
        self.weights = dict.fromkeys(EMBEDDING_TERMS, 0.0)  # kind -> summed weight
        for term in cfg.losses:  # a kind the registry runs on embeddings, else the cosine term
            kind = term.kind if KINDS.get(term.kind).works_on(EMBEDDINGS) else "cosine"
            self.weights[kind] = self.weights.get(kind, 0.0) + term.weight

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["x"]
        e_t, _ = self.teacher(x, idx=batch.get("idx"))  # (B, D_t)
        e_s = self.student(x)  # (B, D_t)
        return {EMBEDDING_TERMS.get(kind, kind): w * KINDS.get(kind).fn_for(EMBEDDINGS)(e_s, e_t)
                for kind, w in self.weights.items() if w}


__all__ = ["EmbeddingKD", "Projected"]
