"""The engine of one training run: device, process group, precision and parallelism,
resolved once from the recipe and handed to the loop.

Gradient sync is torch's: `DistributedDataParallel` (bucketed all-reduce overlapped
with backward, `no_sync` while accumulating) or FSDP2 `fully_shard` (parameters,
gradients and optimizer state sharded across ranks). Mixed precision is
`torch.autocast` (bf16 or fp16 with a gradient scaler). kdforge syncs nothing by hand.

The frozen teacher is not a parameter of the method (see methods.base), so DDP never
broadcasts it and FSDP never shards it.

FSDP2 trains a copy of the method whose parameters are DTensor shards (the copy is
made after a checkpoint was restored into the method); `sync_to` gathers the full
weights back into the caller's method (on every rank, collectively) before each
evaluation and checkpoint, so everything outside the loop (evaluation, tests,
compression, export, rank-0-only work) sees plain tensors.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from kdforge.errors import KDForgeError
from kdforge.train.distributed import Context, context

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FUSED_DEVICES = {"cpu", "cuda"}  # where torch's fused AdamW kernel exists
_FULL = StateDictOptions(full_state_dict=True)  # every rank gets the full tensors
_FULL_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 gets them on CPU, the others nothing


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on a GPU that supports it, fp32 elsewhere; fp16 is refused on CPU (no fast kernels)."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else ("fp16" if device.type == "cuda" else "fp32")
    if precision == "fp16" and device.type == "cpu":
        raise KDForgeError("distill.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    return precision


def resolve_parallel(parallel: str, world: int) -> str:
    """auto -> ddp when several processes run, none for one; ddp/fsdp in a single process act as none."""
    if world == 1:
        return "none"
    return "ddp" if parallel == "auto" else parallel


def _computes(module: nn.Module) -> bool:
    """False for parameter containers (ModuleDict, ModuleList, ParameterDict...): they have no forward of
    their own, so FSDP2 cannot shard them; their members are sharded instead and the rest stays with the owner."""
    return type(module).forward is not nn.Module.forward


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def shard_units(method: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The FSDP2 units of a method -> (blocks, owners). Blocks: the repeated blocks of each computing
    child (the members of its ModuleLists: transformer layers, MLP layers). Owners: each child itself
    (student, a peer, a generator, one projection), holding what its blocks do not (embeddings, heads:
    the chunked LM loss reads lm_head.weight after the student's forward). Containers are walked into,
    never sharded: a ModuleDict of projections gives one unit per projection. The method itself is
    sharded last by the caller (it keeps whatever parameters no unit holds)."""
    units: list[nn.Module] = []
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if not _has_params(child):
                continue
            if not _computes(child):  # a container: its members are the units
                visit(child)
                continue
            found = list(dict.fromkeys(b for sub in child.modules() if isinstance(sub, nn.ModuleList)
                                       for b in sub if _computes(b) and _has_params(b)))
            blocks.extend(reversed(found))  # a block nested in a block comes first: FSDP2 shards inside out
            units.append(child)

    visit(method)
    return blocks, units


@dataclass
class Engine:
    ctx: Context
    precision: str = "fp32"
    parallel: str = "none"
    scaler: Any = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg, device: str = "auto") -> "Engine":
        ctx = context(device)
        precision = resolve_precision(cfg.precision, ctx.device)  # the schema (TrainConfig) holds the defaults
        eng = cls(ctx, precision, resolve_parallel(cfg.parallel, ctx.world))
        if precision == "fp16":
            eng.scaler = torch.amp.GradScaler(ctx.device.type)
        return eng

    # the process group ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def barrier(self) -> None:
        self.ctx.barrier()

    def sum_dict(self, values: dict[str, float]) -> dict[str, float]:
        return self.ctx.sum_dict(values)

    # wrapping -------------------------------------------------------------------------
    def prepare(self, method: nn.Module) -> nn.Module:
        """Move the method (and its frozen teachers) to the device and wrap it for this world."""
        method.to(self.ctx.device)
        if self.parallel == "ddp":
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            # static_graph: every batch's graph uses the same parameters (a method's terms are fixed by its
            # recipe), so DDP learns once, on the first step, which of them are unused (e.g. a head that a
            # features-only phase never touches) instead of searching the graph on every step
            return DistributedDataParallel(method, device_ids=ids, static_graph=True)
        if self.parallel == "fsdp":
            frozen = {id(t): t for t in method.frozen()}  # the copy shares the teachers, never copies them
            work = copy.deepcopy(method, memo=frozen)
            mp = MixedPrecisionPolicy(param_dtype=DTYPES[self.precision], reduce_dtype=torch.float32) \
                if self.precision != "fp32" else MixedPrecisionPolicy()
            blocks, owners = shard_units(work)
            whole = not getattr(work, "shard_blocks", True)  # the method calls a child with a parameter set of its
            # own (torch.func.functional_call): each child is then one unit, resharded after each forward
            for unit in [] if whole else blocks:  # the repeated blocks: gathered for their own forward and backward
                fully_shard(unit, mp_policy=mp)
            for unit in owners:  # the rest of each child stays gathered from forward to backward: a method may
                fully_shard(unit, mp_policy=mp, reshard_after_forward=whole)  # read it outside the child's forward
            fully_shard(work, mp_policy=mp)
            return work
        return method

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def no_sync(self, model: nn.Module, accumulating: bool):
        """Skip the gradient all-reduce on micro-batches that only accumulate."""
        if accumulating and isinstance(model, DistributedDataParallel):
            return model.no_sync()
        if self.parallel == "fsdp":
            self.unwrap(model).set_requires_gradient_sync(not accumulating)
        return contextlib.nullcontext()

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=DTYPES[self.precision])

    # state ----------------------------------------------------------------------------
    def sync_to(self, model: nn.Module, method: nn.Module) -> None:
        """Copy the trained weights into `method` when they live elsewhere (FSDP shards); all ranks call it."""
        if self.parallel == "fsdp":
            method.load_state_dict(get_model_state_dict(model, options=_FULL))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        if self.parallel == "fsdp":
            return get_optimizer_state_dict(model, optimizer, options=_FULL_RANK0)  # only rank 0 saves it
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.parallel == "fsdp":
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)

    # one optimizer step ---------------------------------------------------------------
    def optimizer(self, params: list, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW, with torch's fused kernel where the device has one (CPU, CUDA): one kernel updates every
        parameter instead of a loop of per-tensor ops (on CPU about 3x faster per step, same results)."""
        fused = self.device.type in FUSED_DEVICES and all(p.is_floating_point() for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list, max_grad_norm: float | None,
             loss_sum: torch.Tensor | None = None) -> bool:
        """Unscale, clip and step; False (and no step) when a gradient or `loss_sum` is not finite.

        Reading the total gradient norm (and the loss sum) is the step's one host sync; it also
        decides the clipping, so grads are rescaled only when the norm exceeds `max_grad_norm` (the
        same result as clip_grad_norm_, without a multiply on every step). With several processes
        the finiteness flag is all-reduced, so every rank takes the same decision."""
        if self.scaler is not None:  # fp16: an overflow is normal; the scaler skips that step and lowers its scale
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
            self.scaler.step(optimizer)
            self.scaler.update()
            return True
        grads = [p.grad for p in params if p.grad is not None]
        if self.parallel == "fsdp":  # the norm of the sharded gradients, as one full tensor
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
            parts = [norm.full_tensor() if hasattr(norm, "full_tensor") else norm]
        else:  # one norm per gradient, combined on the host below: no extra kernels for the total
            parts = list(torch._foreach_norm(grads)) if grads else []
        if loss_sum is not None:
            parts.append(loss_sum if loss_sum.device == self.device else loss_sum.to(self.device))
        check = torch.stack(parts).float() if parts else torch.zeros(1, device=self.device)
        if self.ctx.world > 1:  # the ranks' flags ANDed (min) in the same read; the norms are equal on every rank
            both = torch.cat([torch.isfinite(check).all().float().reshape(1), check])
            tdist.all_reduce(both, op=tdist.ReduceOp.MIN)
            flag, *values = both.tolist()
            finite = flag == 1.0
        else:
            values = check.tolist()  # the one host read
            finite = math.isfinite(sum(values))  # a nan or inf anywhere makes the sum one
        value = math.hypot(*values[:len(values) - (loss_sum is not None)])  # the total norm
        if not finite:
            return False
        if max_grad_norm and value > max_grad_norm:
            torch._foreach_mul_(grads, max_grad_norm / (value + 1e-6))
        optimizer.step()
        return True
