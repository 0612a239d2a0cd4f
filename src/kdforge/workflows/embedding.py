"""Workflow of method `embedding`: sentence-embedding teacher and student (`task: embed`),
distilled in one stage selected on validation cosine to the teacher, tested on embedding
metrics (mean cosine, recall@10 of the teacher's neighbours, linear-probe accuracy).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.models.build import build_model
from kdforge.models.small import count_parameters
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.train.evaluate import model_device
from kdforge.workflows.run import Run, build_method, report_markdown

COLUMNS = (("mean cosine to teacher", "cosine"), ("recall@10", "recall@10"), ("linear-probe accuracy", "probe_accuracy"))


@WORKFLOWS.register("embedding")
def run_embedding(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    for role in ("teacher", "student"):
        sec = getattr(recipe, role)
        if sec.name != "hf" or sec.task != "embed":
            raise KDForgeError(f"{role}: method embedding needs `name: hf` with `task: embed`")
    data = load_data(recipe.data, recipe.seed)
    teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    method = build_method(recipe, student, teacher, probe_batch(data.train))
    run = Run.open(recipe, resume=resume, force=force)
    stage = train_stage("student", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                        metric_fn=cosine_metric(teacher), select="cosine")
    test = embedding_metrics(method.student, teacher, data.train, data.test)
    results = {"seed": recipe.seed, "method": "embedding", "best_epoch": stage["best_epoch"], "student_stage": stage,
               "teacher": {"params": count_parameters(teacher), "accuracy": test["teacher_probe_accuracy"]},
               "student": {**test, "params": count_parameters(method.student), "accuracy": test["probe_accuracy"]}}
    rows = {"teacher": {**results["teacher"], "cosine": 1.0, "recall@10": 1.0, "probe_accuracy": test["teacher_probe_accuracy"]},
            "student": results["student"]}
    return run.finish(results, report_markdown(recipe, rows, COLUMNS))


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


__all__ = ["cosine_metric", "embed", "embedding_metrics", "linear_probe", "neighbour_recall", "run_embedding"]
