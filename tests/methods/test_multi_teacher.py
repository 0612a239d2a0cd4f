"""Multi-teacher KD: combined soft targets are the stated weighted average; one teacher reduces to plain KD."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.config import DistillConfig, EnsembleConfig
from kdforge.errors import KDForgeError
from kdforge.losses import distillation_loss, soft_target_kl
from kdforge.losses.multi import ensemble_soft_targets, kl_to_targets
from kdforge.methods.multi_teacher import MultiTeacherKD
from kdforge.models import MLP


def test_mean_fixed_and_confidence_weightings():
    torch.manual_seed(0)
    z = torch.randn(3, 5, 4)  # (K, B, C)
    p = F.softmax(z / 2.0, -1)
    assert torch.allclose(ensemble_soft_targets(z, 2.0), p.mean(0), atol=1e-6)
    w = torch.tensor([1.0, 0.0, 3.0])
    assert torch.allclose(ensemble_soft_targets(z, 2.0, w), (0.25 * p[0] + 0.75 * p[2]), atol=1e-6)
    sure, unsure = torch.tensor([[10.0, 0, 0, 0]]), torch.zeros(1, 4)
    conf = ensemble_soft_targets(torch.stack([sure, unsure]), 1.0, "confidence")
    c = F.softmax(sure, -1).max().item()
    expected = (c * F.softmax(sure, -1) + 0.25 * F.softmax(unsure, -1)) / (c + 0.25)
    assert torch.allclose(conf, expected, atol=1e-6)
    assert torch.allclose(conf.sum(-1), torch.ones(1))


def test_kl_to_targets_equals_soft_target_kl():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    assert kl_to_targets(s, F.softmax(t / 3.0, -1), 3.0).item() == pytest.approx(soft_target_kl(s, t, 3.0).item(), rel=1e-5)


def test_one_teacher_reduces_to_the_classic_objective_and_teachers_stay_frozen():
    torch.manual_seed(0)
    teachers = [MLP((6,), 4, hidden=[12]) for _ in range(3)]
    student = MLP((6,), 4, hidden=[5])
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    cfg = DistillConfig(losses=[{"kind": "kd", "temperature": 3.0, "alpha": 0.6}])
    one = MultiTeacherKD(student, teachers[:1], cfg, {"x": x[:2]}, EnsembleConfig())
    expected = distillation_loss(student(x), teachers[0](x), y, 3.0, 0.6)
    assert one.step({"x": x, "y": y})["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    three = MultiTeacherKD(student, teachers, cfg, {"x": x[:2]}, EnsembleConfig(weighting="confidence"))
    three.step({"x": x, "y": y})["kd"].backward()
    assert all(p.grad is None for t in teachers for p in t.parameters())
    assert student.head.weight.grad is not None


def test_bad_ensemble_settings_are_errors():
    cfg = DistillConfig()
    t, s, probe = MLP((6,), 4), MLP((6,), 4), {"x": torch.zeros(2, 6)}
    with pytest.raises(KDForgeError, match="ensemble.weights"):
        MultiTeacherKD(s, [t, t], cfg, probe, EnsembleConfig(weighting="fixed", weights=[1.0], count=1))
    with pytest.raises(KDForgeError, match="ensemble.teachers.1"):
        MultiTeacherKD(s, [t, MLP((6,), 3)], cfg, probe, EnsembleConfig())
    with pytest.raises(KDForgeError, match="kd and ce terms only"):
        MultiTeacherKD(s, [t], DistillConfig(losses=[{"kind": "tvd"}]), probe, EnsembleConfig())
