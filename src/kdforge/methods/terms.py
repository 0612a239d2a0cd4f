"""Evaluate one recipe loss term from what a step has at hand.

The kinds themselves, and the outputs each works on, are registered once in
`kdforge.losses.kinds.KINDS`. A registered logit divergence needs nothing here: `term_loss`
calls it on the step's (B, C) logits. TERMS holds the classification step of the kinds that
need more than two logit tensors (kd's label mix, dkd's targets, a hint's projection...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge import losses as L
from kdforge.data.base import UNLABELLED
from kdforge.errors import KDForgeError
from kdforge.losses.fused import can_fuse, fused_soft_target_kl
from kdforge.losses.kinds import KINDS
from kdforge.losses.sparse import SparseTarget, sparse_kl
from kdforge.registry import METHODS, Registry

TERMS: Registry = Registry("loss kind")  # kind -> its classification step (term, ctx) -> scalar, beyond a plain pair


@dataclass
class StepContext:
    s_logits: Tensor  # (B, C)
    t_logits: Tensor  # (B, C)
    labels: Tensor  # (B,)
    s_feats: dict[str, Tensor] = field(default_factory=dict)
    t_feats: dict[str, Tensor] = field(default_factory=dict)
    projections: nn.ModuleDict | None = None
    sample_weight: Tensor | None = None  # (B,) from confidence filtering, None = all 1
    n_labelled: int | None = None  # labelled samples in the batch, when the batch says (fetch_batch counts them)
    t_target: SparseTarget | None = None  # (B, k) a sparse store's ids + values: the kd term reads them, not t_logits


def weighted_kl(ctx: StepContext, temperature: float, standardize: bool = False) -> Tensor:
    if standardize:  # logit standardization (Sun et al. 2024): match relations, not magnitudes
        return L.standardized_kl(ctx.s_logits, ctx.t_logits, temperature, weight=ctx.sample_weight)
    if ctx.t_target is not None:  # KL over the stored k ids (top-k: equal to the scattered logits' KL; sampled: unbiased)
        per = sparse_kl(ctx.s_logits, ctx.t_target, temperature, reduction="none")  # (B,), T² included
    elif ctx.sample_weight is None and can_fuse(ctx.s_logits, ctx.t_logits):
        return fused_soft_target_kl(ctx.s_logits, ctx.t_logits, temperature)  # one node, closed-form gradient
    else:
        per = L.soft_target_kl(ctx.s_logits, ctx.t_logits, temperature, reduction="none")  # (B,), T² included
    if ctx.sample_weight is None:
        return per.mean()
    return (per * ctx.sample_weight).sum() / ctx.sample_weight.sum().clamp_min(1e-12)


@TERMS.register("kd")
def _kd(term, ctx: StepContext) -> Tensor:
    if "auto" in (term.temperature, term.alpha):
        raise ValueError("kd term: temperature/alpha 'auto' must be resolved (kdforge.search.resolve_auto) before training")
    kd = weighted_kl(ctx, term.temperature, term.standardize)
    if term.alpha == 1.0:
        return kd
    return mix(kd, labelled_ce(ctx.s_logits, ctx.labels, ctx.n_labelled), term.alpha)


def mix(kd: Tensor, ce: Tensor, alpha: float) -> Tensor:
    """α·kd + (1 − α)·ce as one op (lerp from ce towards kd): one autograd node instead of three."""
    return torch.lerp(ce, kd, alpha)


def weighted(weight: float, loss: Tensor) -> Tensor:
    """weight · loss, without a multiply when the weight is 1."""
    return loss if weight == 1.0 else weight * loss


@TERMS.register("dkd")
def _dkd(term, ctx):
    # the "target" class of an unlabelled sample is the teacher's choice
    target = torch.where(ctx.labels == UNLABELLED, ctx.t_logits.argmax(-1), ctx.labels)
    return L.dkd(ctx.s_logits, ctx.t_logits, target, term.alpha, term.beta, term.temperature, weight=ctx.sample_weight)


@TERMS.register("dist")
def _dist(term, ctx):
    return L.dist_loss(ctx.s_logits, ctx.t_logits, term.beta, term.gamma, term.temperature, weight=ctx.sample_weight)


def term_loss(term, ctx: StepContext) -> Tensor:
    """One term on a classification step: its own step when it has one, else the registered
    divergence on the (B, C) logits, the confidence filter's sample weights as its mask."""
    if term.kind in TERMS:
        return TERMS.get(term.kind)(term, ctx)
    return KINDS.get(term.kind)(ctx.s_logits, ctx.t_logits, term, mask=ctx.sample_weight)


def term_options(term) -> dict:
    """The term fields its kind's function reads (temperature, beta...), as keywords."""
    return {o: getattr(term, o) for o in KINDS.get(term.kind).options if hasattr(term, o)}


def method_name(method) -> str:
    """The recipe key a method's class is registered under (its class name when it has none)."""
    key = getattr(type(method), "key", None)  # set by the method's registration
    return key if isinstance(key, str) else next((k for k in METHODS if METHODS.get(k) is type(method)), type(method).__name__)


def _listed(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def refuse_kinds(terms, outputs: str | tuple[str, ...], method, takes: tuple[str, ...] | None = None) -> None:
    """One line naming the method for the first term whose kind does not work on the outputs the
    method scores; `takes` narrows the kinds the method has a step for (default: all on those outputs)."""
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    valid = list(takes) if takes is not None else sorted({k for o in outputs for k in KINDS.names(o)})
    for i, term in enumerate(terms):
        if term.kind in valid:
            continue
        name = method_name(method)
        works = ", ".join(KINDS.get(term.kind).outputs) if term.kind in KINDS else "nothing registered"
        raise KDForgeError(f"distill.losses.{i}: {term.kind} is not supported by method {name} (it scores "
                           f"{' and '.join(outputs)}; {term.kind} works on {works}); method {name} takes "
                           f"{_listed(valid)} terms only")


def labelled_ce(logits: Tensor, labels: Tensor, n_labelled: int | None = None) -> Tensor:
    """Mean cross-entropy over the labelled samples of a batch; 0 (with a graph) when none is labelled.
    `n_labelled` (the batch's count, taken on the host before the batch moved: `train.data.fetch_batch`)
    picks torch's own mean; without it the count is divided on the device (no host sync either way)."""
    if n_labelled is None:
        total = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="sum")
        return total / (labels != UNLABELLED).sum().clamp_min(1)
    if n_labelled == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=UNLABELLED)  # divides by the labelled count


@TERMS.register("ce")
def _ce(term, ctx):
    return labelled_ce(ctx.s_logits, ctx.labels, ctx.n_labelled)


@TERMS.register("hard_ce")
def _hard_ce(term, ctx):
    return F.cross_entropy(ctx.s_logits, ctx.t_logits.argmax(-1))


def _pair(term, ctx) -> tuple[Tensor, Tensor]:
    return ctx.s_feats[term.student_layer], ctx.t_feats[term.teacher_layer]


@TERMS.register("hint")
def _hint(term, ctx):
    h_s, h_t = _pair(term, ctx)
    key = projection_key(term)
    if ctx.projections is not None and key in ctx.projections:
        h_s = ctx.projections[key](h_s)
    return L.hint_loss(h_s, h_t)


@TERMS.register("attention")
def _attention(term, ctx):
    return L.attention_transfer(*_pair(term, ctx))


@TERMS.register("attention_kl")
def _attention_kl(term, ctx):
    """MiniLM: KL between (B, heads, T, T) attention distributions, e.g. taps attn.<i> of HF encoders."""
    return L.attention_distribution_kl(*_pair(term, ctx))


@TERMS.register("rkd_distance")
def _rkd_d(term, ctx):
    h_s, h_t = _pair(term, ctx)
    return L.rkd_distance(L.flatten_features(h_s), L.flatten_features(h_t))


@TERMS.register("rkd_angle")
def _rkd_a(term, ctx):
    h_s, h_t = _pair(term, ctx)
    return L.rkd_angle(L.flatten_features(h_s), L.flatten_features(h_t))


@TERMS.register("similarity")
def _sp(term, ctx):
    return L.similarity_preserving(*_pair(term, ctx))


@dataclass(frozen=True)
class LayerPair:
    """One feature term a layer map expands into (a hint or attention_kl between two taps)."""

    kind: str
    student_layer: str
    teacher_layer: str
    weight: float


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """TinyBERT's uniform map g(m) = m·N/M (rounded half up): [(student layer m, teacher layer g(m))]
    for m = 0..M, where layer 0 is the embedding output (hidden.0) and m >= 1 the m-th block."""
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"layer map: need >= 1 layer on each side, got student {n_student}, teacher {n_teacher}")
    return [(m, (2 * m * n_teacher + n_student) // (2 * n_student)) for m in range(n_student + 1)]


def layer_count(model) -> int:
    """Transformer blocks of a kdforge encoder wrapper, of the one a Teacher holds, or (a teacher-output
    store) the deepest stored `hidden.<i>` feature."""
    inner = getattr(model, "model", model)
    if inner is None:
        names = getattr(getattr(model, "store", None), "meta", {}).get("features", {})
        deepest = [int(n.split(".")[1]) for n in names if n.startswith("hidden.")]
        if not deepest:
            raise ValueError("layer_map: the teacher store holds no hidden.<i> features to map onto")
        return max(deepest)
    if not hasattr(inner, "attn"):
        raise ValueError(f"layer_map: {type(inner).__name__} is not a kdforge HF encoder (no hidden.<i> / attn.<i> taps)")
    return len(inner.attn)


def expand_layer_maps(terms: list, student, teacher) -> list:
    """Each `layerwise` term -> hint terms on every mapped hidden state (hidden.0 = embeddings, weighted by
    its embedding_weight) and attention_kl terms on every mapped attention; other terms pass through."""
    out = []
    for term in terms:
        if term.kind != "layerwise":
            out.append(term)
            continue
        pairs = uniform_layer_map(layer_count(student), layer_count(teacher))
        for m, t in pairs:
            w = term.embedding_weight if m == 0 else term.hidden_weight
            if w:
                out.append(LayerPair("hint", f"hidden.{m}", f"hidden.{t}", term.weight * w))
        if term.attention_weight:
            out += [LayerPair("attention_kl", f"attn.{m - 1}", f"attn.{t - 1}", term.weight * term.attention_weight)
                    for m, t in pairs if m > 0]
    return out


def projection_key(term) -> str:
    return f"{term.student_layer}->{term.teacher_layer}".replace(".", "_")


def term_names(terms: list) -> list[str]:
    """Output names: the kind, or kind:student_layer when a kind appears twice."""
    kinds = [t.kind for t in terms]
    return [t.kind if kinds.count(t.kind) == 1 else f"{t.kind}:{getattr(t, 'student_layer', i)}" for i, t in enumerate(terms)]


def make_projections(terms: list, s_feats: dict[str, Tensor], t_feats: dict[str, Tensor]) -> nn.ModuleDict:
    """One learned Projection per hint term whose student and teacher widths differ."""
    projs = nn.ModuleDict()
    for term in terms:
        if term.kind != "hint":
            continue
        s, t = s_feats[term.student_layer].shape, t_feats[term.teacher_layer].shape
        if s != t:
            projs[projection_key(term)] = L.Projection(tuple(s), tuple(t))
    return projs


__all__ = ["TERMS", "LayerPair", "StepContext", "expand_layer_maps", "labelled_ce", "layer_count", "make_projections",
           "method_name", "refuse_kinds", "term_loss", "term_names", "term_options", "uniform_layer_map"]
