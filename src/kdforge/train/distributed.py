"""The process group: one process, or many under torchrun / accelerate launch
(rank, world size, device, barrier, summed counters). Gradient sync is not here:
the engine (train/engine.py) wraps the method in DDP or FSDP2."""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
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

    acc = Accelerator(cpu=cpu)
    atexit.register(_close)
    return acc


def _close() -> None:
    """Meet the other ranks, then destroy the process group while the interpreter is still whole.

    Left to interpreter teardown, gloo aborts a rank now and then ("terminate called without an
    active exception", SIGABRT) after a run that succeeded: one rank tears its pairs down while
    the other still has DDP's last all-reduce in flight. The meeting is bounded, so a rank that
    failed alone still exits (within a minute) and torchrun reports it."""
    if not tdist.is_initialized():
        return
    if tdist.get_backend() == "gloo":
        try:
            tdist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:
            pass
    tdist.destroy_process_group()


_CHOSEN = {"device": "auto"}  # the process's device once a run named one (recipe `device`, API argument)


def context(device: str = "auto") -> Context:
    """Rank, world size and device; starts the process group under torchrun.

    The device is decided once: a call naming one (`cpu` / `cuda`) makes it the default of every
    later `context()` in this process (the loop, evaluation, the store, benchmarks)."""
    if device != "auto":
        _CHOSEN["device"] = device
    device = _CHOSEN["device"]
    want_cpu = device == "cpu" or os.environ.get("KDFORGE_DEVICE") == "cpu" or not torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or tdist.is_initialized():
        acc = _accelerator(want_cpu)
        return Context(acc.process_index, acc.num_processes, acc.device)
    return Context(0, 1, torch.device("cpu" if want_cpu else "cuda"))
