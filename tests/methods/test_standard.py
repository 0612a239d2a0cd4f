"""StandardKD: terms equal their loss functions; confidence filtering drops exactly the teacher's mistakes."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.config import DistillConfig
from kdforge.losses import distillation_loss, hint_loss, rkd_distance, soft_target_kl
from kdforge.data.base import ArrayDataset
from kdforge.losses.sparse import sparse_kl
from kdforge.methods.standard import StandardKD
from kdforge.models import MLP
from kdforge.store import CachedTeacher, TeacherStore, write_store
from kdforge.teacher import Teacher


def setup(losses, filter=None, seed=0):
    torch.manual_seed(seed)
    teacher, student = MLP((6,), 4, hidden=[12]), MLP((6,), 4, hidden=[5])
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    cfg = DistillConfig(losses=losses, filter=filter or {})
    return StandardKD(student, teacher, cfg, {"x": x[:4]}), x, y


def test_terms_equal_their_loss_functions():
    m, x, y = setup([
        {"kind": "kd", "temperature": 3.0, "alpha": 0.6},
        {"kind": "hint", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.5},
        {"kind": "rkd_distance", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 2.0},
    ])
    out = m.step({"x": x, "y": y})
    s_logits, t_logits = m.student(x), m.teacher.model(x)
    h_s, h_t = m.student.layers[0](x), m.teacher.model.layers[0](x)
    assert out["kd"].item() == pytest.approx(distillation_loss(s_logits, t_logits, y, 3.0, 0.6).item(), rel=1e-5)
    proj = m.projections["layers_0->layers_0"]  # widths 5 vs 12 differ: a projection was created
    assert out["hint"].item() == pytest.approx(0.5 * hint_loss(proj(h_s), h_t).item(), rel=1e-5)
    assert out["rkd_distance"].item() == pytest.approx(2.0 * rkd_distance(h_s, h_t).item(), rel=1e-5)
    sum(out.values()).backward()
    assert proj.proj.weight.grad is not None and m.student.head.weight.grad is not None
    assert all(p.grad is None for p in m.teacher.parameters())


def test_drop_filter_removes_teacher_mistakes_and_counts_them():
    m, x, y = setup([{"kind": "kd", "temperature": 2.0, "alpha": 1.0}], {"mode": "drop", "drop_wrong": True})
    t_logits = m.teacher.model(x).detach()
    right = t_logits.argmax(-1) == y
    assert 0 < right.sum() < len(y), "fixture should have both right and wrong teacher answers"
    out = m.step({"x": x, "y": y})
    expected = soft_target_kl(m.student(x)[right], t_logits[right], 2.0)
    assert out["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert m.epoch_stats() == {"filtered": int((~right).sum()), "seen": len(y)}


def test_downweight_uses_teacher_probability_of_true_class():
    m, x, y = setup([{"kind": "kd", "temperature": 1.0, "alpha": 1.0}], {"mode": "downweight", "min_confidence": 0.99})
    t = m.teacher.model(x).detach()
    p_true = F.softmax(t, -1).gather(1, y[:, None])[:, 0]
    per = soft_target_kl(m.student(x), t, 1.0, reduction="none")
    assert m.step({"x": x, "y": y})["kd"].item() == pytest.approx(((per * p_true).sum() / p_true.sum()).item(), rel=1e-5)


def test_hard_ce_uses_teacher_argmax():
    m, x, y = setup([{"kind": "hard_ce"}])
    expected = F.cross_entropy(m.student(x), m.teacher.model(x).argmax(-1))
    assert m.step({"x": x, "y": y})["hard_ce"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("sampling", ["topk", "priority"])
def test_kd_from_a_sparse_store_reads_ids_and_values(tmp_path, sampling):
    """kd against a sparse classification store is computed on the stored k ids: for a top-k store it
    equals KL against the scattered logits (value and gradient), for a sampled store it is sparse_kl's
    unbiased estimate (not the renormalised scatter); at a kd temperature other than the sampled store's,
    kd takes the scattered logits."""
    torch.manual_seed(0)
    teacher, student = MLP((6,), 12, hidden=[16]), MLP((6,), 12, hidden=[5])
    x, y = torch.randn(20, 6), torch.randint(0, 12, (20,))
    path = write_store(tmp_path / sampling, Teacher(teacher), ArrayDataset(x, y), k=5, sampling=sampling, temperature=2.0,
                       dtype="float32", quiet=True)
    cached = CachedTeacher(TeacherStore(path))
    cfg = DistillConfig(losses=[{"kind": "kd", "temperature": 2.0, "alpha": 1.0}])
    idx = torch.arange(20)
    m = StandardKD(student, cached, cfg, {"x": x[:4], "idx": idx[:4]})
    out = m.step({"x": x, "y": y, "idx": idx})["kd"]
    (g,) = torch.autograd.grad(out, student.head.weight)
    logits, target, _ = cached.read(idx)
    s = student(x)
    expected = soft_target_kl(s, logits, 2.0) if sampling == "topk" else sparse_kl(s, target, 2.0)
    (g_expected,) = torch.autograd.grad(expected, student.head.weight)
    assert out.item() == pytest.approx(expected.item(), rel=1e-5) and torch.allclose(g, g_expected, atol=1e-6)
    m4 = StandardKD(student, cached, DistillConfig(losses=[{"kind": "kd", "temperature": 4.0, "alpha": 1.0}]), {"x": x[:4], "idx": idx[:4]})
    assert m4.sparse_kd == (sampling == "topk")
    assert m4.step({"x": x, "y": y, "idx": idx})["kd"].item() == pytest.approx(soft_target_kl(s, logits, 4.0).item(), rel=1e-5)
