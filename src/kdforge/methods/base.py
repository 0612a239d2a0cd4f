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
from dataclasses import dataclass

from torch import Tensor, nn

from kdforge.registry import METHODS


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


@dataclass(frozen=True)
class MethodSpec:
    """One method's registration (`METHODS`): what it is built from, what it reads, which workflow runs it.

    Every method is built one way: `cls(student, teacher, cfg, probe)` - the models (`student` a list of peers
    for mutual, `teacher` a list for multi_teacher, None where there is none), the recipe's `distill:` section
    and one batch of the data (shapes and class counts) - plus, when declared, `section=` (the recipe section
    named by `section`) and `tokenizers=` (student's, teacher's). `reads` lists the optional recipe fields the
    method and its workflow act on; a recipe that sets another one is refused (kdforge.config_refuse).
    """

    key: str
    cls: type
    workflow: str  # the WORKFLOWS key of the workflow that runs it (kdforge.workflows)
    task: str = "classify"  # what its models do: classify | embed | causal_lm
    teacher: bool = True  # built with a teacher (False: labels alone, or peers)
    section: str | None = None  # recipe section handed to the constructor as `section=`
    tokenizers: bool = False  # handed `tokenizers=(student's, teacher's)`
    reads: frozenset[str] = frozenset()  # optional recipe fields it acts on: distill.losses, store, compress, ...

    @property
    def fits_api(self) -> bool:
        """kdforge.distill builds it: what the classify workflow runs, one teacher (or none) and one student
        classifying (x, y) data, with no section or tokenizers."""
        return self.workflow == "classify" and self.task == "classify" and self.section is None and not self.tokenizers

    def build(self, student, teacher=None, cfg=None, probe=None, *, section=None, tokenizers=(None, None)) -> Method:
        kw = {"section": section} if self.section else {}
        if self.tokenizers:
            kw["tokenizers"] = tokenizers
        return self.cls(student, teacher, cfg, probe, **kw)

    __call__ = build  # METHODS.build(key, ...) builds through the registration


def register_method(key: str, cls: type | None = None, **spec):
    """Register method `key` (decorator, or called with the class): `spec` are MethodSpec's fields."""
    def deco(c: type) -> type:
        if "key" not in c.__dict__:  # the key errors name it by (its first registration)
            c.key = key
        METHODS.register(key)(MethodSpec(key, c, **spec))
        return c

    return deco(cls) if cls is not None else deco


def method_spec(key: str) -> MethodSpec:
    return METHODS.get(key)
