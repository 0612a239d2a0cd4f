"""quantize_(model, config): INT8 dynamic quantization and fp16 / bf16 casting.

Backend choice, measured on this project's 2-core x86 CPU (torch 2.13, MLP
784-1024-1024-10, batch 32, one thread, p50): fp32 8.5 ms, torch.ao dynamic
INT8 (fbgemm/x86 kernels) 1.7 ms, torchao 0.18 Int8DynamicActivationInt8WeightConfig
13.2 ms (its eager CPU path falls back to generic int_mm). torchao is also not
a dependency. So INT8 dynamic uses torch.ao, with its deprecation warnings
silenced (they fire on every layer otherwise).

Dynamic INT8: weights stored int8 (per-tensor or per-channel), activations
quantized on the fly per batch; supports Linear and LSTM/GRU. Quantized models
are inference-only and run on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdforge.compress.base import FilterFn, Verb, quiet_deprecations, select
from kdforge.errors import KDForgeError

_DYNAMIC_TYPES = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU}
QUANTIZE = Verb("quantize_")  # its handlers: Int8Dynamic, Fp16, Bf16


@dataclass(frozen=True)
class Int8Dynamic:
    """INT8 weights, activations quantized per batch at run time (no calibration).

    layers: which module types to quantize; per_channel: one scale per output row.
    """

    layers: tuple[str, ...] = ("Linear", "LSTM", "GRU")
    per_channel: bool = False


@dataclass(frozen=True)
class Fp16:
    """Cast floating-point parameters and buffers to float16 (halves the size)."""


@dataclass(frozen=True)
class Bf16:
    """Cast floating-point parameters and buffers to bfloat16."""


def quantize_(model: nn.Module, config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Quantize `model` in place by `config` (Int8Dynamic, Fp16, Bf16); returns it.

    `filter_fn(module, name) -> bool` restricts which modules are touched. A model
    with no module the method supports is an error, never a silent no-op.
    """
    return QUANTIZE(model, config, filter_fn=filter_fn)


@QUANTIZE.register(Int8Dynamic)
def _int8_dynamic(model: nn.Module, config: Int8Dynamic, filter_fn: FilterFn | None) -> nn.Module:
    unknown = [t for t in config.layers if t not in _DYNAMIC_TYPES]
    if unknown:
        raise KDForgeError(f"Int8Dynamic.layers: unsupported {unknown}; valid: {', '.join(_DYNAMIC_TYPES)}")
    types = tuple(_DYNAMIC_TYPES[t] for t in config.layers)
    chosen = select(model, types, filter_fn)
    if not chosen:
        kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise KDForgeError(
            f"quantize_ Int8Dynamic: model {type(model).__name__} has no {'/'.join(config.layers)} layer to quantize "
            f"(its layers: {', '.join(kinds) or 'none'})"
        )
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name, _ in chosen}
    model.eval()
    with quiet_deprecations():
        quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
    return model


def _cast(model: nn.Module, dtype: torch.dtype, filter_fn: FilterFn | None) -> nn.Module:
    chosen = [m for n, m in model.named_modules() if filter_fn is None or filter_fn(m, n)]
    has_float = any(p.is_floating_point() for m in chosen for p in m.parameters(recurse=False))
    if not has_float:
        raise KDForgeError(f"quantize_ {dtype}: no floating-point parameters to cast in {type(model).__name__}")
    for m in chosen:
        for p in m.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(dtype)
        for name, b in m.named_buffers(recurse=False):
            if b.is_floating_point():
                setattr(m, name, b.to(dtype))
    return model


@QUANTIZE.register(Fp16)
def _fp16(model: nn.Module, config: Fp16, filter_fn: FilterFn | None) -> nn.Module:
    return _cast(model, torch.float16, filter_fn)


@QUANTIZE.register(Bf16)
def _bf16(model: nn.Module, config: Bf16, filter_fn: FilterFn | None) -> nn.Module:
    return _cast(model, torch.bfloat16, filter_fn)


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs must have for `model` (float16 after Fp16, float32 after Int8Dynamic)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
