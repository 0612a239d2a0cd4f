"""The teacher is frozen by construction: a whole distillation run leaves it bit-identical."""
import copy

import torch

import kdforge
from kdforge.data import load_data
from kdforge.config import DataConfig
from kdforge.models import CNN, MLP
from kdforge.teacher import Teacher


def test_teacher_bit_identical_after_distillation(tmp_path):
    data = load_data(DataConfig(name="digits", train_limit=300), seed=0)
    torch.manual_seed(0)
    teacher = CNN((1, 8, 8), 10, channels=[8, 16])  # BatchNorm: running stats must not move either
    before = copy.deepcopy(teacher.state_dict())
    student = MLP((1, 8, 8), 10, hidden=[16])
    kdforge.distill(teacher, student, data.train, data.val, {
        "epochs": 2, "losses": [{"kind": "kd"}, {"kind": "hint", "student_layer": "layers.0", "teacher_layer": "pool"}],
    }, run_dir=tmp_path)
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())


def test_teacher_call_builds_no_graph_and_stays_in_eval():
    t = Teacher(MLP((4,), 3, hidden=[5], dropout=0.5), ["layers.0"])
    t.model.train()  # a careless caller cannot switch dropout back on
    x = torch.randn(6, 4, requires_grad=True)
    logits, feats = t(x)
    assert not logits.requires_grad and logits.grad_fn is None
    assert feats["layers.0"].shape == (6, 5) and feats["layers.0"].grad_fn is None
    assert not t.model.training
    assert torch.equal(t(x)[0], logits)  # deterministic: dropout stays off
    assert t.calls == 2
