"""Student builders for HF models: from a config, by shrinking depth, by shrinking width.

`shrink_depth` keeps chosen transformer layers of the teacher and copies their
weights (DistilBERT, Sanh et al. 2019, kept every other layer of BERT);
embeddings, heads and norms are copied as they are. `shrink_width` builds a
narrower model and initialises each weight with the leading slice of the
teacher's (so the first heads / neurons carry over); `from_config` builds a
randomly initialised model of the same family with changed sizes.
"""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from kdforge.errors import KDForgeError
from kdforge.models.hf import HFCausalLM, HFClassifier, HFEmbedder, load_hf, wrap
from kdforge.registry import MODELS

_LAYER = re.compile(r"^(.*?\.layers?\.)(\d+)(\..*)$")  # bert.encoder.layer.3.x / model.layers.3.x
_SIZE_KEYS = {
    "num_layers": ("num_hidden_layers",),
    "hidden_size": ("hidden_size",),
    "intermediate_size": ("intermediate_size",),
    "num_heads": ("num_attention_heads",),
    "num_kv_heads": ("num_key_value_heads",),
}


def task_of(wrapper: nn.Module) -> str:
    for cls, task in ((HFClassifier, "classify"), (HFEmbedder, "embed"), (HFCausalLM, "causal_lm")):
        if isinstance(wrapper, cls):
            return task
    raise KDForgeError(f"expected a kdforge HF wrapper, got {type(wrapper).__name__}")


def _config(hf: nn.Module, **sizes) -> object:
    cfg = copy.deepcopy(hf.config)
    for key, value in sizes.items():
        if value is None:
            continue
        if key not in _SIZE_KEYS:
            raise KDForgeError(f"student: unknown size {key!r}; valid: {', '.join(_SIZE_KEYS)}")
        for attr in _SIZE_KEYS[key]:
            if hasattr(cfg, attr):
                setattr(cfg, attr, int(value))
    if hasattr(cfg, "head_dim") and sizes.get("hidden_size"):
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    if cfg.hidden_size % cfg.num_attention_heads:
        raise KDForgeError(f"student: hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_attention_heads}")
    if getattr(cfg, "num_key_value_heads", None) and cfg.num_attention_heads % cfg.num_key_value_heads:
        cfg.num_key_value_heads = cfg.num_attention_heads
    return cfg


def _new(wrapper: nn.Module, cfg) -> nn.Module:
    with torch.random.fork_rng():
        hf = type(wrapper.hf)(cfg)  # same HF class, random init
    extra = {"attentions": wrapper.attentions} if hasattr(wrapper, "attentions") else {}
    return wrap(hf.float(), task_of(wrapper), pad_id=wrapper.pad_id, **extra)


def from_config(wrapper: nn.Module, **sizes) -> nn.Module:
    """A randomly initialised model of the wrapper's family with changed sizes (num_layers, hidden_size, ...)."""
    return _new(wrapper, _config(wrapper.hf, **sizes))


def shrink_depth(wrapper: nn.Module, layers: list[int]) -> nn.Module:
    """Keep teacher layers `layers` (e.g. [0, 2, 4]) in order, weights copied; everything else copied too."""
    n = wrapper.hf.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if not layers or bad:
        raise KDForgeError(f"student.layers: {bad or layers} out of range; the teacher has layers 0..{n - 1}")
    student = from_config(wrapper, num_layers=len(layers))
    src = wrapper.hf.state_dict()
    new_of_old = {old: new for new, old in enumerate(layers)}
    mapped = {}
    for key, value in src.items():
        m = _LAYER.match(key)
        if m is None:
            mapped[key] = value
        elif int(m.group(2)) in new_of_old:
            mapped[f"{m.group(1)}{new_of_old[int(m.group(2))]}{m.group(3)}"] = value
    missing, _ = student.hf.load_state_dict(mapped, strict=False)
    if [k for k in missing if "rotary" not in k]:
        raise KDForgeError(f"student: could not copy teacher layers into {len(missing)} tensors, e.g. {missing[0]}")
    return student


def shrink_width(wrapper: nn.Module, hidden_size: int, intermediate_size: int | None = None,
                 num_heads: int | None = None, num_layers: int | None = None) -> nn.Module:
    """A narrower model whose every weight starts as the leading slice of the teacher's."""
    cfg = wrapper.hf.config
    heads = num_heads or max(1, cfg.num_attention_heads * hidden_size // cfg.hidden_size)
    inter = intermediate_size or cfg.intermediate_size * hidden_size // cfg.hidden_size
    student = from_config(wrapper, hidden_size=hidden_size, intermediate_size=inter, num_heads=heads,
                          num_kv_heads=min(heads, getattr(cfg, "num_key_value_heads", heads) or heads), num_layers=num_layers)
    src = wrapper.hf.state_dict()
    with torch.no_grad():
        for key, dst in student.hf.state_dict().items():
            if key in src and src[key].dim() == dst.dim():
                piece = src[key][tuple(slice(0, s) for s in dst.shape)]
                if piece.shape == dst.shape:
                    dst.copy_(piece)
    return student


__all__ = ["build_hf", "from_config", "shrink_depth", "shrink_width", "task_of"]


def build_hf(input_shape, num_classes: int, hf: str | None = None, task: str | None = None, layers=None,
             hidden_size=None, intermediate_size=None, num_heads=None, init=None, attentions=None,
             trust_remote_code=None) -> nn.Module:
    """Recipe model `name: hf`: load `hf`, then shrink it when sizes are given (see ModelConfig)."""
    if not hf:
        raise KDForgeError("hf: model `name: hf` needs an `hf:` field (local folder, .gguf file or alias)")
    if init == "prune":
        raise KDForgeError("init: prune measures importance on the training data, so the causal-LM workflow builds it "
                           "(method token_kd | sequence_kd | gkd); other workflows and the API take init: teacher | random")
    task = task or "classify"
    model = load_hf(hf, task, num_labels=num_classes if task == "classify" else None,
                    attentions=bool(attentions), trust_remote_code=bool(trust_remote_code))
    width = hidden_size or intermediate_size or num_heads
    if init == "random":
        return from_config(model, num_layers=len(layers) if layers else None, hidden_size=hidden_size,
                           intermediate_size=intermediate_size, num_heads=num_heads)
    if layers:
        model = shrink_depth(model, list(layers))
    if width:
        model = shrink_width(model, hidden_size or model.hf.config.hidden_size, intermediate_size, num_heads)
    return model


def _register() -> None:
    if "hf" not in MODELS:
        MODELS.register("hf")(build_hf)


_register()
