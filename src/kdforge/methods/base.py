"""What a method gives the one training loop.

A method is an `nn.Module`: `forward(batch)` turns a batch into named,
already-weighted loss tensors. Its parameters are exactly what it trains: the
student plus whatever learns beside it (projections, peers, a generator). The
frozen teacher lives inside it as a plain attribute (`Teacher` is not a module),
so it has no gradients, is never in the optimizer and is never synced or sharded
by DDP / FSDP. The loop wraps the method (engine.prepare), sums the terms, steps
the optimizer, evaluates `student`, checkpoints the method's state dict and never
knows which method ran.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor, nn


class Method(nn.Module):
    student: nn.Module
    # FSDP2 (train.engine): shard each child's repeated blocks as units of their own. False for a method that
    # calls a child through torch.func.functional_call, which needs the child's parameters gathered as one unit.
    shard_blocks: bool = True

    def __init__(self) -> None:
        super().__init__()
        # Per-epoch counters (e.g. samples filtered): plain numbers or device tensors (no host
        # sync while training); saved in checkpoints so a resumed epoch reports what an
        # uninterrupted one would.
        self.counters: Counter = Counter()

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: {"x": (B, ...), "y": (B,), "idx": (B,)} -> {"term": scalar tensor}."""
        raise NotImplementedError

    def step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The loss terms of one batch, outside the loop (tests, probes): `self(batch)`."""
        return self(batch)

    @property
    def trainable(self) -> nn.Module:
        """What the optimizer updates and checkpoints hold: the method itself (the teacher is not in it)."""
        return self

    def frozen(self) -> list:
        """The frozen teachers this method calls (moved with it, never trained)."""
        teacher = self.__dict__.get("teacher")
        return [teacher] if teacher is not None else []

    def epoch_stats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.counters.items()}

    def reset_stats(self) -> None:
        self.counters.clear()

    def counter_state(self) -> dict:
        return {"counters": self.epoch_stats()}

    def load_counter_state(self, state: dict) -> None:
        self.counters = Counter(state.get("counters", {}))

    def to(self, *args, **kwargs) -> "Method":
        super().to(*args, **kwargs)
        device = next((p.device for p in self.parameters()), None)
        for t in self.frozen():
            t.to(device if device is not None else args[0])
        return self
