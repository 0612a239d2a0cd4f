"""Compression by type: the workflow runs a stage by handing its typed config to the stage's verb.

A stage type and a verb planted in this file run through `run_compress` (the workflow a recipe's
`compress:` list goes through) with no edit to kdforge/workflows/compress.py; a stage type no
runner knows is refused before anything is written, never skipped yet recorded as done."""
import json
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from torch import nn

from kdforge.compress import Int8Dynamic, Verb
from kdforge.compress.config import ExportStage, Stage, TransformStage
from kdforge.errors import KDForgeError
from kdforge.workflows.compress import run_compress

SCALE = Verb("scale_")  # a new verb, with its own handler table


@dataclass(frozen=True)
class Scale:
    factor: float


@SCALE.register(Scale)
def _scale(model: nn.Module, config: Scale, filter_fn) -> nn.Module:
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, name)):
                m.weight.mul_(config.factor)
    return model


class ScaleStage(TransformStage):
    kind: Literal["scale"] = "scale"
    factor: float = 0.5
    verb: ClassVar[Verb] = SCALE

    def verb_config(self) -> Scale:
        return Scale(self.factor)


class Orphan(Stage):
    """A stage type that is neither a transform, a recovery nor an export, and registers no runner."""

    kind: Literal["orphan"] = "orphan"


def test_planted_stage_and_verb_run_through_the_workflow(tmp_path, digits, digits_mlp):
    stages = [ScaleStage(factor=0.5), ExportStage(formats=["onnx"])]
    summary = run_compress(stages, tmp_path, digits_mlp, None, digits, quiet=True)
    assert [s["name"] for s in summary["stages"]] == ["00-scale", "01-export"]
    saved = load_file(str(tmp_path / "compress/00-scale/model.safetensors"))
    original = digits_mlp.state_dict()
    for name, w in saved.items():  # the verb acted: Linear weights halved, biases untouched
        want = original[name] * 0.5 if name.endswith("weight") else original[name]
        torch.testing.assert_close(w, want)
    export = summary["stages"][1]
    assert export["manifest"]["onnx_max_abs_diff"] <= 1e-4  # the export received the scaled model
    assert export["metrics"]["accuracy"] == summary["stages"][0]["metrics"]["accuracy"]
    record = tmp_path / "compress/00-scale/stage.json"
    assert json.loads(record.read_text())["config"] == {**stages[0].model_dump(mode="json")}
    mtime = record.stat().st_mtime_ns
    again = run_compress(stages, tmp_path, digits_mlp, None, digits, quiet=True)  # reused, not redone
    assert record.stat().st_mtime_ns == mtime and again["stages"] == summary["stages"]


def test_unknown_stage_type_is_refused_before_anything_is_written(tmp_path, digits, digits_mlp):
    with pytest.raises(KDForgeError, match=r"compress 01-orphan: no runner for stage type Orphan"):
        run_compress([ScaleStage(), Orphan()], tmp_path, digits_mlp, None, digits, quiet=True)
    assert not (tmp_path / "compress").exists()  # no stage recorded as done


def test_stage_whose_verb_has_no_handler_for_its_config_is_refused_at_load():
    class Mismatched(TransformStage):
        kind: Literal["mismatched"] = "mismatched"
        verb: ClassVar[Verb] = SCALE

        def verb_config(self) -> Int8Dynamic:
            return Int8Dynamic()

    with pytest.raises(ValidationError, match="scale_: no handler for config Int8Dynamic; valid configs: Scale"):
        Mismatched()
