"""Recipe schema of the `compress:` list: one typed stage per entry, chosen by `kind`.

    compress:
      - {kind: prune, method: structured, amount: 0.5}
      - {kind: recover, epochs: 10, source: teacher}     # distillation recovery
      - {kind: quantize, method: int8_dynamic, max_accuracy_drop: 0.01, against: student}
      - {kind: export, formats: [onnx, onnx-int8]}

Every stage may carry a gate: `max_accuracy_drop` (a fraction: 0.01 = 1 point)
of test accuracy against the distilled student, the teacher, or the previous stage.
A failed gate stops the pipeline (exit code 3) and keeps the last passing artifact.

A stage names its verb (`verb`: QUANTIZE, PRUNE, LOWRANK, EXPORT) and builds the typed
config it hands to it (`verb_config()`: Int8Dynamic, Structured, LowRank, Export, ...). It is
validated by building that config and finding the verb's handler for it, so the verbs' own
checks are the only ones and a stage can never hold what its verb would refuse. The workflow
(kdforge.workflows.compress) runs a stage by its type: a `TransformStage` by handing its config
to its verb, so a new transform is one stage class plus one registered verb handler.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdforge.compress.base import Verb
from kdforge.compress.export import EXPORT, Export
from kdforge.compress.lowrank import LOWRANK, LowRank
from kdforge.compress.prune import PRUNE, Structured, Unstructured
from kdforge.compress.quantize import QUANTIZE, Bf16, Fp16, Int8Dynamic
from kdforge.errors import KDForgeError


class Stage(BaseModel):
    """One `compress:` entry: its gate, and the verb (if any) that applies it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    verb: ClassVar[Verb | None] = None  # the compression verb this stage's config is handed to (None: recover)
    structural: ClassVar[bool] = False  # changes the architecture: `recover` with source: previous learns from the model before it

    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="Gate: stop if test accuracy drops more than this (0.01 = 1 point); null: no gate."
    )
    against: Literal["student", "teacher", "previous"] = Field(
        "student", description="Gate reference: the distilled student, the teacher, or the previous stage's model."
    )

    def verb_config(self) -> object | None:
        """The typed config handed to `verb` (None when the stage has no verb)."""
        return None

    @model_validator(mode="after")
    def _verb_accepts(self) -> "Stage":
        try:
            config = self.verb_config()
            if self.verb is not None:
                self.verb.handler(config)
        except KDForgeError as e:  # the verb's own check, reported at this stage's place in the recipe
            raise ValueError(str(e)) from None
        return self


class TransformStage(Stage):
    """A stage that changes the model: the workflow hands `verb_config()` to `verb` on a copy of
    the model, then measures, gates and saves the result (a float model's weights)."""

    def verb_config(self) -> object:
        raise NotImplementedError(f"{type(self).__name__}.verb_config")


class QuantizeStage(TransformStage):
    """INT8 dynamic (torch.ao, Linear/LSTM/GRU) or a float16 / bfloat16 cast."""

    kind: Literal["quantize"] = "quantize"
    verb: ClassVar[Verb] = QUANTIZE
    method: Literal["int8_dynamic", "fp16", "bf16"] = Field("int8_dynamic", description="Quantization method.")
    per_channel: bool = Field(False, description="int8_dynamic: one scale per output channel.")

    def verb_config(self) -> Int8Dynamic | Fp16 | Bf16:
        return {"int8_dynamic": Int8Dynamic(per_channel=self.per_channel), "fp16": Fp16(), "bf16": Bf16()}[self.method]


class PruneStage(TransformStage):
    """structured: removes neurons/channels (smaller, faster); unstructured: zeroes weights (same speed)."""

    kind: Literal["prune"] = "prune"
    verb: ClassVar[Verb] = PRUNE
    structural: ClassVar[bool] = True
    method: Literal["structured", "unstructured"] = Field("structured", description="Pruning method.")
    amount: float = Field(..., description="Fraction removed, strictly between 0 and 1.")
    scope: Literal["global", "layer"] = Field("global", description="unstructured: rank weights globally or per layer.")

    def verb_config(self) -> Structured | Unstructured:
        return Structured(self.amount) if self.method == "structured" else Unstructured(self.amount, self.scope)


class LowRankStage(TransformStage):
    """SVD factorization of Linear layers; give rank or energy."""

    kind: Literal["lowrank"] = "lowrank"
    verb: ClassVar[Verb] = LOWRANK
    structural: ClassVar[bool] = True
    rank: int | None = Field(None, description="Singular values kept per layer (a positive integer).")
    energy: float | None = Field(None, description="Kept share of Σσ² per layer, in (0, 1].")

    def verb_config(self) -> LowRank:
        return LowRank(rank=self.rank, energy=self.energy)


class RecoverStage(Stage):
    """Recovery training by distillation (soft targets + labels) after pruning or factorization."""

    kind: Literal["recover"] = "recover"
    source: Literal["teacher", "previous"] = Field(
        "teacher", description="Who teaches: the recipe's teacher, or the model as it was before the last prune/lowrank stage."
    )
    epochs: int = Field(10, ge=1, description="Recovery epochs.")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(64, ge=1, description="Batch size.")
    temperature: float = Field(4.0, gt=0, description="KD temperature.")
    alpha: float = Field(0.8, ge=0, le=1, description="Weight of the soft-target term (1 − alpha on the labels).")


class ExportStage(Stage):
    """Deployment artifacts; every ONNX artifact is measured and its accuracy gated."""

    kind: Literal["export"] = "export"
    verb: ClassVar[Verb] = EXPORT
    formats: list[Literal["safetensors", "hf", "onnx", "onnx-int8", "onnx-int8-static",
                          "onnx-opt", "onnx-opt-int8", "onnx-opt-int8-static"]] = Field(
        default_factory=lambda: ["safetensors", "onnx"], min_length=1,
        description="Artifacts to write; onnx-opt*: after ONNX Runtime's graph optimizer (transformer fusions).")
    calibration_batches: int = Field(8, ge=1, description="*-int8-static: training batches of 32 used to calibrate.")
    int8_activations: bool = Field(True, description="onnx-opt-int8: also quantize the activation × activation MatMuls "
                                   "(attention QKᵀ and ·V; ONNX Runtime leaves them fp32 by default).")
    gelu_approximation: bool = Field(True, description="onnx-opt-int8*: GELU as ONNX Runtime's tanh approximation "
                                     "(FastGelu) in transformer INT8 graphs; gated with the INT8 accuracy drop.")


    def verb_config(self) -> Export:
        return Export(formats=tuple(self.formats), int8_activations=self.int8_activations,
                      gelu_approximation=self.gelu_approximation)


STAGE_TYPES = (QuantizeStage, PruneStage, LowRankStage, RecoverStage, ExportStage)
CompressStage = Annotated[Union[STAGE_TYPES], Field(discriminator="kind")]
STAGE_KINDS = tuple(t.model_fields["kind"].default for t in STAGE_TYPES)
