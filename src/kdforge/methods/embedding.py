"""Sentence-embedding distillation: the student matches the teacher's embeddings.

Loss = w_mse · MSE(e_s, e_t) + w_cos · (1 − cos(e_s, e_t)) + w_rel · MSE of the in-batch
cosine-similarity matrices (as in Reimers & Gurevych 2020 "Making monolingual
sentence embeddings multilingual" for the first term, and relation KD for the last).
The recipe's loss terms pick weights by kind: `hint` → MSE, `similarity` → the
similarity-matrix loss; anything else → cosine. When the student is narrower a
learned projection (part of the evaluated student) maps it to the teacher's width.

Metrics (`embedding_metrics`): mean teacher–student cosine, recall@10 of the
teacher's nearest neighbours among the student's, and linear-probe accuracy.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from kdforge.losses.kinds import EMBEDDINGS, KINDS
from kdforge.methods.base import Method
from kdforge.registry import METHODS
from kdforge.teacher import Teacher
from kdforge.train.evaluate import model_device


EMBEDDING_TERMS = {"hint": "mse", "cosine": "cosine", "similarity": "relation"}  # kind -> its logged name, in sum order


class Projected(nn.Module):
    """student embedder followed by a Linear map to the teacher's width: x -> (B, D_t)."""

    def __init__(self, embedder: nn.Module, d_s: int, d_t: int):
        super().__init__()
        self.embedder = embedder
        self.proj = nn.Linear(d_s, d_t, bias=False) if d_s != d_t else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.embedder(x))


@METHODS.register("embedding")
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


@torch.no_grad()
def embed(model: nn.Module, dataset, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """(embeddings (N, D), labels (N,)) in dataset order."""
    was = model.training
    model.eval()
    xs = [dataset[i] for i in range(len(dataset))]
    device = model_device(model)  # the model's own device (CPU or GPU)
    embs = [model(torch.stack([x for x, _ in xs[s : s + batch_size]]).to(device)).float().cpu()
            for s in range(0, len(xs), batch_size)]
    model.train(was)
    return torch.cat(embs), torch.stack([torch.as_tensor(y) for _, y in xs])


def neighbour_recall(e_s: Tensor, e_t: Tensor, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest teacher neighbours (cosine, self excluded)
    that are also among its k nearest student neighbours (k capped at N − 1)."""
    k = min(k, len(e_t) - 1)
    def knn(e):
        e = torch.nn.functional.normalize(e, dim=-1)
        sim = e @ e.t()
        sim.fill_diagonal_(-2.0)
        return sim.topk(k, dim=-1).indices  # (N, k)

    ns, nt = knn(e_s), knn(e_t)
    hits = (ns.unsqueeze(-1) == nt.unsqueeze(-2)).any(-1).float().sum(-1)  # (N,)
    return float((hits / k).mean())


def linear_probe(train_e: Tensor, train_y: Tensor, test_e: Tensor, test_y: Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000)
    clf.fit(train_e.numpy(), train_y.numpy())
    return float(np.mean(clf.predict(test_e.numpy()) == test_y.numpy()))


def embedding_metrics(student: nn.Module, teacher: nn.Module, train, test, k: int = 10) -> dict[str, float]:
    """Mean cosine, recall@k neighbour agreement (on `test`) and linear-probe accuracy
    (fit on `train`, scored on `test`) of the student's embeddings, next to the teacher's probe."""
    s_tr, y_tr = embed(student, train)
    s_te, y_te = embed(student, test)
    t_te, _ = embed(teacher, test)
    t_tr, _ = embed(teacher, train)
    same_width = s_te.shape[-1] == t_te.shape[-1]
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(s_te, t_te, dim=-1).mean()) if same_width else float("nan"),
        f"recall@{k}": neighbour_recall(s_te, t_te, k),
        "probe_accuracy": linear_probe(s_tr, y_tr, s_te, y_te),
        "teacher_probe_accuracy": linear_probe(t_tr, y_tr, t_te, y_te),
    }


def cosine_metric(teacher: nn.Module):
    """metric_fn for `fit`: mean teacher–student cosine on the validation set (select on "cosine")."""
    def metric(model: nn.Module, dataset, device) -> dict[str, float]:
        s, _ = embed(model, dataset)
        t, _ = embed(teacher, dataset)
        return {"cosine": float(torch.nn.functional.cosine_similarity(s, t, dim=-1).mean()), "recall@10": neighbour_recall(s, t)}

    return metric


__all__ = ["EmbeddingKD", "Projected", "cosine_metric", "embed", "embedding_metrics", "linear_probe", "neighbour_recall"]
