"""What every compression verb shares: a handler table per verb keyed by config type, the
`filter_fn(module, name)` that chooses where a verb applies, and module swapping.

A verb (`quantize_`, `prune_`, `lowrank_`) mutates the model in place and returns it, as
torchao's `quantize_` does; `export` writes artifacts and returns their manifest. Each verb
owns one `Verb` table, so adding a method is one config class plus one function registered
on its verb, and a config registered with one verb is refused by the others.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from torch import nn

from kdforge.errors import KDForgeError

FilterFn = Callable[[nn.Module, str], bool]


class Verb:
    """One compression verb: its handlers by config type, and the inputs they take.

    A handler is `fn(model, config, **inputs)` with exactly the keyword inputs named in
    `takes` (missing ones are None): filter_fn for the module verbs, example_inputs for
    structured pruning, out_dir / example_inputs / calibration for export.
    """

    def __init__(self, name: str, takes: tuple[str, ...] = ("filter_fn",)):
        self.name = name
        self.takes = takes
        self._handlers: dict[type, Callable[..., Any]] = {}

    def register(self, config_type: type) -> Callable:
        """Decorator: the handler of this verb for configs of exactly `config_type`."""

        if config_type in self._handlers:
            raise ValueError(f"{self.name}: {config_type.__name__} is registered twice")

        def deco(fn: Callable) -> Callable:
            self._handlers[config_type] = fn
            return fn

        return deco

    def handler(self, config: object) -> Callable[..., Any]:
        """The handler for type(config); an unknown config lists the valid ones."""
        fn = self._handlers.get(type(config))
        if fn is None:
            valid = ", ".join(sorted(t.__name__ for t in self._handlers))
            raise KDForgeError(f"{self.name}: no handler for config {type(config).__name__}; valid configs: {valid}")
        return fn

    def __repr__(self) -> str:
        return f"Verb({self.name!r})"

    def pick(self, **available: Any) -> dict[str, Any]:
        """The inputs among `available` that this verb takes (a workflow offers all it has)."""
        return {k: v for k, v in available.items() if k in self.takes}

    def __call__(self, model: nn.Module, config: object, **inputs: Any) -> Any:
        unknown = sorted(set(inputs) - set(self.takes))
        if unknown:
            raise KDForgeError(f"{self.name}: unexpected inputs {unknown}; it takes {', '.join(self.takes)}")
        if not isinstance(model, nn.Module):
            raise KDForgeError(f"{self.name}: expected a torch nn.Module, got {type(model).__name__}")
        return self.handler(config)(model, config, **{k: inputs.get(k) for k in self.takes})


def select(model: nn.Module, types: tuple[type, ...], filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs of the given types that `filter_fn` accepts, in model order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, types) and (filter_fn is None or filter_fn(m, n))]


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted `name` (e.g. "layers.0.0") with `new`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """torch.ao.quantization warns on every call in torch >= 2.10; say it once, not per layer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.ao.*")
        yield


def check_amount(amount: float, field: str = "amount") -> float:
    if not isinstance(amount, (int, float)) or not 0 < float(amount) < 1:
        raise KDForgeError(f"{field}: pruning amount must be strictly between 0 and 1, got {amount!r}")
    return float(amount)
