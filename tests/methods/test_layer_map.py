"""Layer-wise distillation (`kind: layerwise`, `layer_map: uniform`): the map, the terms it expands
into, and their shapes on two HF encoders of different depth, width and head count."""
import pytest
import torch

from kdforge.config import DistillConfig
from kdforge.methods.standard import StandardKD
from kdforge.methods.terms import expand_layer_maps, uniform_layer_map
from kdforge.models.hf import load_hf
from kdforge.models.students import shrink_width
from kdforge.teacher import Teacher
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)


@pytest.mark.parametrize("m, n, want", [(2, 4, [0, 2, 4]), (4, 6, [0, 2, 3, 5, 6]), (3, 6, [0, 2, 4, 6]), (6, 6, list(range(7)))])
def test_uniform_map_is_monotone_and_ends_on_the_last_layer(m, n, want):
    pairs = uniform_layer_map(m, n)
    assert [s for s, _ in pairs] == list(range(m + 1))
    assert [t for _, t in pairs] == want


def _models(tiny_bert_dir):  # noqa: F811
    torch.manual_seed(0)
    teacher = load_hf(str(tiny_bert_dir), "classify", num_labels=3, attentions=True)  # 4 layers, width 32, 4 heads
    student = shrink_width(teacher, 16, 32, num_heads=2, num_layers=2)  # 2 layers, width 16, 2 heads
    return teacher, student


def test_layerwise_expands_to_every_student_layer(tiny_bert_dir):  # noqa: F811
    teacher, student = _models(tiny_bert_dir)
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd"}, {"kind": "layerwise", "embedding_weight": 0.5}]})
    terms = expand_layer_maps(cfg.losses, student, Teacher(teacher))
    pairs = [(t.kind, t.student_layer, t.teacher_layer, t.weight) for t in terms[1:]]
    assert terms[0].kind == "kd"
    assert pairs == [("hint", "hidden.0", "hidden.0", 0.5), ("hint", "hidden.1", "hidden.2", 1.0),
                     ("hint", "hidden.2", "hidden.4", 1.0), ("attention_kl", "attn.0", "attn.1", 1.0),
                     ("attention_kl", "attn.1", "attn.3", 1.0)]


def test_layerwise_losses_have_the_shapes_and_projections_they_need(tiny_bert_dir):  # noqa: F811
    teacher, student = _models(tiny_bert_dir)
    x = torch.randint(5, 40, (4, 10))
    cfg = DistillConfig.model_validate({"losses": [{"kind": "layerwise"}]})
    method = StandardKD(student, teacher, cfg, {"x": x})
    assert set(method.projections) == {"hidden_0->hidden_0", "hidden_1->hidden_2", "hidden_2->hidden_4"}
    assert all(p.proj.weight.shape == (32, 16) for p in method.projections.values())  # student 16 -> teacher 32
    losses = method.step({"x": x, "y": torch.zeros(4, dtype=torch.long)})
    assert len(losses) == 5 and all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    feats = method.s_taps.outputs
    assert feats["hidden.1"].shape == (4, 10, 16) and feats["attn.1"].shape == (4, 2, 10, 10)
    sum(losses.values()).backward()  # gradients reach the student and the projections, not the teacher
    assert student.hf.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.proj.weight.grad is not None for p in method.projections.values())
    assert all(p.grad is None for p in teacher.parameters())


def test_layerwise_needs_an_hf_encoder():
    with pytest.raises(ValueError, match="not a kdforge HF encoder"):
        expand_layer_maps(DistillConfig.model_validate({"losses": [{"kind": "layerwise"}]}).losses,
                          torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
