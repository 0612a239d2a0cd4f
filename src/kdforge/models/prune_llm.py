"""Structured pruning of Hugging Face Llama-family causal LMs by activation importance (Minitron).

Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation";
Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice". As in NVIDIA Model Optimizer's
`mcore_minitron`, importance is read from activations on a small calibration sample of the
training data, collected by forward hooks (no gradients):

  attention heads   the L2 norm of each head's output (the input of o_proj, (B, T, H, hd)) over hd
  MLP neurons       |activation| at the input of down_proj, (B, T, I)
  embedding channels  |output| of every RMSNorm (each layer's two and the final one), (B, T, D)
  layers            the increase of the calibration loss when the layer alone is skipped
                    ("perplexity"), or 1 - cos(layer input, layer output) ("block_importance", Men et al. 2024)

Per sample a statistic is the mean over its real tokens; samples are combined by their L2 norm
(Minitron's best aggregation: mean over the sequence, L2 over the batch).

What is kept, and how the model stays a normal HF model:
  - heads respect grouped-query attention: `num_kv_groups` keeps whole KV groups (the groups
    with the largest summed head importance, each with its key/value head), and `num_heads`
    keeps the same number of query heads inside every kept group (its most important ones),
    so each key/value head still serves a contiguous block of query heads;
  - head_dim never changes, so RoPE (applied per head over head_dim) is untouched;
  - embedding channels are pruned in the embedding table, every norm and every projection
    alike; a tied LM head is the same (sliced) table;
  - layers: the `num_layers` most important, in their original order;
  - every kept index set is in its original order, so pruning nothing is the identity.
The result is a fresh model of the same class, built from a config with the new sizes and
loaded with the sliced weights: `save_pretrained` / `from_pretrained` and ONNX export see a
plain, smaller model.
"""
from __future__ import annotations

import copy
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.models.hf import wrap

LAYER_METRICS = ("perplexity", "block_importance")
_LAYER = re.compile(r"^(.*)\.layers\.(\d+)\.(.+)$")


@dataclass
class PruneTarget:
    """Sizes of the pruned model; None keeps the original's."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_groups: int | None = None
    num_layers: int | None = None


@dataclass
class Importance:
    """Higher = more important. hidden (D,), heads (L, H), neurons (L, I), layers (L,)."""

    hidden: Tensor
    heads: Tensor
    neurons: Tensor
    layers: Tensor
    layer_metric: str = "perplexity"


def _parts(model: nn.Module):
    """(decoder body, its layers) of a Llama-family model; other architectures are refused."""
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = getattr(body, "layers", None)
    need = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")
    if not layers or not hasattr(body, "embed_tokens") or not hasattr(body, "norm") or not all(_has(layers[0], n) for n in need):
        raise KDForgeError(f"student.init: prune supports Llama-family decoders (q/k/v/o_proj, gate/up/down_proj, RMSNorm); "
                           f"got {type(model).__name__}")
    return body, layers


def _has(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


def sizes(config) -> dict[str, int]:
    heads = config.num_attention_heads
    return {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size, "num_heads": heads,
            "num_kv_groups": getattr(config, "num_key_value_heads", None) or heads, "num_layers": config.num_hidden_layers,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads}


def resolve_target(config, target: PruneTarget, field: str = "student.prune") -> dict[str, int]:
    """The pruned sizes, every field filled; a size larger than the original or GQA groups that
    do not divide are errors naming the field."""
    old = sizes(config)
    new = {k: getattr(target, k) if getattr(target, k) is not None else old[k] for k in old if k != "head_dim"}
    for k, v in new.items():
        if not 1 <= v <= old[k]:
            raise KDForgeError(f"{field}.{k}: {v} is not between 1 and the model's {old[k]}")
    if target.num_heads is None and target.num_kv_groups is not None:  # whole groups: their heads go with them
        new["num_heads"] = old["num_heads"] // old["num_kv_groups"] * new["num_kv_groups"]
    if new["num_heads"] % new["num_kv_groups"]:
        raise KDForgeError(f"{field}.num_heads: {new['num_heads']} query heads cannot be spread evenly over "
                           f"{new['num_kv_groups']} KV groups (num_kv_groups); give a multiple of it")
    if new["num_heads"] // new["num_kv_groups"] > old["num_heads"] // old["num_kv_groups"]:
        raise KDForgeError(f"{field}.num_heads: {new['num_heads']} heads in {new['num_kv_groups']} KV groups is more than the "
                           f"{old['num_heads'] // old['num_kv_groups']} query heads each group has; keep more groups")
    return {**new, "head_dim": old["head_dim"]}


class _Stats:
    """Sum over samples of (per-sample mean over real tokens)^2, per channel: sqrt at the end = L2 over samples."""

    def __init__(self):
        self.mask: Tensor | None = None  # (B, T) real tokens of the batch being run
        self.sums: dict[str, Tensor] = {}

    def add(self, key: str, x: Tensor) -> None:
        """x (B, T, C) non-negative -> adds sum_b (mean_t x[b, t])^2 to sums[key] (C,)."""
        m = self.mask.to(x.dtype)[..., None]  # (B, T, 1)
        per_sample = (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, C)
        s = per_sample.double().pow(2).sum(0)
        self.sums[key] = self.sums[key] + s if key in self.sums else s

    def l2(self, key: str) -> Tensor:
        return self.sums[key].sqrt().float()


@contextmanager
def _hooks(model: nn.Module, stats: _Stats, head_dim: int):
    body, layers = _parts(model)
    handles = []

    def heads(i):
        def hook(_mod, args):
            x = args[0].detach().float()  # (B, T, H * hd)
            stats.add(f"heads.{i}", x.view(*x.shape[:2], -1, head_dim).norm(dim=-1))  # (B, T, H)
        return hook

    def neurons(i):
        return lambda _mod, args: stats.add(f"neurons.{i}", args[0].detach().float().abs())  # (B, T, I)

    def hidden(_mod, _args, out):
        stats.add("hidden", out.detach().float().abs())  # (B, T, D)

    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(heads(i)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(neurons(i)))
        handles += [layer.input_layernorm.register_forward_hook(hidden), layer.post_attention_layernorm.register_forward_hook(hidden)]
    handles.append(body.norm.register_forward_hook(hidden))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _loss(model: nn.Module, batches: list[dict]) -> float:
    """Mean next-token cross-entropy over the scored tokens (loss_mask) of the calibration batches."""
    total, count = 0.0, 0.0
    for b in batches:
        ids, mask = b["input_ids"], b["loss_mask"][:, 1:].float()
        logits = model(input_ids=ids).logits[:, :-1].float()  # (B, T-1, V) predicts ids[:, 1:]
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        total += float((ce * mask).sum())
        count += float(mask.sum())
    return total / max(count, 1.0)


@contextmanager
def _without_layer(model: nn.Module, i: int):
    body, layers = _parts(model)
    body.layers = nn.ModuleList(layer for j, layer in enumerate(layers) if j != i)
    try:
        yield
    finally:
        body.layers = layers


def _real(batch: dict) -> Tensor:
    return batch.get("attention_mask", torch.ones_like(batch["input_ids"]))


@torch.no_grad()
def importance(model: nn.Module, batches: list[dict], layer_metric: str = "perplexity", score_layers: bool = True) -> Importance:
    """Scores of every head, neuron, channel and layer of `model` (an HF Llama-family causal LM) on
    calibration batches [{"input_ids": (B, T), "loss_mask": (B, T), "attention_mask"?: (B, T)}].
    score_layers=False leaves the layer scores 0 (no layer is pruned: skips the extra passes)."""
    if layer_metric not in LAYER_METRICS:
        raise KDForgeError(f"student.prune.layer_metric: {layer_metric!r} is not one of {', '.join(LAYER_METRICS)}")
    if not batches:
        raise KDForgeError("student.prune: no calibration samples")
    _, layers = _parts(model)
    was = model.training
    model.eval()
    stats, n = _Stats(), len(layers)
    block = torch.zeros(n, dtype=torch.float64)
    block_count = 0.0

    def block_hook(i):
        def hook(_mod, args, out):
            h_in, h_out = args[0].float(), (out[0] if isinstance(out, tuple) else out).float()
            m = stats.mask.float()
            block[i] += float(((1 - F.cosine_similarity(h_in, h_out, dim=-1)) * m).sum())  # (B, T) -> sum over real tokens
        return hook

    blocks = score_layers and layer_metric == "block_importance"
    extra = [layer.register_forward_hook(block_hook(i)) for i, layer in enumerate(layers)] if blocks else []
    try:
        with _hooks(model, stats, sizes(model.config)["head_dim"]):
            for b in batches:
                stats.mask = _real(b)
                block_count += float(stats.mask.sum())
                model(input_ids=b["input_ids"])
    finally:
        for h in extra:
            h.remove()
    if not score_layers:
        layer_scores = torch.zeros(n)
    elif layer_metric == "perplexity":  # skip one layer at a time: how much worse the calibration loss gets
        base = _loss(model, batches)
        scores = []
        for i in range(n):
            with _without_layer(model, i):
                scores.append(_loss(model, batches) - base)
        layer_scores = torch.tensor(scores)
    else:
        layer_scores = (block / max(block_count, 1.0)).float()
    model.train(was)
    return Importance(hidden=stats.l2("hidden"), heads=torch.stack([stats.l2(f"heads.{i}") for i in range(n)]),
                      neurons=torch.stack([stats.l2(f"neurons.{i}") for i in range(n)]), layers=layer_scores,
                      layer_metric=layer_metric)


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the k largest scores, in ascending index order (ties: the lower index)."""
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return torch.sort(order).values


@dataclass
class Plan:
    """Kept indices of the original model: layers (L',), hidden (D',), per kept layer its query heads and KV groups and neurons."""

    layers: Tensor
    hidden: Tensor
    heads: list[Tensor]
    groups: list[Tensor]
    neurons: list[Tensor]
    sizes: dict[str, int]


def plan(config, imp: Importance, target: PruneTarget) -> Plan:
    new, old = resolve_target(config, target), sizes(config)
    per_group, new_per_group = old["num_heads"] // old["num_kv_groups"], new["num_heads"] // new["num_kv_groups"]
    layers = _top(imp.layers, new["num_layers"])
    heads, groups, neurons = [], [], []
    for layer in layers.tolist():
        by_group = imp.heads[layer].view(old["num_kv_groups"], per_group)  # query heads g*r .. g*r+r-1 share KV head g
        kept_groups = _top(by_group.sum(1), new["num_kv_groups"])
        kept = [g * per_group + _top(by_group[g], new_per_group) for g in kept_groups.tolist()]
        groups.append(kept_groups)
        heads.append(torch.cat(kept))
        neurons.append(_top(imp.neurons[layer], new["intermediate_size"]))
    return Plan(layers, _top(imp.hidden, new["hidden_size"]), heads, groups, neurons, new)


def _rows(units: Tensor, width: int) -> Tensor:
    """Indices of units (heads / groups) -> the rows of a projection holding them, `width` rows per unit."""
    return (units[:, None] * width + torch.arange(width)).reshape(-1)


def _pruned_config(config, p: Plan):
    cfg = copy.deepcopy(config)
    s = p.sizes
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = s["hidden_size"], s["intermediate_size"], s["num_layers"]
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = s["num_heads"], s["num_kv_groups"], s["head_dim"]
    if getattr(cfg, "layer_types", None):  # per-layer attention kinds follow their layers
        cfg.layer_types = [cfg.layer_types[i] for i in p.layers.tolist()]
    return cfg


def _slice(rest: str, w: Tensor, hid: Tensor, q: Tensor, kv: Tensor, ff: Tensor) -> Tensor:
    """A decoder layer's tensor `rest` (its name inside the layer) cut to the kept rows / columns."""
    out_in = {"self_attn.q_proj": (q, hid), "self_attn.k_proj": (kv, hid), "self_attn.v_proj": (kv, hid),
              "self_attn.o_proj": (hid, q), "mlp.gate_proj": (ff, hid), "mlp.up_proj": (ff, hid), "mlp.down_proj": (hid, ff),
              "input_layernorm": (hid, None), "post_attention_layernorm": (hid, None)}
    module, kind = rest.rsplit(".", 1)
    if module not in out_in:
        return w  # per-head norms (q_norm / k_norm over head_dim) and the like keep their shape
    rows, cols = out_in[module]
    w = w.index_select(0, rows)
    return w.index_select(1, cols) if kind == "weight" and cols is not None and w.dim() == 2 else w


@torch.no_grad()
def prune_llama(model: nn.Module, target: PruneTarget, imp: Importance) -> nn.Module:
    """A new, smaller model of `model`'s class keeping what `imp` ranks highest (see the module docstring)."""
    _parts(model)
    p = plan(model.config, imp, target)
    cfg = _pruned_config(model.config, p)
    with torch.random.fork_rng():  # the fresh model's random init is overwritten: leave the caller's RNG alone
        new = type(model)(cfg)
    new = new.to(dtype=next(model.parameters()).dtype)
    old_sd, hd = model.state_dict(), p.sizes["head_dim"]
    prefix = model.base_model_prefix
    out = {}
    for key, dst in new.state_dict().items():
        m = _LAYER.match(key)
        if m:
            j = int(m.group(2))
            src = old_sd[f"{m.group(1)}.layers.{int(p.layers[j])}.{m.group(3)}"]
            w = _slice(m.group(3), src, p.hidden, _rows(p.heads[j], hd), _rows(p.groups[j], hd), p.neurons[j])
        elif key in (f"{prefix}.embed_tokens.weight", "lm_head.weight"):
            w = old_sd[key].index_select(1, p.hidden)  # (V, D'): a tied head is the same table
        elif key == f"{prefix}.norm.weight":
            w = old_sd[key].index_select(0, p.hidden)
        else:
            w = old_sd[key]
        if w.shape != dst.shape:
            raise KDForgeError(f"student.prune: cannot map {key} {tuple(w.shape)} onto the pruned {tuple(dst.shape)}")
        out[key] = w
    new.load_state_dict(out, strict=True)
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    return new.train(model.training)


def calibration_batches(dataset, samples: int, batch_size: int, seed: int) -> list[dict]:
    """`samples` training samples drawn with `seed`, as batches of {"input_ids", "loss_mask", "attention_mask"?}
    (right padding every row of a batch shares is cut off: in a causal LM it changes no real token)."""
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=g)[: min(samples, len(dataset))].tolist()
    out = []
    for start in range(0, len(picked), batch_size):
        items = [dataset[i] for i in picked[start : start + batch_size]]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k in ("input_ids", "loss_mask", "attention_mask")}
        if "attention_mask" in batch:
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        out.append(batch)
    return out


def prune_causal_lm(wrapper: nn.Module, cfg, dataset, seed: int) -> tuple[nn.Module, dict]:
    """A kdforge causal-LM wrapper pruned to the sizes of `cfg` (student.prune: sizes, samples,
    batch_size, layer_metric), importance measured on `cfg.samples` samples of `dataset` drawn
    with `seed`. Returns (pruned wrapper, what was kept: sizes, layers, parameter counts)."""
    hf = wrapper.hf
    target = PruneTarget(**{k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "num_heads", "num_kv_groups", "num_layers")})
    new_sizes = resolve_target(hf.config, target)
    batches = calibration_batches(dataset, cfg.samples, cfg.batch_size, seed)
    imp = importance(hf, batches, cfg.layer_metric, score_layers=new_sizes["num_layers"] < hf.config.num_hidden_layers)
    pruned = prune_llama(hf, target, imp)
    kept = plan(hf.config, imp, target)
    info = {"sizes": kept.sizes, "layers": kept.layers.tolist(), "layer_metric": cfg.layer_metric,
            "calibration_samples": sum(len(b["input_ids"]) for b in batches),
            "non_embedding_params": {"before": non_embedding_parameters(hf), "after": non_embedding_parameters(pruned)}}
    return wrap(pruned, "causal_lm", pad_id=wrapper.pad_id), info


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters outside the token embedding and the LM head (a tied head counted once, with the embedding)."""
    seen = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in seen)


__all__ = ["Importance", "LAYER_METRICS", "Plan", "PruneTarget", "calibration_batches", "importance", "non_embedding_parameters",
           "plan", "prune_causal_lm", "prune_llama", "resolve_target", "sizes"]
