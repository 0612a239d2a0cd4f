"""Process-group plumbing for the loop: one process, or many under torchrun /
accelerate launch. Gradients are averaged explicitly after backward (all-reduce),
so methods call their modules directly and the loop never wraps them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.distributed as tdist


@dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad /= self.world

    def all_finite(self, value: torch.Tensor) -> bool:
        ok = torch.tensor([float(torch.isfinite(value).all())], device=self.device)
        if self.world > 1:
            tdist.all_reduce(ok, op=tdist.ReduceOp.MIN)
        return bool(ok.item())

    def sum_dict(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return dict(zip(keys, t.tolist()))


@lru_cache(maxsize=None)
def _accelerator(cpu: bool):
    from accelerate import Accelerator

    return Accelerator(cpu=cpu)


def context(device: str = "auto") -> Context:
    """Rank, world size and device; starts the process group under torchrun."""
    want_cpu = device == "cpu" or os.environ.get("KDFORGE_DEVICE") == "cpu" or not torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or tdist.is_initialized():
        acc = _accelerator(want_cpu)
        return Context(acc.process_index, acc.num_processes, acc.device)
    return Context(0, 1, torch.device("cpu" if want_cpu else "cuda"))
