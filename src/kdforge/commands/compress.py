"""`kdforge compress RUN_DIR`, `kdforge bench ARTIFACT...` and `kdforge report RUN_DIR`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Optional

import typer

from kdforge.errors import KDForgeError


def parse_stages(items: list[str], stages_file: Path | None, default: list) -> list:
    """Stage configs from --stage YAML mappings, a --stages file (a list, or a recipe with compress:), or the recipe."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from kdforge.compress.config import CompressStage
    from kdforge.recipe_file import format_validation_error

    raw: list | None = None
    if stages_file is not None:
        if not stages_file.is_file():
            raise KDForgeError(f"--stages: file not found: {stages_file}")
        try:
            loaded = yaml.safe_load(stages_file.read_text())
        except yaml.YAMLError as e:
            raise KDForgeError(f"--stages {stages_file}: malformed YAML: {str(e).splitlines()[0]}") from None
        raw = loaded.get("compress") if isinstance(loaded, dict) else loaded
        if not isinstance(raw, list):
            raise KDForgeError(f"--stages {stages_file}: expected a list of stages (or a mapping with compress:)")
    if items:
        raw = list(raw or [])
        for item in items:
            try:
                parsed = yaml.safe_load(item)
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, dict):
                raise KDForgeError(f"--stage {item!r}: expected a YAML mapping, e.g. '{{kind: prune, amount: 0.5}}'")
            raw.append(parsed)
    if raw is None:
        return list(default)
    try:
        return TypeAdapter(list[CompressStage]).validate_python(raw)
    except ValidationError as e:
        raise KDForgeError(format_validation_error(e, "stage")) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def compress(
        run_dir: Path = typer.Argument(..., help="A finished run directory (its student is compressed)."),
        stage: List[str] = typer.Option([], "--stage", help="A stage as YAML, e.g. '{kind: prune, amount: 0.5}' (repeatable, in order)."),
        stages: Optional[Path] = typer.Option(None, "--stages", help="YAML file: a list of stages, or a recipe with compress:."),
        force: bool = typer.Option(False, help="Discard earlier compression results of this run."),
        quiet: bool = typer.Option(False, help="No progress output."),
    ) -> None:
        """Run compression stages (quantize / prune / lowrank / recover / export) with gates on a run's student."""
        from kdforge.rundir import run_dir_lock
        from kdforge.workflows.compress import compress_recipe, load_run
        from kdforge.workflows.standard import render_report

        recipe, data, student, teacher = load_run(run_dir)
        chosen = parse_stages(stage, stages, recipe.compress)
        if not chosen:
            raise KDForgeError("compress: no stages; give --stage, --stages or a recipe with a compress: list")
        with run_dir_lock(run_dir):  # not while a `kdforge run` (or another compress) writes this run directory
            if force:
                shutil.rmtree(run_dir / "compress", ignore_errors=True)
            metrics_path = run_dir / "metrics.json"
            results = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            preamble = render_report(recipe, results) if "student_stage" in results else None  # the run's own table first
            results = compress_recipe(recipe.model_copy(update={"compress": chosen}), run_dir, student, teacher, data,
                                      results, quiet=quiet, preamble=preamble)
        last = results["compress"]["stages"][-1]
        acc = last.get("gate_accuracy", last["metrics"]["accuracy"])
        typer.echo(f"compressed: {len(chosen)} stages, final test accuracy {acc:.4f}; report {run_dir / 'report.html'}")

    @app.command()
    def bench(
        artifacts: List[Path] = typer.Argument(..., help="Run directories (their student), .onnx files or folders with model.onnx."),
        data: Optional[str] = typer.Option(None, help="Built-in dataset for inputs and accuracy (default: the run's, else digits)."),
        batch_sizes: str = typer.Option("1,32", help="Comma-separated batch sizes."),
        repeats: int = typer.Option(30, min=1, help="Timed calls per batch size."),
        warmup: int = typer.Option(5, min=0, help="Untimed calls first."),
        threads: int = typer.Option(1, min=1, help="Intra-op threads (torch and ONNX Runtime)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the measurements here."),
    ) -> None:
        """Measure params, size, latency p50/p95, throughput, memory and accuracy of each artifact."""
        from kdforge.bench.measure import measure
        from kdforge.config import DataConfig
        from kdforge.data import load_data

        try:
            sizes = [int(b) for b in batch_sizes.split(",")]
            if any(b < 1 for b in sizes):
                raise ValueError
        except ValueError:
            raise KDForgeError(f"--batch-sizes: expected positive integers like 1,32, got {batch_sizes!r}") from None
        results, dataset = {}, None
        for path in artifacts:
            if not path.exists():
                raise KDForgeError(f"bench: {path} does not exist")
            if (path / "recipe.yaml").is_file():
                from kdforge.workflows.compress import load_run

                recipe, bundle, student, _ = load_run(path)
                dataset = dataset or (load_data(DataConfig(name=data), recipe.seed).test if data else bundle.test)
                target = student
            else:
                dataset = dataset or load_data(DataConfig(name=data or "digits"), 0).test
                target = path
            results[str(path)] = measure(target, dataset, batch_sizes=sizes, repeats=repeats, warmup=warmup, threads=threads)
        for name, m in results.items():
            lat = "  ".join(f"b{b}: p50 {v['p50']:.3f} ms p95 {v['p95']:.3f} ms" for b, v in m["latency_ms"].items())
            typer.echo(f"{name}: params {m['params']:,}  size {m['size_bytes'] / 1024:.1f} KB  accuracy {m['accuracy']:.4f}  {lat}")
        from kdforge.bench.deploy import bench_lines

        for line in bench_lines(results, threads):  # runtime settings; with several artifacts, which one to ship
            typer.echo(line)
        if json_out is not None:
            from kdforge.rundir import write_json

            write_json(json_out, results)

    @app.command()
    def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
        """(Re)write report.md and report.html for a run directory."""
        from kdforge.bench.report import write_report
        from kdforge.workflows.compress import load_run

        _, data, _, teacher = load_run(run_dir)
        typer.echo(f"report: {write_report(run_dir, teacher=teacher, data=data)}")
