"""Data-free KD: the student learns from generated inputs only; the generator's terms do what they say."""
import json
import math

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

import kdforge.workflows.data_free
from kdforge.cli import main
from kdforge.config import DataFreeConfig, DistillConfig
from kdforge.errors import KDForgeError
from kdforge.methods.data_free import BNStatTaps, DataFreeKD, information_entropy_loss
from kdforge.models import CNN, MLP


class NoTouching(torch.utils.data.Dataset):
    """A training split that fails the test if anything reads a sample."""

    def __init__(self, real):
        self.real = real

    def __len__(self):
        return len(self.real)

    def __getitem__(self, i):
        raise AssertionError("a training sample was read")


def test_student_never_receives_a_training_sample(tmp_path, monkeypatch):
    teacher = CNN((1, 8, 8), 10, channels=[8, 8])
    save_model(teacher, str(tmp_path / "teacher.safetensors"))
    real_load = kdforge.workflows.data_free.load_data

    def guarded(cfg, seed):
        data = real_load(cfg, seed)
        data.train = NoTouching(data.train)
        return data

    monkeypatch.setattr(kdforge.workflows.data_free, "load_data", guarded)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: data_free\nrun_dir: {tmp_path / 'run'}\ndata: {{name: digits}}\n"
                      f"teacher: {{name: cnn, channels: [8, 8], checkpoint: {tmp_path / 'teacher.safetensors'}}}\n"
                      "student: {name: mlp, hidden: [16]}\ndistill: {epochs: 1, batch_size: 16}\n"
                      "data_free: {batches_per_epoch: 3, adversarial_weight: 1.0}\n")
    assert main(["run", str(recipe), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert {"teacher", "student"} <= set(metrics["models"])
    line = json.loads((tmp_path / "run/student/metrics.jsonl").read_text().splitlines()[0])
    assert line["train/generated"] == 3 * 16 and "train/gen_bn" in line  # the CNN teacher has BatchNorm


def test_each_loss_reaches_only_what_it_trains():
    torch.manual_seed(0)
    teacher, student = CNN((1, 8, 8), 10, channels=[8]), MLP((1, 8, 8), 10, hidden=[16])
    m = DataFreeKD(student, teacher, DistillConfig(), {"x": torch.zeros(2, 1, 8, 8)}, DataFreeConfig(adversarial_weight=1.0))
    batch = {"x": torch.full((6,), float("nan")), "y": torch.full((6,), -1), "idx": torch.arange(6)}
    m.teacher(torch.rand(3, 1, 8, 8))
    assert m.bn.terms == []  # using the teacher outside a step (evaluation) records no BN terms
    out = m.step(batch)  # placeholder contents are ignored
    assert all(torch.isfinite(v) for v in out.values())
    sum(v for k, v in out.items() if k.startswith("gen_")).backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in student.parameters())  # adversarial term: student detached
    assert any(p.grad is not None and p.grad.any() for p in m.generator.parameters())
    m.zero_grad()
    out["kd"].backward()
    assert all(p.grad is None or not p.grad.any() for p in m.generator.parameters())  # kd sees x detached
    assert any(p.grad is not None and p.grad.any() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())  # frozen


def test_entropy_loss_is_zero_for_balanced_batches_and_log_c_for_one_class():
    balanced = torch.eye(4) * 30  # each sample confidently a different class
    assert information_entropy_loss(balanced).item() == pytest.approx(0.0, abs=1e-4)
    one_class = torch.zeros(4, 4)
    one_class[:, 0] = 30
    assert information_entropy_loss(one_class).item() == pytest.approx(math.log(4), abs=1e-4)


def test_bn_term_is_zero_when_the_batch_matches_the_stored_statistics():
    bn = nn.BatchNorm1d(3).eval()
    x = torch.randn(512, 3) * 2 + 1
    bn.running_mean.copy_(x.mean(0))
    bn.running_var.copy_(x.var(0, unbiased=False))
    taps = BNStatTaps(bn)
    bn(x)
    assert taps.pop().item() == pytest.approx(0.0, abs=1e-4)
    bn(x + 1)
    assert taps.pop().item() == pytest.approx(math.sqrt(3), rel=1e-4)  # every channel's mean off by 1


@pytest.mark.parametrize("teacher", [nn.Sequential(nn.Flatten(), nn.Linear(64, 1)),  # regression: one output
                                     nn.Sequential(nn.Flatten(), nn.Unflatten(1, (8, 8)))])  # (B, T, V) sequence output
def test_a_teacher_that_is_not_a_classifier_is_an_error(teacher):
    with pytest.raises(KDForgeError, match="classifier teacher"):
        DataFreeKD(MLP((1, 8, 8), 10), teacher, DistillConfig(), {"x": torch.zeros(2, 1, 8, 8)}, DataFreeConfig())
