"""The chunked LM head inside token_kd: the same losses and gradients as full (B, T, V) logits,
for a live teacher (its head chunked too), a dense store and a sampled store; teacher work counted."""
import pytest
import torch

from kdforge.config import DistillConfig
from kdforge.data.text import LMWindows
from kdforge.losses.sparse import SparseTarget
from kdforge.methods.sequence import LazyLogits, TokenKD
from kdforge.models.hf import load_hf
from kdforge.models.students import from_config
from kdforge.store import CachedTeacher, TeacherStore, write_store
from kdforge.teacher import Teacher
from kdforge.train.batching import collate_indexed
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)

LOSSES = {"live": [{"kind": "kd", "alpha": 0.5, "temperature": 2.0}, {"kind": "jsd", "beta": 0.3}, {"kind": "hard_ce"}],
          "dense": [{"kind": "kd", "alpha": 0.5, "temperature": 2.0}, {"kind": "reverse_kl"}],
          "random": [{"kind": "kd", "alpha": 0.7, "temperature": 1.0}, {"kind": "hard_ce"}],
          "packed": [{"kind": "kd", "alpha": 0.7, "temperature": 1.0}, {"kind": "hard_ce"}],
          "hybrid": [{"kind": "kd", "alpha": 1.0, "temperature": 1.0}],
          "priority": [{"kind": "kd", "alpha": 0.7, "temperature": 1.0}, {"kind": "hard_ce"}]}


@pytest.fixture(scope="module")
def models(tiny_llama_dir):  # noqa: F811
    torch.manual_seed(0)
    teacher = load_hf(str(tiny_llama_dir), "causal_lm")
    return teacher, from_config(teacher, num_layers=1, hidden_size=16, num_heads=2)


def _losses_and_grads(student, teacher, losses, chunk, batch):
    cfg = DistillConfig.model_validate({"losses": losses, "lm": {"chunk_size": chunk}})
    student.zero_grad()
    out = TokenKD(student, teacher, cfg, batch).step(batch)
    sum(out.values()).backward()
    return {k: v.detach() for k, v in out.items()}, {n: p.grad.clone() for n, p in student.named_parameters()}


@pytest.mark.parametrize("source", ["live", "dense", "random", "hybrid", "priority", "packed"])
def test_chunked_head_equals_full_logits(models, tmp_path, source):
    teacher_model, student = models
    ds = LMWindows(torch.randint(5, 100, (6, 13), generator=torch.Generator().manual_seed(3)), prompt_tokens=3)
    batch = collate_indexed([(i, ds[i]) for i in range(6)])
    if source == "live":
        teacher = Teacher(teacher_model)
    else:
        path = write_store(tmp_path / source, Teacher(teacher_model), ds, k="all" if source == "dense" else 8,
                           sampling="random" if source in ("dense", "packed") else source, dtype="float32",
                           weights={"priority": "uint8", "packed": "packed"}.get(source, "float16"), quiet=True)
        teacher = CachedTeacher(TeacherStore(path))
    full, g_full = _losses_and_grads(student, teacher, LOSSES[source], None, batch)
    calls = teacher.calls
    chunked, g_chunked = _losses_and_grads(student, teacher, LOSSES[source], 5, batch)
    assert teacher.calls == 2 * calls  # the chunked path counts the teacher's work the same way
    assert full.keys() == chunked.keys()
    for k in full:
        assert torch.allclose(full[k], chunked[k], atol=1e-5), k
    for n in g_full:
        assert torch.allclose(g_full[n], g_chunked[n], atol=1e-5), n


def test_live_teacher_logits_are_lazy_and_sparse_stores_stay_sparse(models, tmp_path):
    teacher_model, student = models
    ds = LMWindows(torch.randint(5, 100, (4, 9), generator=torch.Generator().manual_seed(4)), prompt_tokens=2)
    batch = collate_indexed([(i, ds[i]) for i in range(4)])
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd", "temperature": 1.0}], "lm": {"chunk_size": 4}})
    lazy = TokenKD(student, Teacher(teacher_model), cfg, batch).teacher_logits(batch["input_ids"], batch["idx"])
    assert isinstance(lazy, LazyLogits) and lazy.hidden.shape == (4, 9, 32)  # hidden states, not (B, T, V) logits
    assert torch.allclose(lazy[:, 2:5].materialise(), teacher_model(batch["input_ids"])[:, 2:5], atol=1e-5)
    path = write_store(tmp_path / "r", Teacher(teacher_model), ds, k=8, sampling="random", quiet=True)
    target = TokenKD(student, CachedTeacher(TeacherStore(path)), cfg, batch).teacher_logits(batch["input_ids"], batch["idx"])
    assert isinstance(target, SparseTarget) and target.sampled and target.indices.shape == (4, 9, 8)


def test_sampled_store_refuses_biased_terms_and_other_temperatures(models, tmp_path):
    from kdforge.errors import KDForgeError

    teacher_model, student = models
    ds = LMWindows(torch.randint(5, 100, (4, 9), generator=torch.Generator().manual_seed(5)), prompt_tokens=2)
    batch = collate_indexed([(i, ds[i]) for i in range(4)])
    cached = CachedTeacher(TeacherStore(write_store(tmp_path / "r", Teacher(teacher_model), ds, k=8, temperature=2.0, quiet=True)))
    with pytest.raises(KDForgeError, match=r"distill.losses.1: reverse_kl against a random-sampled store"):
        TokenKD(student, cached, DistillConfig.model_validate({"losses": [{"kind": "kd", "temperature": 2.0}, {"kind": "reverse_kl"}]}), batch)
    with pytest.raises(KDForgeError, match=r"distill.losses.0.temperature: 1.0 differs from the store's sampling temperature 2.0"):
        TokenKD(student, cached, DistillConfig.model_validate({"losses": [{"kind": "kd", "temperature": 1.0}]}), batch)
