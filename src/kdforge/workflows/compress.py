"""A recipe's `compress:` stages on the distilled student, in order, with gates.

Each stage writes RUN/compress/NN-kind/: `stage.json` (its config, measurements
and gate verdict), `model.safetensors` for float models, `artifacts/` for
exports, and a training folder for recovery. A re-run skips finished stages:
cheap deterministic transforms (quantize, prune, lowrank) are replayed on the
previous model and their saved weights loaded; recovery loads its best
checkpoint. Changing a stage's config redoes it and every stage after it.

A stage runs by its type, never by its `kind` string: the runner registered for its class (or
the nearest base) applies it on every rank and measures it on rank 0. A `TransformStage` hands
`verb_config()` to its `verb` (quantize_ / prune_ / lowrank_, or any Verb with a handler for that
config type), so a new transform needs no edit here; a stage type no runner knows is refused
before anything is written.

A failed gate raises GateFailed (exit code 3) naming the stage, the drop and the
last passing artifact; the failed stage leaves `gate_failed.json`, never `stage.json`.

Under several processes every rank applies the verbs and trains recovery (a
training stage like any other), while measuring, exporting, gating and every
file write happen on rank 0 alone (the others wait). The compression verbs
themselves never import training; this workflow does.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from kdforge.bench.measure import measure, stack_inputs
from kdforge.bench.report import write_report
from kdforge.compress import export
from kdforge.compress.config import ExportStage, PruneStage, QuantizeStage, RecoverStage, TransformStage
from kdforge.compress.export import is_quantized
from kdforge.config import DistillConfig, KDTerm
from kdforge.data import load_data
from kdforge.errors import GateFailed, KDForgeError
from kdforge.methods.standard import StandardKD
from kdforge.models.build import build_model, load_checkpoint_file
from kdforge.recipe_file import load_recipe
from kdforge.rundir import write_json
from kdforge.stages import train_stage
from kdforge.train import distributed as dist
from kdforge.train.batching import probe_batch
from kdforge.workflows.run import on_main

BENCH = dict(batch_sizes=(1, 32), warmup=3, repeats=15, threads=1)


def _is_plain_float(model: nn.Module) -> bool:
    return not is_quantized(model) and all(p.dtype == torch.float32 for p in model.parameters())


def _measure(model, data) -> dict:
    return measure(model, data.test, **BENCH)


def baseline(root: Path, student: nn.Module, teacher: nn.Module | None, data) -> dict:
    """Measurements of the distilled student and the teacher, cached in RUN/compress/baseline.json."""
    path = root / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    out = {"student": _measure(student, data)}
    if teacher is not None:
        out["teacher"] = _measure(teacher, data)
    write_json(path, out)
    return out


@dataclass
class StageRun:
    """What a stage's runner is handed besides the stage and the model: its folder and cached record,
    and the run around it (data, teacher, the model before the last structural stage, the last float32 one)."""

    name: str
    dir: Path
    root: Path
    record: dict | None
    example: torch.Tensor
    data: Any
    teacher: nn.Module | None
    before_structural: nn.Module | None
    fp32_model: nn.Module
    seed: int
    quiet: bool
    notes: list[str] = field(default_factory=list)


class StageRunner:
    """How the workflow runs one family of stage types: `apply` on every rank (the model after the
    stage), `measure` on rank 0 (the record's metrics). A float model a runner `saves` is written to
    the stage's folder and reloaded when the stage is reused."""

    saves = True

    def apply(self, stage, model: nn.Module, run: StageRun) -> nn.Module:
        raise NotImplementedError

    def measure(self, stage, model: nn.Module, run: StageRun) -> dict:
        return {"metrics": _measure(model, run.data)}


RUNNERS: dict[type, StageRunner] = {}


def runs(stage_type: type):
    """Decorator: the runner class for `stage_type` and its subclasses (the nearest base wins)."""

    def deco(cls: type[StageRunner]) -> type[StageRunner]:
        RUNNERS[stage_type] = cls()
        return cls

    return deco


def runner_for(stage, name: str) -> StageRunner:
    """The runner of the stage's type; a stage no runner knows is an error, never skipped."""
    found = next((RUNNERS[t] for t in type(stage).__mro__ if t in RUNNERS), None)
    if found is None:
        known = ", ".join(t.__name__ for t in RUNNERS)
        raise KDForgeError(f"compress {name}: no runner for stage type {type(stage).__name__}; a stage subclasses one of "
                           f"{known} (a TransformStage names its verb), or registers a runner with workflows.compress.runs")
    return found


def apply_stage(stage: TransformStage, model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The stage's verb on a copy of `model`, given `verb_config()` and what the verb takes (example_inputs)."""
    model = copy.deepcopy(model)
    if is_quantized(model):
        raise KDForgeError(f"compress {stage.kind}: the model is already INT8-quantized by an earlier stage and "
                           f"{stage.kind} needs a float model; put {stage.kind} before that quantize stage")
    return stage.verb(model, stage.verb_config(), **stage.verb.pick(example_inputs=example))


@runs(TransformStage)
class TransformRunner(StageRunner):
    def apply(self, stage, model, run):
        model = apply_stage(stage, model, run.example)  # cheap and deterministic: replayed when reused
        if run.record is not None and (run.dir / "model.safetensors").exists():
            load_model(model, str(run.dir / "model.safetensors"))
        return model


@runs(RecoverStage)
class RecoverRunner(StageRunner):
    def apply(self, stage, model, run):  # trained by every rank, like any training stage
        model = copy.deepcopy(model)
        steps = recover(stage, run.name, run.root, model, run.teacher, run.before_structural, run.data, run.seed, run.quiet)["steps"]
        run.notes.append(f"trained {steps} steps")
        return model.eval()


@runs(ExportStage)
class ExportRunner(StageRunner):
    saves = False  # its artifacts are the output

    def apply(self, stage, model, run):
        return model

    def measure(self, stage, model, run):
        return _export_stage(stage, run.dir, model, run.fp32_model, run.example, run.data)


def recover(stage, name: str, root: Path, model: nn.Module, teacher: nn.Module | None, before: nn.Module | None,
            data, seed: int, quiet: bool) -> dict:
    """Distillation recovery through the one training loop (method 'standard')."""
    if not _is_plain_float(model):
        raise KDForgeError("compress recover: needs a float32 model; put recover before quantize")
    source = teacher if stage.source == "teacher" else before
    if source is None:
        what = "the recipe has no teacher" if stage.source == "teacher" else "no earlier prune or lowrank stage"
        raise KDForgeError(f"compress recover: source {stage.source!r} is unavailable ({what})")
    cfg = DistillConfig(epochs=stage.epochs, lr=stage.lr, batch_size=stage.batch_size,
                        losses=[KDTerm(temperature=stage.temperature, alpha=stage.alpha)])
    method = StandardKD(model, copy.deepcopy(source), cfg, probe_batch(data.train))
    return train_stage(name, root, method, data, cfg, seed, quiet=quiet)


def _cached_records(root: Path, stages) -> list[dict | None]:
    """stage.json of each stage that can be reused: same config, and every stage before it reused too."""
    out: list[dict | None] = []
    for i, stage in enumerate(stages):
        path = root / f"{i:02d}-{stage.kind}" / "stage.json"
        rec = json.loads(path.read_text()) if path.exists() and (not out or out[-1] is not None) else None
        out.append(rec if rec is not None and rec["config"] == stage.model_dump(mode="json") else None)
    return out


def _prepare(root: Path, stages, cached: list, student, teacher, data) -> dict:
    """Rank 0: the baseline, and the folders of stale stages removed (an older config, or a longer list)."""
    root.mkdir(parents=True, exist_ok=True)
    keep = {f"{i:02d}-{st.kind}" for i, (st, rec) in enumerate(zip(stages, cached)) if rec is not None}
    for old in root.glob("[0-9][0-9]-*"):
        if old.is_dir() and old.name not in keep:
            shutil.rmtree(old)
    return baseline(root, student, teacher, data)


def run_compress(stages, run_dir: Path, student: nn.Module, teacher: nn.Module | None, data, *,
                 seed: int = 0, quiet: bool = False, ctx: dist.Context | None = None) -> dict:
    """Apply `stages` (compress stage configs) to a copy of `student`; returns the summary
    written to RUN/compress/summary.json: baseline, one record per stage, last passing artifact.
    Every rank gets the summary only on rank 0 (None elsewhere)."""
    for i, stage in enumerate(stages):  # every stage's runner and gate reference must exist before anything is written
        runner_for(stage, f"{i:02d}-{stage.kind}")
        if stage.max_accuracy_drop is not None and stage.against == "teacher" and teacher is None:
            raise KDForgeError(f"compress {i:02d}-{stage.kind}: the gate compares with the teacher, but this run has "
                               "no teacher model; use against: student or previous")
    ctx = ctx or dist.context()
    root = Path(run_dir) / "compress"
    cached = _cached_records(root, stages)  # read by every rank before rank 0 changes anything
    ctx.barrier()
    base = on_main(ctx, _prepare, root, stages, cached, student, teacher, data)
    example = stack_inputs(data.val, 8)  # (8, ...) for tracing and ONNX parity
    model = copy.deepcopy(student).eval()
    fp32_model, before_structural = model, None
    summary = {"baseline": base, "stages": [], "last_passing": "student"}
    for i, stage in enumerate(stages):
        name, record = f"{i:02d}-{stage.kind}", cached[i]
        if not quiet and ctx.is_main:
            print(f"compress {name}: {'cached' if record else 'running'}")
        if stage.structural:
            before_structural = model
        runner = runner_for(stage, name)
        run = StageRun(name, root / name, root, record, example, data, teacher, before_structural, fp32_model, seed, quiet)
        model = runner.apply(stage, model, run)
        if record is None:
            record = on_main(ctx, _measure_and_gate, stage, runner, run, model, summary)
        if _is_plain_float(model):
            fp32_model = model
        if ctx.is_main:
            summary["last_passing"] = str(run.dir)
            summary["stages"].append(record)
            write_json(root / "summary.json", summary)
    return summary if ctx.is_main else None


def _measure_and_gate(stage, runner: StageRunner, run: StageRun, model: nn.Module, summary: dict) -> dict:
    """Rank 0: measure (or export and measure) the stage's model, gate it, save it; its stage.json record."""
    base = summary["baseline"]
    prev = summary["stages"][-1] if summary["stages"] else None
    prev_acc = prev.get("gate_accuracy", prev["metrics"]["accuracy"]) if prev else base["student"]["accuracy"]
    record = {"name": run.name, "kind": stage.kind, "config": stage.model_dump(mode="json"), "notes": run.notes}
    record.update(runner.measure(stage, model, run))
    acc = record.get("gate_accuracy", record["metrics"]["accuracy"])
    ref = {"student": base["student"]["accuracy"], "teacher": base.get("teacher", {}).get("accuracy"),
           "previous": prev_acc}[stage.against]
    record["gate"] = _gate(stage, run.name, acc, ref, summary["last_passing"], run.dir, record)
    if runner.saves and _is_plain_float(model):
        run.dir.mkdir(parents=True, exist_ok=True)
        save_model(model, str(run.dir / "model.safetensors"))
    write_json(run.dir / "stage.json", record)
    return record


def _gate(stage, name: str, acc: float, ref: float | None, last: str, d: Path, record: dict) -> dict | None:
    if stage.max_accuracy_drop is None:
        return None
    if ref is None:
        raise KDForgeError(f"compress {name}: gate against {stage.against!r} but the run has no {stage.against}")
    drop = ref - acc
    verdict = {"against": stage.against, "reference": ref, "accuracy": acc, "drop": drop,
               "max_accuracy_drop": stage.max_accuracy_drop, "passed": drop <= stage.max_accuracy_drop + 1e-9}
    if not verdict["passed"]:
        write_json(d / "gate_failed.json", {**record, "gate": verdict})
        raise GateFailed(
            f"compress stage {name}: test accuracy {acc:.4f} is {drop * 100:.2f} points below the {stage.against} "
            f"({ref:.4f}), more than max_accuracy_drop {stage.max_accuracy_drop} ({stage.max_accuracy_drop * 100:g} points); "
            f"stopped, last passing artifact: {last}"
        )
    return verdict


def _export_stage(stage, d: Path, model: nn.Module, fp32_model: nn.Module, example, data) -> dict:
    notes = []
    src = model
    if not _is_plain_float(model):
        src = fp32_model
        notes.append("the current model is quantized or half precision: exported the last float32 model; "
                     "use onnx-int8 for an INT8 deployment artifact")
    calib = [stack_inputs(data.train, 32 * (k + 1))[32 * k:] for k in range(stage.calibration_batches)] \
        if any(f.endswith("int8-static") for f in stage.formats) else None
    manifest = export(src, d / "artifacts", stage.verb_config(), example_inputs=example, calibration=calib)
    artifacts = {"torch": _measure(src, data)}
    for fmt, path in manifest["files"].items():
        if fmt.startswith("onnx"):
            artifacts[fmt] = measure(path, data.test, **BENCH)
    onnx_accs = [m["accuracy"] for k, m in artifacts.items() if k.startswith("onnx")]
    return {"notes": notes, "manifest": manifest, "artifacts": artifacts, "metrics": artifacts["torch"],
            "gate_accuracy": min(onnx_accs) if onnx_accs else artifacts["torch"]["accuracy"]}


def compress_recipe(recipe, run_dir: Path, student: nn.Module, teacher: nn.Module | None, data, results: dict,
                    *, quiet: bool = False, preamble: str | None = None, ctx: dist.Context | None = None) -> dict:
    """Run `recipe.compress`, store the summary under results["compress"] in metrics.json and write
    report.md/.html (`preamble`, e.g. the run's own summary table, first), also when a gate fails."""
    ctx = ctx or dist.context()
    run_dir = Path(run_dir)
    failed: GateFailed | None = None
    try:
        results["compress"] = run_compress(recipe.compress, run_dir, student, teacher, data, seed=recipe.seed,
                                           quiet=quiet, ctx=ctx)
    except GateFailed as e:  # raised on rank 0 (the other ranks have stopped with a KDForgeError)
        failed = e
        summary_path = run_dir / "compress" / "summary.json"
        results["compress"] = {**json.loads(summary_path.read_text()), "gate_failed": str(e)} if summary_path.exists() \
            else {"gate_failed": str(e)}

    def write() -> None:
        write_json(run_dir / "metrics.json", results)
        write_report(run_dir, teacher=teacher, data=data, preamble=preamble)

    if failed is not None:
        write()
        raise failed
    on_main(ctx, write)
    return results


def load_run(run_dir: Path):
    """(recipe, data, student, teacher) of a finished run directory, weights loaded from its best checkpoints."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise KDForgeError(f"{run_dir}: not a kdforge run directory (no recipe.yaml)")
    weights = run_dir / "student/checkpoints/best/model.safetensors"
    if not weights.is_file():
        raise KDForgeError(f"{run_dir}: the run has no trained student ({weights} is missing); finish it with kdforge run --resume")
    recipe = load_recipe(run_dir / "recipe.yaml", [f"run_dir={run_dir}"])
    data = load_data(recipe.data, recipe.seed)
    student = build_model(recipe.student, data.input_shape, data.num_classes, "student", recipe.seed + 1)
    load_checkpoint_file(student, weights, "student")
    teacher = None
    t_weights = run_dir / "teacher/checkpoints/best/model.safetensors"
    if recipe.method != "supervised":
        cfg = recipe.teacher.model_copy(update={"checkpoint": None})
        teacher = build_model(cfg, data.input_shape, data.num_classes, "teacher", recipe.seed)
        src = t_weights if t_weights.is_file() else (Path(recipe.teacher.checkpoint) if recipe.teacher.checkpoint else None)
        if src is None:
            teacher = None
        else:
            load_checkpoint_file(teacher, src, "teacher")
    return recipe, data, student.eval(), teacher.eval() if teacher is not None else None


def demo_stages(quick: bool) -> list:
    """What `kdforge demo` does after distillation: prune, recover, INT8, ONNX (fp32 + INT8)."""
    return [PruneStage(amount=0.5), RecoverStage(epochs=2 if quick else 10, lr=5e-3),
            QuantizeStage(method="int8_dynamic"), ExportStage(formats=["onnx", "onnx-int8"])]


def demo_compress(out: Path, teacher: nn.Module, student: nn.Module, data, results: dict, *, quick: bool,
                  preamble: str) -> dict:
    """Compress the demo's KD student, add the summary to metrics.json and write report.md/.html."""
    results["compress"] = run_compress(demo_stages(quick), Path(out), student, teacher, data, quiet=True)
    write_json(Path(out) / "metrics.json", results)
    write_report(Path(out), teacher=teacher, data=data, preamble=preamble)
    return results
