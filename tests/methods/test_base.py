"""One registration per method: every registered method is built the one way (MethodSpec.build) and trains."""
import pytest
import torch

from kdforge.config import DistillConfig, Recipe
from kdforge.data.text import LMWindows, TokenDataset
from kdforge.methods.base import MethodSpec
from kdforge.models import MLP
from kdforge.models.hf import load_hf, load_tokenizer
from kdforge.models.students import from_config, shrink_width
from kdforge.registry import METHODS, WORKFLOWS
from kdforge.train.batching import collate_indexed
from kdforge.workflows import run_recipe  # noqa: F401  (registers every workflow)
from tests.hf_tiny import tiny_bert_dir, tiny_llama_dir  # noqa: F401  (fixtures)

CFG = {"lm": {"chunk_size": 5, "prompt_tokens": 4, "max_new_tokens": 6, "lmbda": 0.5}}


def _classify(spec: MethodSpec):
    """Models and one batch of 6 features, 3 classes; the models' shape follows the registration."""
    torch.manual_seed(0)
    student = MLP((6,), 3, hidden=[8])
    if spec.section == "mutual":  # peers: the student is a list
        student = [student, MLP((6,), 3, hidden=[12])]
    teacher = MLP((6,), 3, hidden=[16]) if spec.teacher else None
    if spec.section == "ensemble":  # several teachers: a list
        teacher = [teacher, MLP((6,), 3, hidden=[24])]
    batch = {"x": torch.randn(8, 6), "y": torch.randint(0, 3, (8,)), "idx": torch.arange(8)}
    return student, teacher, batch, (None, None)


def _embed(bert_dir):
    teacher = load_hf(str(bert_dir), "embed")
    student = shrink_width(teacher, hidden_size=16, num_heads=2)
    ids = torch.randint(5, 100, (8, 10))
    ids[:, 0] = 2
    ds = TokenDataset(ids, torch.arange(8) % 2)
    return student, teacher, collate_indexed([(i, ds[i]) for i in range(8)]), (None, None)


def _causal_lm(spec: MethodSpec, llama_dir):
    teacher = load_hf(str(llama_dir), "causal_lm")
    student = from_config(teacher, num_layers=1, hidden_size=16, num_heads=2)
    tok = load_tokenizer(str(llama_dir))
    if spec.workflow == "reasoning":  # the workflow turns teacher generations into rationale / answer sequences
        batch = {"input_ids": torch.randint(5, 100, (4, 12)), "loss_mask": torch.ones(4, 12, dtype=torch.long),
                 "task": torch.tensor([0, 1, 0, 1])}
    else:
        ds = LMWindows(torch.randint(5, 100, (8, 12), generator=torch.Generator().manual_seed(0)), prompt_tokens=3)
        batch = collate_indexed([(i, ds[i]) for i in range(8)])
    return student, teacher, batch, (tok, tok)


def _params(models) -> dict:
    models = models if isinstance(models, list) else [models]
    return {f"{k}.{n}": p.detach().clone() for k, m in enumerate(models) for n, p in m.named_parameters()}


@pytest.mark.parametrize("key", METHODS.keys())
def test_every_registered_method_is_built_by_its_registration_and_trains_two_steps(key, tiny_bert_dir, tiny_llama_dir):  # noqa: F811
    spec = METHODS.get(key)
    assert spec.key == key and spec.workflow in WORKFLOWS  # a workflow runs it
    if spec.task == "classify":
        student, teacher, batch, toks = _classify(spec)
    elif spec.task == "embed":
        student, teacher, batch, toks = _embed(tiny_bert_dir)
    else:
        student, teacher, batch, toks = _causal_lm(spec, tiny_llama_dir)
    section = Recipe.model_fields[spec.section].get_default(call_default_factory=True) if spec.section else None
    probe = {k: v[:2] for k, v in batch.items()}
    m = METHODS.build(key, student, teacher, DistillConfig.model_validate(CFG), probe, section=section, tokenizers=toks)
    assert type(m) is spec.cls
    s_before, t_before = _params(student), _params(teacher) if teacher is not None else {}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(2):
        losses = m.step(batch)
        assert losses and all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after = _params(student)
    peers = student if isinstance(student, list) else [student]
    for k in range(len(peers)):  # every student (each peer) learned
        assert any(not torch.equal(after[n], v) for n, v in s_before.items() if n.startswith(f"{k}.")), k
    assert all(torch.equal(_params(teacher)[n], v) for n, v in t_before.items())  # the teacher is frozen


def test_a_method_without_a_section_is_not_handed_one():
    spec = METHODS.get("standard")
    assert spec.section is None and not spec.tokenizers
    student, teacher, batch, _ = _classify(spec)
    m = spec.build(student, teacher, DistillConfig(), batch, section=object(), tokenizers=(object(), object()))
    assert m.student is student
