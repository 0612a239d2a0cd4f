"""Recipe model section -> nn.Module, with errors that name the field."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import kdforge.models  # noqa: F401  (registers built-in models)
from kdforge.errors import KDForgeError
from kdforge.registry import MODELS


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int, role: str, seed: int) -> nn.Module:
    """Builds `cfg.name` with the section's options; loads `cfg.checkpoint` weights when given."""
    builder = MODELS.get(cfg.name)
    torch.manual_seed(seed)
    try:
        model = builder(input_shape, cfg.num_classes or num_classes, **cfg.builder_kwargs())
    except TypeError as e:
        raise KDForgeError(f"{role}: model {cfg.name!r} does not take these options ({e})") from None
    except ValueError as e:
        raise KDForgeError(f"{role}.name: {e}") from None
    if cfg.checkpoint:
        load_checkpoint_file(model, Path(cfg.checkpoint), role)
    return model


def load_checkpoint_file(model: nn.Module, path: Path, role: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise KDForgeError(f"{role}.checkpoint: file not found: {path}")
    if path.suffix != ".safetensors":
        raise KDForgeError(f"{role}.checkpoint: {path} is not a .safetensors file (pickled checkpoints are refused)")
    try:
        load_model(model, str(path))
    except (RuntimeError, SafetensorError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KDForgeError(f"{role}.checkpoint: weights in {path} do not fit the {role} model: {first[:300]}") from None
