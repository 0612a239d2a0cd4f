"""What a method gives the one training loop.

A method owns the modules it trains (`trainable`: the student plus anything
learned alongside it, such as projections) and turns a batch into named,
already-weighted loss tensors. The loop sums them, steps the optimizer,
evaluates `student`, checkpoints `trainable` and never knows which method ran.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor, nn


class Method:
    trainable: nn.Module
    student: nn.Module

    def step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: {"x": (B, ...), "y": (B,), "idx": (B,)} -> {"term": scalar tensor}."""
        raise NotImplementedError

    # Per-epoch counters (e.g. samples filtered); saved in checkpoints so a
    # resumed epoch reports what an uninterrupted one would.
    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def epoch_stats(self) -> dict[str, float]:
        return dict(self.counters)

    def reset_stats(self) -> None:
        self.counters.clear()

    def state_dict(self) -> dict:
        return {"counters": dict(self.counters)}

    def load_state_dict(self, state: dict) -> None:
        self.counters = Counter(state.get("counters", {}))

    def to(self, device: torch.device) -> "Method":
        self.trainable.to(device)
        if getattr(self, "teacher", None) is not None:
            self.teacher.to(device)
        return self
