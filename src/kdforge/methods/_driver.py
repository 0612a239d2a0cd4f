"""What the multi-stage methods (born_again, mutual, data_free, multi_teacher) share
when they run a whole recipe: open the run directory only after every check has
passed, train teachers as stages, and write metrics.json + report.md.

Each method's `run_recipe(recipe, ...)` is found by `kdforge.pipeline.run_recipe`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from kdforge.models.small import count_parameters
from kdforge.train import distributed as dist


def open_run(recipe, *, resume: bool, force: bool) -> Path:
    """Rank 0 opens (or, with force, replaces) the run directory and writes recipe.yaml and env.json; the
    other ranks of a torchrun job wait for it, so they neither see a half-made folder nor delete it."""
    from kdforge.recipe_file import dump_recipe
    from kdforge.pipeline import prepare_run_dir
    from kdforge.rundir import environment, write_json, write_text

    run_dir = Path(recipe.run_dir)
    ctx = dist.context(recipe.device)
    if ctx.is_main:
        prepare_run_dir(run_dir, resume, force)
        write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        write_json(run_dir / "env.json", {**environment(recipe.seed), "world_size": ctx.world})
    ctx.barrier()
    return run_dir


def train_supervised(name: str, model: nn.Module, data, cfg, run_dir: Path, seed: int, quiet: bool) -> dict:
    """Train `model` on the labels as stage `name` (skipped, weights loaded, when already done)."""
    from kdforge.registry import METHODS
    from kdforge.stages import train_stage

    return train_stage(name, run_dir, METHODS.build("supervised", model), data, cfg, seed, quiet=quiet)


def run_stage(name: str, run_dir: Path, method, train, val, cfg, seed: int, *, quiet: bool,
              metric_fn: Callable | None = None, on_done: Callable[[Path], None] | None = None) -> dict:
    """`kdforge.stages.train_stage` with a custom train set (e.g. data-free noise seeds) and metric."""
    from types import SimpleNamespace

    from kdforge.stages import train_stage

    return train_stage(name, run_dir, method, SimpleNamespace(val=val), cfg, seed, quiet=quiet, train=train,
                       metric_fn=metric_fn, on_done=on_done)


def test_row(model: nn.Module, data) -> dict:
    from kdforge.train.evaluate import classification_metrics

    return {**classification_metrics(model, data.test), "params": count_parameters(model)}


def finish_run(run_dir: Path, recipe, results: dict) -> dict:
    """metrics.json + a report.md table of every model that has a test accuracy."""
    from kdforge.rundir import write_json, write_text

    if not dist.context().is_main:  # under torchrun only rank 0 writes
        return results
    write_json(run_dir / "metrics.json", results)
    lines = [f"# kdforge run — {recipe.data.name}, method {recipe.method}, seed {recipe.seed}", "",
             "| model | params | test accuracy |", "|---|---:|---:|"]
    for name, row in results.get("models", {}).items():
        params = f"{row['params']:,}" if "params" in row else "-"
        lines.append(f"| {name} | {params} | {row['accuracy']:.4f} |")
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return results
