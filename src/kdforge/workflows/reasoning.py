"""Workflow of method `reasoning` ("Distilling step-by-step", Hsieh et al. 2023): the causal-LM
workflow (workflows.lm) with its own training set and metric.

Before training, the teacher answers each training question from `distill.lm.template` (greedy);
generations whose answer is wrong are dropped when the data has labels, and each kept one becomes two
sequences, "[rationale]" -> the rationale and "[answer]" -> the answer (`MultiTaskExamples`), which
the method (methods.reasoning) trains on. Validation and test ask the student for the answer
("[answer]" prefix, greedy) and score exact match; the teacher is asked without a prefix.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from kdforge.errors import KDForgeError
from kdforge.methods.sequence import check_context, sample
from kdforge.registry import WORKFLOWS
from kdforge.workflows.lm import LMTask, run_lm


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


def answer_accuracy(tokenizer, lm, prefix: str = ANSWER) -> Callable:
    """metric_fn: exact-match answers on a QADataset, greedy, from `prefix` + the template."""
    template, n = lm.template, lm.max_new_tokens

    def metric(model: nn.Module, dataset, device) -> dict[str, float]:
        was = model.training
        model.eval()
        prompts = [prefix + template.format(question=q) for q in dataset.questions]
        outs = greedy_text(model, tokenizer, prompts, n, getattr(model, "max_positions", None))
        model.train(was)
        preds = [parse_answer(o)[1] if prefix != ANSWER else normalise(o.split("\n")[0]) for o in outs]
        right = sum(p == normalise(a) for p, a in zip(preds, dataset.answers))
        return {"accuracy": right / max(len(preds), 1)}

    return metric


def rationale_examples(teacher, tokenizer, lm, questions: list[str], answers: list[str] | None,
                       length: int) -> tuple[MultiTaskExamples, int]:
    """The training set of the teacher's kept generations, and how many were filtered. `teacher` is the
    method's frozen Teacher (its work is counted)."""
    ctx = getattr(teacher.model, "max_positions", None)

    def gen(prompts: list[str]) -> list[str]:
        teacher.calls += len(prompts)  # teacher work: one generation per prompt
        teacher.samples += len(prompts)
        return greedy_text(teacher.model, tokenizer, prompts, lm.max_new_tokens, ctx)

    examples, filtered = teacher_rationales(gen, questions, answers, lm.template)
    if not examples:
        raise KDForgeError("reasoning: every teacher generation had a wrong or missing answer; nothing to learn from "
                           "(check distill.lm.template and distill.lm.max_new_tokens)")
    return MultiTaskExamples(examples, tokenizer, length), filtered


def reasoning_task(recipe, method, teacher, data, tokenizers) -> LMTask:
    """The training set the teacher generates and the answer-accuracy metrics (an LMTask for run_lm)."""
    tokenizer = tokenizers[0] or tokenizers[1]
    if tokenizer is None:
        raise KDForgeError("reasoning: needs the models' tokenizer (student.hf / teacher.hf)")
    length = recipe.data.max_length  # tokens per training sequence (prompt + target, right-padded)
    check_context(method.student, length, "student")
    lm = recipe.distill.lm
    train, method.counters["teacher_filtered"] = rationale_examples(method.teacher, tokenizer, lm, data.train.questions,
                                                                    data.train.answers, length)
    return LMTask(metric=answer_accuracy(tokenizer, lm), select="accuracy",
                  teacher_metric=answer_accuracy(tokenizer, lm, prefix=""), train=train)


@WORKFLOWS.register("reasoning")
def run_reasoning(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    return run_lm(recipe, resume=resume, force=force, quiet=quiet, task_for=reasoning_task)


__all__ = ["ANSWER", "MultiTaskExamples", "answer_accuracy", "greedy_text", "parse_answer", "rationale_examples",
           "reasoning_task", "run_reasoning", "teacher_rationales"]
