"""The recipe's loss terms (`distill.losses`): one pydantic class per kind, and the
strict base every recipe section uses. Values only; `kdforge.config` assembles the
whole recipe from these and re-exports them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from kdforge.losses.kinds import KINDS, LOGITS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Auto = Literal["auto"]


class KDTerm(Strict):
    """α · T² · KL(p_t^T ‖ p_s^T) + (1 − α) · CE(z_s, y).

    `temperature` / `alpha` may be "auto": a short search on a held-out part of the
    training split picks them before training (see `distill.auto`). `standardize`
    z-scores both logit vectors first (logit standardization, Sun et al. 2024).
    """

    kind: Literal["kd"] = "kd"
    weight: float = Field(1.0, ge=0)
    temperature: Annotated[float, Field(gt=0)] | Auto = Field(4.0, description="Softmax temperature T, or auto.")
    alpha: Annotated[float, Field(ge=0, le=1)] | Auto = Field(0.8, description="Weight α of the soft term (1 − α on CE), or auto.")
    standardize: bool = Field(False, description="z-score student and teacher logits per sample before softening.")


class DKDTerm(Strict):
    """Decoupled KD (Zhao et al. 2022): α · TCKD + β · NCKD (· T²); add a `ce` term for the labels."""

    kind: Literal["dkd"] = "dkd"
    weight: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(1.0, ge=0, description="Weight of the target-class term (TCKD).")
    beta: float = Field(8.0, ge=0, description="Weight of the non-target-class term (NCKD).")


class DISTTerm(Strict):
    """DIST (Huang et al. 2022): β · (1 − inter-class Pearson) + γ · (1 − intra-class Pearson); add a `ce` term."""

    kind: Literal["dist"] = "dist"
    weight: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(1.0, ge=0, description="Weight of the inter-class (per-sample) relation.")
    gamma: float = Field(1.0, ge=0, description="Weight of the intra-class (per-class, across the batch) relation.")


class DivergenceTerm(Strict):
    """A logit divergence registered in `kdforge.losses.kinds` (reverse_kl, jsd, tvd, or one of your own): on
    class logits in classification methods, on token logits in LM methods. `beta` is read by the kinds that take it (jsd)."""

    kind: str = Field(description="A registered logit divergence: reverse_kl, jsd, tvd, ...")
    weight: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.5, ge=0, le=1)

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in _divergences():
            raise ValueError(f"unknown loss kind {kind!r}; valid: {', '.join(map(repr, sorted({*_CLASS_OF, *_divergences()})))}")
        return kind


def _divergences() -> set[str]:
    """The registered logit divergences now (a test or plugin may have added one since import)."""
    return {k for out in LOGITS for k in KINDS.names(out, pair=True)}


class LabelTerm(Strict):
    """ce: cross-entropy on the true labels; hard_ce: on the teacher's argmax (no soft targets)."""

    kind: Literal["ce", "hard_ce"]
    weight: float = Field(1.0, ge=0)


class FeatureTerm(Strict):
    """A term on tapped features; names are submodules of student and teacher.

    hint: MSE (projection added when widths differ); attention: attention transfer
    on (B, C, H, W) maps; rkd_distance / rkd_angle / similarity: relations between samples.
    """

    kind: Literal["hint", "attention", "attention_kl", "rkd_distance", "rkd_angle", "similarity"]
    student_layer: str
    teacher_layer: str
    weight: float = Field(1.0, ge=0)


class LayerwiseTerm(Strict):
    """Layer-wise distillation (TinyBERT, Jiao et al. 2020; attention as in MiniLM): every student
    block's hidden state (through a learned projection) and attention matched to the teacher block
    the layer map gives, plus the embedding output (hidden.0). HF encoders with `attentions: true`."""

    kind: Literal["layerwise"] = "layerwise"
    layer_map: Literal["uniform"] = Field("uniform", description="uniform: student block m -> teacher block m·N/M.")
    weight: float = Field(1.0, ge=0)
    hidden_weight: float = Field(1.0, ge=0, description="Weight of each hidden-state MSE (projected to the teacher's width).")
    attention_weight: float = Field(1.0, ge=0, description="Weight of each attention-distribution KL (teacher heads averaged).")
    embedding_weight: float = Field(1.0, ge=0, description="Weight of the embedding-output MSE (hidden.0).")


TERM_CLASSES = (KDTerm, DKDTerm, DISTTerm, DivergenceTerm, LabelTerm, FeatureTerm, LayerwiseTerm)
_CLASS_OF = {k: c for c in TERM_CLASSES if c is not DivergenceTerm for k in get_args(c.model_fields["kind"].annotation)}
_TAG = {c: get_args(c.model_fields["kind"].annotation)[0] for c in set(_CLASS_OF.values())} | {DivergenceTerm: "reverse_kl"}


def _term_tag(value: Any) -> str | None:
    """A term's union member by its kind: the kind's own class, else DivergenceTerm (which checks the registry)."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if kind is None:
        return None
    return _TAG[_CLASS_OF.get(kind, DivergenceTerm)]


LossTerm = Annotated[Union[tuple(Annotated[c, Tag(_TAG[c])] for c in TERM_CLASSES)], Discriminator(
    _term_tag, custom_error_type="missing_kind", custom_error_message="a loss term needs a `kind` (kd, ce, hint, ...)")]
LOSS_KINDS: tuple[str, ...] = (*_CLASS_OF, *sorted(_divergences()))  # the kinds at import (error locations strip them)
