"""Forward hooks that capture named submodule outputs (or inputs) of any nn.Module.

Users never rewrite their model: a loss term names a module ("encoder.layer.3",
"net.2"), and the tap records what flows through it on every forward pass.
"""
from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor, nn

from kdforge.errors import KDForgeError


def resolve_module(model: nn.Module, name: str, role: str = "model") -> nn.Module:
    """The submodule called `name`; an unknown name lists the closest valid ones."""
    modules = dict(model.named_modules())
    if name not in modules:
        valid = [n for n in modules if n]
        close = difflib.get_close_matches(name, valid, n=5, cutoff=0.3)
        shown = close or valid[:8]
        raise KDForgeError(f"{role} has no module named {name!r}; closest valid names: {', '.join(shown)}")
    return modules[name]


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise TypeError(f"cannot tap a module whose output is {type(value).__name__}")


class _Hook:
    """One tap's forward hook. An object, not a closure: a deep copy of the tapped model (FSDP2 trains a
    copy, see train.engine) copies it with the model, so the copy's hooks fill the copy's taps (a closure
    would be shared, and the copy would read the original's stale outputs)."""

    def __init__(self, taps: "FeatureTaps", name: str, capture: str):
        self.taps, self.name, self.capture = taps, name, capture

    def __call__(self, _module: nn.Module, inputs: tuple, output: Any) -> None:
        self.taps.outputs[self.name] = _first_tensor(inputs if self.capture == "input" else output)


class FeatureTaps:
    """Registers one forward hook per name; `outputs[name]` holds the latest tensor.

    with FeatureTaps(model, ["net.1"]) as taps:
        model(x)
        h = taps["net.1"]   # (B, D)
    """

    def __init__(self, model: nn.Module, names: list[str] | set[str], capture: str = "output", role: str = "model"):
        if capture not in ("output", "input"):
            raise ValueError("capture must be 'output' or 'input'")
        self.outputs: dict[str, Tensor] = {}
        self._handles = []
        for name in sorted(set(names)):
            module = resolve_module(model, name, role)
            self._handles.append(module.register_forward_hook(_Hook(self, name, capture)))

    def __getitem__(self, name: str) -> Tensor:
        return self.outputs[name]

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
