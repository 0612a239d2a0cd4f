"""Text classification KD: logits + hidden-state hint (projected) + MiniLM attention transfer
through the standard method, on HF encoders."""
import torch

from kdforge.config import DistillConfig
from kdforge.data.text import TokenDataset
from kdforge.methods.standard import StandardKD
from kdforge.models.hf import load_hf
from kdforge.models.students import shrink_width
from kdforge.train.batching import probe_batch
from kdforge.train.loop import fit
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)


def _ds(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, 12), generator=g)
    y = ids[:, 1] % 3
    return TokenDataset(ids, y)


def test_text_student_learns_with_logit_hint_and_attention_terms(tiny_bert_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    teacher = load_hf(str(tiny_bert_dir), "classify", num_labels=3, attentions=True)
    student = shrink_width(teacher, hidden_size=16, num_heads=2, num_layers=2)
    cfg = DistillConfig.model_validate({"epochs": 3, "batch_size": 16, "lr": 3e-3, "losses": [
        {"kind": "kd", "temperature": 2.0, "alpha": 0.5},
        {"kind": "hint", "student_layer": "hidden.2", "teacher_layer": "hidden.4", "weight": 0.5},
        {"kind": "attention_kl", "student_layer": "attn.1", "teacher_layer": "attn.3", "weight": 0.5}]})
    train, val = _ds(64, 0), _ds(32, 1)
    m = StandardKD(student, teacher, cfg, probe_batch(train))
    assert "hidden_2->hidden_4" in m.projections  # widths 16 vs 32
    before = {k: v.item() for k, v in m.step(probe_batch(train, 32)).items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    fit(m, train, val, cfg, tmp_path, 0, quiet=True)
    after = {k: v.item() for k, v in m.step(probe_batch(train, 32)).items()}
    assert after["attention_kl"] < before["attention_kl"] and after["hint"] < before["hint"]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
