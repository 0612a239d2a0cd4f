"""Reasoning distillation: "Distilling step-by-step" (Hsieh et al. 2023).

1. The teacher answers each training question from a prompt template
   (`distill.lm.template`), writing a rationale that ends in "Answer: X".
2. When the data has labels, generations whose answer is wrong are dropped.
3. The student learns two tasks on the same question, told apart by a prefix:
   "[rationale]" → the teacher's rationale, "[answer]" → the answer alone
   (loss = CE_rationale + answer_weight · CE_answer, on target tokens only).
4. Evaluation asks the student for the answer ("[answer]" prefix, greedy) and
   scores exact match against the label.

Steps 1, 2 and 4 are the workflow's (kdforge.workflows.reasoning builds the training set of
`MultiTaskExamples` and the metric); the method is step 3: batches {"input_ids", "loss_mask", "task"}.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.methods.base import Method, register_method
from kdforge.teacher import Teacher


@register_method("reasoning", workflow="reasoning", task="causal_lm", reads=frozenset({"distill.lm", "compress.export"}))
class ReasoningKD(Method):
    """Multi-task rationale + answer training on the teacher's filtered generations (see module docstring);
    the frozen teacher is kept for the workflow, which generates with it."""

    def __init__(self, student: nn.Module, teacher, cfg, probe=None):
        super().__init__()
        self.cfg, self.lm = cfg, cfg.lm
        self.student = student
        self.teacher = teacher if isinstance(teacher, Teacher) or teacher is None else Teacher(teacher)
        if getattr(self.teacher, "cached", False):
            raise KDForgeError("reasoning needs the live teacher (it generates rationales); remove the `store:` section")

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, mask, task = batch["input_ids"], batch["loss_mask"][:, 1:].float(), batch["task"]
        logits = self.student(ids)[:, :-1]  # (B, T-1, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none") * mask  # (B, T-1)
        out = {}
        for name, t, w in (("rationale", 0, 1.0), ("answer", 1, self.lm.answer_weight)):  # task 0: rationale, 1: answer
            rows = task == t
            out[name] = w * ce[rows].sum() / mask[rows].sum().clamp_min(1.0)
        return out


__all__ = ["ReasoningKD"]
