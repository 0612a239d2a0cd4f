"""Reasoning distillation: wrong teacher answers are filtered; the student learns rationale and answer."""
import pytest
import torch

from kdforge.config import DistillConfig
from kdforge.data.text import QADataset
from kdforge.errors import KDForgeError
from kdforge.methods.reasoning import ReasoningKD
from kdforge.models.hf import load_hf, load_tokenizer
from kdforge.models.students import from_config
from kdforge.teacher import Teacher
from kdforge.train.loop import fit
from kdforge.workflows.reasoning import (ANSWER, MultiTaskExamples, answer_accuracy, parse_answer, rationale_examples,
                                         teacher_rationales)
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)

TEMPLATE = "q: {question}\n"


def test_parse_answer_and_filtering():
    assert parse_answer("two plus two.\nAnswer: 4.") == ("two plus two.", "4")
    assert parse_answer("no idea") == ("no idea", None)
    fake = {"q: 1+1\n": "one and one. Answer: 2", "q: 2+2\n": "guess. answer is 5", "q: 3+3\n": "rambling"}
    kept, filtered = teacher_rationales(lambda ps: [fake[p] for p in ps], ["1+1", "2+2", "3+3"], ["2", "4", "6"], TEMPLATE)
    assert filtered == 2 and kept == [{"prompt": "q: 1+1\n", "rationale": "one and one.", "answer": "2"}]
    unlabeled, none = teacher_rationales(lambda ps: [fake[p] for p in ps], ["2+2"], None, TEMPLATE)
    assert none == 0 and unlabeled[0]["answer"] == "5"


def test_student_learns_rationale_and_answer(tiny_llama_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_llama_dir))
    student = from_config(load_hf(str(tiny_llama_dir), "causal_lm"), num_layers=1)
    examples = [{"prompt": TEMPLATE.format(question=q), "rationale": "add them", "answer": a}
                for q, a in [("1+1", "2"), ("2+2", "4"), ("3+3", "6"), ("4+4", "8")]]
    cfg = DistillConfig.model_validate({"epochs": 30, "batch_size": 8, "lr": 1e-2, "schedule": "constant",
                                        "lm": {"template": TEMPLATE, "max_new_tokens": 3, "answer_weight": 2.0}})
    m = ReasoningKD(student, None, cfg)
    train = MultiTaskExamples(examples, tok, 24)
    assert len(train) == 8
    val = QADataset(["1+1", "3+3"], ["2", "6"])
    metric, select = answer_accuracy(tok, cfg.lm), "accuracy"
    first = {k: v.item() for k, v in m.step({k: torch.stack([train[i][k] for i in range(8)]) for k in ("input_ids", "loss_mask", "task")}).items()}
    res = fit(m, train, val, cfg, tmp_path, 0, metric_fn=metric, select=select, quiet=True)
    assert res.history[-1]["train/answer"] < first["answer"] / 4 and res.history[-1]["train/rationale"] < first["rationale"] / 4
    assert res.best["val/accuracy"] == 1.0  # memorised answers, asked with the "[answer]" prefix
    assert ANSWER == "[answer] "


def test_all_filtered_and_long_prompt_are_errors(tiny_llama_dir):  # noqa: F811
    tok = load_tokenizer(str(tiny_llama_dir))
    teacher = load_hf(str(tiny_llama_dir), "causal_lm")
    cfg = DistillConfig.model_validate({"lm": {"template": TEMPLATE, "max_new_tokens": 4}})

    with pytest.raises(KDForgeError, match="every teacher generation had a wrong or missing answer"):
        rationale_examples(Teacher(teacher), tok, cfg.lm, ["1+1"], ["2"], length=24)
    with pytest.raises(KDForgeError, match="longer than the context of 64"):
        rationale_examples(Teacher(teacher), tok, cfg.lm, ["x" * 70], ["2"], length=24)
