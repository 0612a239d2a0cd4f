"""THE registry of loss kinds: every kind a recipe can name, the outputs it works on, and its function.

A kind declares which model outputs it compares:

    class logits   (B, C) per sample, with class labels (B,)
    token logits   (B, T, V) per position, with a (B, T) mask of scored positions
    features       tapped activations of named layers (hint, attention, relations)
    embeddings     (B, D) sentence embeddings

A *logit divergence* is registered with its plain function `fn(student, teacher, *, mask=None,
**options) -> scalar` (masked mean over positions, as in `response.py`) and the term fields it
reads (`options`, e.g. temperature, beta). Such a kind needs no glue anywhere: the classification
methods call it on (B, C) logits with the sample weights as mask, the LM methods on (B, T, V)
logits with the loss mask, chunked over T. Adding one is one function plus one registration:

    @KINDS.register("my_div", outputs=LOGITS, options=("temperature",))
    def my_div(student, teacher, *, temperature=1.0, mask=None): ...

Kinds that need more than two logit tensors (kd's label mix, dkd's targets, a hint's projection)
are registered too, with `pair=False`: the methods that support them have their own step for them,
and every other method refuses them with one line naming itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import Tensor

from kdforge.losses.feature import attention_distribution_kl, attention_transfer, cosine_loss, hint_loss
from kdforge.losses.logit import dist_loss, dkd
from kdforge.losses.relation import rkd_angle, rkd_distance, similarity_matrix_loss, similarity_preserving
from kdforge.losses.response import jsd, reverse_kl, soft_target_kl, tvd

CLASS_LOGITS, TOKEN_LOGITS, FEATURES, EMBEDDINGS = "class logits", "token logits", "features", "embeddings"
LOGITS = (CLASS_LOGITS, TOKEN_LOGITS)
OUTPUTS = (CLASS_LOGITS, TOKEN_LOGITS, FEATURES, EMBEDDINGS)


@dataclass(frozen=True)
class LossKind:
    """One kind: `fn` its plain tensor function (None: a recipe term the method expands, e.g. layerwise);
    `outputs` what it compares; `options` the term fields handed to `fn` as keywords; `pair`: fn takes
    just (student, teacher, mask=...) and any method on those outputs can call it; `on`: (output, function)
    where one output needs its own form (similarity between embeddings)."""

    name: str
    outputs: tuple[str, ...]
    fn: Callable[..., Tensor] | None = None
    options: tuple[str, ...] = ()
    pair: bool = True
    on: tuple[tuple[str, Callable[..., Tensor]], ...] = ()

    def works_on(self, output: str) -> bool:
        return output in self.outputs

    def fn_for(self, output: str) -> Callable[..., Tensor] | None:
        """The function on `output`: its own form when it has one, else `fn`."""
        return dict(self.on).get(output, self.fn)

    def __call__(self, student: Tensor, teacher: Tensor, term=None, mask: Tensor | None = None) -> Tensor:
        """fn(student, teacher, mask=mask, **the term's options): a pair kind on any output it works on."""
        kwargs = {o: getattr(term, o) for o in self.options if term is not None and hasattr(term, o)}
        return self.fn(student, teacher, mask=mask, **kwargs)


class LossKinds:
    """name -> LossKind. An unknown name raises ValueError listing the valid ones."""

    def __init__(self) -> None:
        self._kinds: dict[str, LossKind] = {}

    def add(self, name: str, outputs: Iterable[str], fn: Callable[..., Tensor] | None = None,
            options: Iterable[str] = (), pair: bool = True, on: dict[str, Callable[..., Tensor]] | None = None) -> LossKind:
        outputs = tuple(outputs)
        if name in self._kinds:
            raise ValueError(f"loss kind {name!r} is registered twice")
        if not outputs or any(o not in OUTPUTS for o in outputs):
            raise ValueError(f"loss kind {name!r}: outputs {outputs} must be among {', '.join(OUTPUTS)}")
        self._kinds[name] = kind = LossKind(name, outputs, fn, tuple(options), pair and fn is not None, tuple((on or {}).items()))
        return kind

    def register(self, name: str, outputs: Iterable[str] = LOGITS, options: Iterable[str] = ("temperature",),
                 pair: bool = True) -> Callable:
        """Decorator: registers a plain loss function as kind `name`; returns it unchanged."""
        def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
            self.add(name, outputs, fn, options, pair)
            return fn

        return deco

    def remove(self, name: str) -> None:
        self._kinds.pop(name, None)

    def get(self, name: str) -> LossKind:
        if name not in self._kinds:
            raise ValueError(f"unknown loss kind {name!r}; valid: {', '.join(self.names())}")
        return self._kinds[name]

    def names(self, output: str | None = None, *, pair: bool | None = None) -> list[str]:
        """Registered kinds, sorted; only those working on `output` / of the given `pair` form when asked."""
        return sorted(k for k, v in self._kinds.items()
                      if (output is None or v.works_on(output)) and (pair is None or v.pair == pair))

    def __contains__(self, name: object) -> bool:
        return name in self._kinds


KINDS = LossKinds()

# logit divergences: one function, any logits ((B, C) per sample or (B, T, V) per position)
KINDS.add("kd", LOGITS, soft_target_kl, ("temperature",), pair=False)  # forward KL; the method mixes in CE by alpha
KINDS.add("reverse_kl", LOGITS, reverse_kl, ("temperature",))
KINDS.add("jsd", LOGITS, jsd, ("temperature", "beta"))
KINDS.add("tvd", LOGITS, tvd, ("temperature",))
KINDS.add("ce", LOGITS, pair=False)  # the labels / next tokens, no teacher
KINDS.add("hard_ce", LOGITS, pair=False)  # CE on the teacher's argmax
# class logits only: they read class targets or relations across the batch's samples
KINDS.add("dkd", (CLASS_LOGITS,), dkd, ("alpha", "beta", "temperature"), pair=False)
KINDS.add("dist", (CLASS_LOGITS,), dist_loss, ("beta", "gamma", "temperature"), pair=False)
# tapped features (names from the term's student_layer / teacher_layer); embeddings for the embedding method
KINDS.add("hint", (FEATURES, EMBEDDINGS), hint_loss, pair=False)  # MSE, through a projection when widths differ
KINDS.add("attention", (FEATURES,), attention_transfer, pair=False)
KINDS.add("attention_kl", (FEATURES,), attention_distribution_kl, pair=False)
KINDS.add("rkd_distance", (FEATURES,), rkd_distance, pair=False)
KINDS.add("rkd_angle", (FEATURES,), rkd_angle, pair=False)
KINDS.add("similarity", (FEATURES, EMBEDDINGS), similarity_preserving, pair=False,
          on={EMBEDDINGS: similarity_matrix_loss})  # embeddings: MSE of the in-batch cosine-similarity matrices
KINDS.add("layerwise", (FEATURES,), pair=False)  # expanded by the method into hint + attention_kl per mapped layer
KINDS.add("cosine", (EMBEDDINGS,), cosine_loss, pair=False)  # 1 − cos; the embedding method's term for any other kind

__all__ = ["CLASS_LOGITS", "EMBEDDINGS", "FEATURES", "KINDS", "LOGITS", "LossKind", "LossKinds", "OUTPUTS", "TOKEN_LOGITS"]
