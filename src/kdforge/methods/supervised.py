"""Plain supervised training: cross-entropy on the labels, no teacher.

Used to train teachers and for the "student alone" baseline arm.
"""
from __future__ import annotations

from torch import Tensor, nn

from kdforge.methods.base import Method
from kdforge.methods.terms import labelled_ce
from kdforge.registry import METHODS


@METHODS.register("supervised")
class Supervised(Method):
    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, cfg=None, probe=None):
        super().__init__()
        self.student = student

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.student(batch["x"])  # (B, C)
        return {"ce": labelled_ce(logits, batch["y"], batch.get("n_labelled"))}
