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

from kdforge.compress.base import FilterFn, Verb, check_amount, select
from kdforge.errors import KDForgeError

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRUNE = Verb("prune_", takes=("filter_fn", "example_inputs"))  # its handlers: Unstructured, Structured


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

    heads: prune whole attention heads (Hugging Face BERT-style query/key/value
        attention), `amount` of them; otherwise heads keep their count and each
        head's width shrinks with the hidden size.
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
    return PRUNE(model, config, filter_fn=filter_fn, example_inputs=example_inputs)


@PRUNE.register(Unstructured)
def _unstructured(model: nn.Module, config: Unstructured, filter_fn: FilterFn | None, example_inputs: torch.Tensor | None) -> nn.Module:
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


@PRUNE.register(Structured)
def _structured(model: nn.Module, config: Structured, filter_fn: FilterFn | None, example_inputs: torch.Tensor | None) -> nn.Module:
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
    num_heads = bert_style_heads(model)
    if config.heads and not num_heads:
        raise KDForgeError(f"prune_ Structured(heads=True): {type(model).__name__} has no attention this pruner supports "
                           "(Hugging Face BERT-style query/key/value layers)")
    was_training = model.training
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=config.amount, ignored_layers=ignored, round_to=config.round_to,
            num_heads=num_heads, prune_num_heads=config.heads, prune_head_dims=not config.heads,
            head_pruning_ratio=config.amount if config.heads else 0.0,
            output_transform=lambda out: (out.logits if hasattr(out, "logits") else out).float().sum(),
        )
        pruner.step()
        if num_heads:
            fix_bert_style_attention(model, pruner.num_heads)
    except KDForgeError:
        raise
    except Exception as e:  # tracing failures come as many types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KDForgeError(f"prune_ Structured: could not trace {type(model).__name__} for pruning: {first}") from None
    model.train(was_training)
    return model


def bert_style_heads(model: nn.Module) -> dict[nn.Module, int]:
    """{query/key/value Linear: head count} for Hugging Face BERT-style self-attention modules."""
    heads = {}
    for m in model.modules():
        if all(isinstance(getattr(m, k, None), nn.Linear) for k in ("query", "key", "value")) and hasattr(m, "num_attention_heads"):
            heads.update({m.query: m.num_attention_heads, m.key: m.num_attention_heads, m.value: m.num_attention_heads})
    return heads


def fix_bert_style_attention(model: nn.Module, num_heads: dict[nn.Module, int]) -> None:
    """After pruning, make the attention modules and the HF config agree with the new widths,
    so the model runs and `save_pretrained` / `from_pretrained` round-trips."""
    attn = [m for m in model.modules() if hasattr(m, "query") and hasattr(m, "num_attention_heads")]
    for m in attn:
        m.num_attention_heads = num_heads[m.query]
        m.attention_head_size = m.query.out_features // m.num_attention_heads
        m.all_head_size = m.query.out_features
    cfg = getattr(model, "config", None)
    if cfg is None or not attn:
        return
    cfg.num_attention_heads = attn[0].num_attention_heads
    emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if emb is not None and hasattr(cfg, "hidden_size"):
        cfg.hidden_size = emb.embedding_dim
    inter = next((m for n, m in model.named_modules() if n.endswith("intermediate.dense")), None)
    if inter is not None and hasattr(cfg, "intermediate_size"):
        cfg.intermediate_size = inter.out_features
    if hasattr(cfg, "head_dim"):
        cfg.head_dim = attn[0].attention_head_size


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of Linear/Conv layers."""
    ws = [m.weight for m in model.modules() if isinstance(m, _PRUNABLE)]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / max(total, 1)
