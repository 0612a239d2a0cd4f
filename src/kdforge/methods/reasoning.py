"""Reasoning distillation: "Distilling step-by-step" (Hsieh et al. 2023).

1. The teacher answers each training question from a prompt template
   (`distill.lm.template`), writing a rationale that ends in "Answer: X".
2. When the data has labels, generations whose answer is wrong are dropped.
3. The student learns two tasks on the same question, told apart by a prefix:
   "[rationale]" → the teacher's rationale, "[answer]" → the answer alone
   (loss = CE_rationale + answer_weight · CE_answer, on target tokens only).
4. Evaluation asks the student for the answer ("[answer]" prefix, greedy) and
   scores exact match against the label.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.errors import KDForgeError
from kdforge.methods.base import Method
from kdforge.methods.sequence import TokenKD, check_context, sample
from kdforge.registry import METHODS
from kdforge.teacher import Teacher

RATIONALE, ANSWER = "[rationale] ", "[answer] "
_ANSWER_RE = re.compile(r"answer(?:\s+is)?\s*[:=]?\s*([^\n]+)", re.I)


def normalise(answer: str) -> str:
    return answer.strip().strip(".").strip().lower()


def parse_answer(text: str) -> tuple[str, str | None]:
    """Generated text -> (rationale before the last "Answer:", normalised answer or None)."""
    found = list(_ANSWER_RE.finditer(text))
    if not found:
        return text.strip(), None
    last = found[-1]
    return text[: last.start()].strip(), normalise(last.group(1))


def teacher_rationales(generate: Callable[[list[str]], list[str]], questions: list[str], answers: list[str] | None,
                       template: str) -> tuple[list[dict], int]:
    """Teacher generations -> kept examples {"prompt", "rationale", "answer"} and the number filtered
    (wrong answer, or no answer found, when labels exist)."""
    prompts = [template.format(question=q) for q in questions]
    kept, filtered = [], 0
    for i, (prompt, text) in enumerate(zip(prompts, generate(prompts))):
        rationale, pred = parse_answer(text)
        label = normalise(answers[i]) if answers is not None else None
        if label is not None and pred != label:
            filtered += 1
            continue
        kept.append({"prompt": prompt, "rationale": rationale, "answer": label if label is not None else (pred or "")})
    return kept, filtered


def greedy_text(model: Callable, tokenizer, prompts: list[str], max_new_tokens: int, context: int | None) -> list[str]:
    """Greedy continuation of each prompt up to EOS (one at a time: prompts differ in length), decoded."""
    outs = []
    eos = tokenizer.eos_token_id
    for p in prompts:
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        if context is not None and ids.shape[1] + max_new_tokens > context:
            raise KDForgeError(f"data: a prompt of {ids.shape[1]} tokens + distill.lm.max_new_tokens={max_new_tokens} "
                               f"is longer than the context of {context} positions")
        new = sample(model, ids, max_new_tokens, greedy=True, eos_id=eos)[0, ids.shape[1]:].tolist()
        outs.append(tokenizer.decode(new[: new.index(eos)] if eos in new else new, skip_special_tokens=True))
    return outs


class MultiTaskExamples(Dataset):
    """Two sequences per example, right-padded to `length`: {"input_ids", "loss_mask", "task"}
    with task 0 = rationale, 1 = answer; loss_mask marks the target tokens."""

    def __init__(self, examples: list[dict], tokenizer, length: int):
        self.items = []
        for ex in examples:
            for task, prefix, target in ((0, RATIONALE, f"{ex['rationale']}\nAnswer: {ex['answer']}"), (1, ANSWER, ex["answer"])):
                src = tokenizer(prefix + ex["prompt"])["input_ids"]
                tgt = tokenizer(" " + target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                ids = (src + tgt)[:length]
                mask = ([0] * len(src) + [1] * len(tgt))[:length]
                pad = length - len(ids)
                self.items.append({"input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
                                   "loss_mask": torch.tensor(mask + [0] * pad), "task": torch.tensor(task)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@METHODS.register("reasoning")
class ReasoningKD(Method):
    """Multi-task rationale + answer training on filtered teacher generations (see module docstring)."""

    def __init__(self, student: nn.Module, teacher, cfg, probe=None, *, tokenizers=(None, None), data=None,
                 examples: list[dict] | None = None, length: int = 128):
        super().__init__()
        self.cfg, self.lm = cfg, cfg.lm
        self.tokenizer = tokenizers[0] or tokenizers[1]
        if self.tokenizer is None:
            raise KDForgeError("reasoning: needs the models' tokenizer (student.hf / teacher.hf)")
        self.student = student
        self.teacher = teacher if isinstance(teacher, Teacher) or teacher is None else Teacher(teacher)
        if getattr(self.teacher, "cached", False):
            raise KDForgeError("reasoning needs the live teacher (it generates rationales); remove the `store:` section")
        self.length = length
        check_context(student, length, "student")
        if examples is None:
            if data is None:
                raise KDForgeError("reasoning: give the training questions (data) or precomputed examples")
            ds = data.train
            ctx = getattr(getattr(self.teacher, "model", None), "max_positions", None)
            def gen(prompts: list[str]) -> list[str]:
                self.teacher.calls += len(prompts)  # teacher work: one generation per prompt
                self.teacher.samples += len(prompts)
                return greedy_text(self.teacher.model, self.tokenizer, prompts, self.lm.max_new_tokens, ctx)

            examples, filtered = teacher_rationales(gen, ds.questions, ds.answers, self.lm.template)
            self.counters["teacher_filtered"] = filtered
        if not examples:
            raise KDForgeError("reasoning: every teacher generation had a wrong or missing answer; nothing to learn from "
                               "(check distill.lm.template and distill.lm.max_new_tokens)")
        self.examples = examples
        self.train_data = MultiTaskExamples(examples, self.tokenizer, length)

    def train_set(self, data=None) -> Dataset:
        return self.train_data

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, mask, task = batch["input_ids"], batch["loss_mask"][:, 1:].float(), batch["task"]
        logits = self.student(ids)[:, :-1]  # (B, T-1, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none") * mask  # (B, T-1)
        out = {}
        for name, t, w in (("rationale", 0, 1.0), ("answer", 1, self.lm.answer_weight)):
            rows = task == t
            out[name] = w * ce[rows].sum() / mask[rows].sum().clamp_min(1.0)
        return out

    def metrics(self, prefix: str = ANSWER):
        """(metric_fn, "accuracy"): exact-match answers on a QADataset, greedy, from `prefix` + template."""
        tok, template, n = self.tokenizer, self.lm.template, self.lm.max_new_tokens

        def answer_accuracy(model: nn.Module, dataset, device) -> dict[str, float]:
            was = model.training
            model.eval()
            prompts = [prefix + template.format(question=q) for q in dataset.questions]
            outs = greedy_text(model, tok, prompts, n, getattr(model, "max_positions", None))
            model.train(was)
            preds = [parse_answer(o)[1] if prefix != ANSWER else normalise(o.split("\n")[0]) for o in outs]
            right = sum(p == normalise(a) for p, a in zip(preds, dataset.answers))
            return {"accuracy": right / max(len(preds), 1)}

        return answer_accuracy, "accuracy"

    def teacher_metrics(self):
        return self.metrics(prefix="")


__all__ = ["MultiTaskExamples", "ReasoningKD", "greedy_text", "parse_answer", "teacher_rationales"]
