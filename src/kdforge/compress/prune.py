"""prune_(model, config): magnitude pruning, unstructured (masks) or structured
(channels / neurons / heads physically removed, via torch-pruning's dependency graph).

Unstructured pruning zeroes the smallest |w| (per layer, or across all chosen
layers at once with scope="global") and makes the zeros permanent. The tensors
keep their shape, so dense CPU kernels run no faster: it saves space only once
the weights are stored sparse or compressed.

Structured pruning removes whole output neurons of Linear layers and output
channels of Conv layers (and the matching inputs of the next layer, BatchNorm
entries, ...), ranked by L2 magnitude. The model really has fewer parameters
and runs faster; accuracy usually needs a short recovery distillation after it.
The layer producing the model's output is never pruned (its width is the class count).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from kdforge.compress.base import FilterFn, check_amount, dispatch, handles, select
from kdforge.errors import KDForgeError

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Unstructured:
    """Zero the `amount` fraction of weights with the smallest magnitude.

    scope="layer": `amount` of each layer; scope="global": `amount` of all chosen weights together.
    """

    amount: float
    scope: Literal["global", "layer"] = "global"

    def __post_init__(self) -> None:
        check_amount(self.amount, "Unstructured.amount")
        if self.scope not in ("global", "layer"):
            raise KDForgeError(f"Unstructured.scope: expected 'global' or 'layer', got {self.scope!r}")


@dataclass(frozen=True)
class Structured:
    """Remove the `amount` fraction of output neurons / channels of each prunable layer.

    heads: also prune whole attention heads of nn.MultiheadAttention modules.
    round_to: keep widths multiples of this (friendlier to SIMD kernels).
    """

    amount: float
    heads: bool = False
    round_to: int | None = None

    def __post_init__(self) -> None:
        check_amount(self.amount, "Structured.amount")


def prune_(model: nn.Module, config, filter_fn: FilterFn | None = None, *, example_inputs: torch.Tensor | None = None) -> nn.Module:
    """Prune `model` in place by `config` (Unstructured or Structured); returns it.

    Structured pruning traces the model, so it needs `example_inputs`, one batch
    of model inputs, e.g. shape (1, 1, 8, 8) for digits.
    """
    return dispatch("prune_", model, config, filter_fn, example_inputs=example_inputs)


@handles(Unstructured)
def _unstructured(model: nn.Module, config: Unstructured, filter_fn: FilterFn | None, example_inputs=None) -> nn.Module:
    chosen = select(model, _PRUNABLE, filter_fn)
    if not chosen:
        raise KDForgeError(f"prune_ Unstructured: {type(model).__name__} has no Linear or Conv layer to prune")
    params = [(m, "weight") for _, m in chosen]
    if config.scope == "global":
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=config.amount)
    else:
        for m, name in params:
            tprune.l1_unstructured(m, name, amount=config.amount)
    for m, name in params:
        tprune.remove(m, name)  # bake the mask into the weight: zeros stay, no hooks left
    return model


@handles(Structured)
def _structured(model: nn.Module, config: Structured, filter_fn: FilterFn | None, example_inputs=None) -> nn.Module:
    import torch_pruning as tp

    if example_inputs is None:
        raise KDForgeError("prune_ Structured: pass example_inputs (one batch of model inputs) so the model can be traced")
    chosen = {id(m) for _, m in select(model, _PRUNABLE, filter_fn)}
    layers = [m for _, m in model.named_modules() if isinstance(m, _PRUNABLE)]
    if not chosen:
        raise KDForgeError(f"prune_ Structured: {type(model).__name__} has no Linear or Conv layer to prune")
    # The output layer's width is the class count: never prune it. filter_fn-rejected layers are kept too.
    ignored = [layers[-1]] + [m for m in layers if id(m) not in chosen]
    if all(id(m) not in chosen or m is layers[-1] for m in layers):
        raise KDForgeError(f"prune_ Structured: the only prunable layer of {type(model).__name__} is its output layer")
    num_heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    was_training = model.training
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=config.amount, ignored_layers=ignored, round_to=config.round_to,
            num_heads=num_heads, prune_num_heads=config.heads and bool(num_heads), prune_head_dims=not config.heads,
        )
        pruner.step()
    except KDForgeError:
        raise
    except Exception as e:  # tracing failures come as many types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KDForgeError(f"prune_ Structured: could not trace {type(model).__name__} for pruning: {first}") from None
    model.train(was_training)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of Linear/Conv layers."""
    ws = [m.weight for m in model.modules() if isinstance(m, _PRUNABLE)]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / max(total, 1)
