"""What every compression verb shares: handler lookup by config type, the
`filter_fn(module, name)` that chooses where a verb applies, and module swapping.

A verb (`quantize_`, `prune_`, `lowrank_`) mutates the model in place and
returns it, as torchao's `quantize_` does. Handlers are registered per config
class, so adding a method is one class plus one decorated function.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

from torch import nn

from kdforge.errors import KDForgeError

FilterFn = Callable[[nn.Module, str], bool]

_HANDLERS: dict[type, Callable] = {}


def handles(config_type: type) -> Callable:
    """Decorator: `fn(model, config, filter_fn)` is the handler for `config_type`."""

    def deco(fn: Callable) -> Callable:
        _HANDLERS[config_type] = fn
        return fn

    return deco


def dispatch(verb: str, model: nn.Module, config: object, filter_fn: FilterFn | None, **kwargs) -> nn.Module:
    """Run the handler registered for type(config); unknown configs list the valid ones."""
    if not isinstance(model, nn.Module):
        raise KDForgeError(f"{verb}: expected a torch nn.Module, got {type(model).__name__}")
    handler = _HANDLERS.get(type(config))
    if handler is None:
        valid = ", ".join(sorted(t.__name__ for t in _HANDLERS))
        raise KDForgeError(f"{verb}: no handler for config {type(config).__name__}; valid configs: {valid}")
    return handler(model, config, filter_fn, **kwargs)


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
