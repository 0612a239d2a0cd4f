"""Embedding distillation: the student's sentence embeddings move towards the teacher's."""
import torch

from kdforge.config import DistillConfig
from kdforge.data.text import TokenDataset
from kdforge.methods.embedding import EmbeddingKD
from kdforge.models.hf import load_hf
from kdforge.models.students import shrink_width
from kdforge.train.batching import collate_indexed
from kdforge.train.loop import fit
from kdforge.workflows.embedding import cosine_metric, embedding_metrics, neighbour_recall
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)


def _ds(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, 10), generator=g)
    ids[:, 0] = 2
    ids[n // 2 :, 7:] = 0  # some padding
    return TokenDataset(ids, torch.arange(n) % 2)


def test_embedding_kd_raises_cosine_and_metrics_make_sense(tiny_bert_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    teacher = load_hf(str(tiny_bert_dir), "embed")
    student = shrink_width(teacher, hidden_size=16, num_heads=2)
    train, val = _ds(64, 0), _ds(32, 1)
    cfg = DistillConfig.model_validate({"epochs": 4, "batch_size": 16, "lr": 3e-3, "losses": [
        {"kind": "hint", "student_layer": "x", "teacher_layer": "x", "weight": 1.0},
        {"kind": "similarity", "student_layer": "x", "teacher_layer": "x", "weight": 1.0},
        {"kind": "kd", "weight": 1.0}]})
    m = EmbeddingKD(student, teacher, cfg, collate_indexed([(i, train[i]) for i in range(4)]))
    metric = cosine_metric(teacher)
    before = metric(m.student, val, "cpu")["cosine"]
    res = fit(m, train, val, cfg, tmp_path, 0, metric_fn=metric, select="cosine", quiet=True)
    assert res.best["val/cosine"] > before
    out = embedding_metrics(m.student, teacher, train, val)
    assert 0 <= out["recall@10"] <= 1 and 0 <= out["probe_accuracy"] <= 1 and -1 <= out["cosine"] <= 1


def test_neighbour_recall_is_one_for_identical_and_rotation_invariant():
    e = torch.randn(30, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert neighbour_recall(e, e) == 1.0
    assert neighbour_recall(e @ q, e) == 1.0
    assert neighbour_recall(torch.randn(30, 8), e) < 0.8


def test_embedding_recipe_end_to_end(tiny_bert_dir, tmp_path):  # noqa: F811
    from kdforge.recipe_file import parse_recipe
    from kdforge.workflows import run_recipe

    rows = "\n".join(f"{'cats purr softly' if i % 2 else 'dogs bark loudly'} number {i},{'a' if i % 2 else 'b'}" for i in range(60))
    (tmp_path / "d.csv").write_text("text,label\n" + rows)
    raw = {"run_dir": str(tmp_path / "run"), "method": "embedding",
           "data": {"name": "text", "path": str(tmp_path / "d.csv"), "tokenizer": str(tiny_bert_dir), "max_length": 16},
           "teacher": {"name": "hf", "hf": str(tiny_bert_dir), "task": "embed"},
           "student": {"name": "hf", "hf": str(tiny_bert_dir), "task": "embed", "layers": [0, 2]},
           "distill": {"epochs": 2, "batch_size": 16, "losses": [
               {"kind": "hint", "student_layer": "embedding", "teacher_layer": "embedding"},
               {"kind": "similarity", "student_layer": "embedding", "teacher_layer": "embedding"}]}}
    res = run_recipe(parse_recipe(raw), quiet=True)
    assert 0 < res["student"]["cosine"] <= 1 and "recall@10" in res["student"]
    assert (tmp_path / "run/report.md").read_text().count("|") > 10
