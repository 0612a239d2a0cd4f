"""The one rank-safe run context every workflow opens after its checks.

One process or many (torchrun / accelerate launch): rank 0 opens (or, with
`force`, replaces) the run directory and writes recipe.yaml and env.json while
the other ranks wait; metrics.json, report.md, compression and reports are
written by rank 0 alone. A failure on rank 0 is learned by every rank at the
same collective, so no rank is left waiting for a folder that never comes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from kdforge.errors import KDForgeError
from kdforge.methods.base import Method, method_spec
from kdforge.models.small import count_parameters
from kdforge.recipe_file import dump_recipe
from kdforge.rundir import environment, write_json, write_text
from kdforge.train import distributed as dist
from kdforge.train.evaluate import classification_metrics

# (header, key) of a report column; rows lacking the key show "-"
Columns = Sequence[tuple[str, str]]
ACCURACY: Columns = (("test accuracy", "accuracy"),)


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Check (resume) or create (fresh; `force` replaces an existing folder) the run directory."""
    if resume:
        if not (run_dir / "recipe.yaml").exists():
            raise KDForgeError(f"--resume: {run_dir} is not a kdforge run directory (no recipe.yaml)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise KDForgeError(f"run_dir {run_dir} already exists; use --resume to continue it or --force to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def build_method(recipe, student, teacher, probe: dict, *, cfg=None, tokenizers=(None, None)) -> Method:
    """The recipe's method, built through its one registration (MethodSpec.build): the models, `cfg` (default
    the recipe's distill: section), one probe batch, and the recipe section / tokenizers the method declares."""
    spec = method_spec(recipe.method)
    section = getattr(recipe, spec.section) if spec.section else None
    return spec.build(student, teacher, recipe.distill if cfg is None else cfg, probe, section=section, tokenizers=tokenizers)


def eval_row(model: nn.Module, data, classes: list[int] | None = None) -> dict:
    """Test-set classification metrics of `model` (on its own device) and its parameter count."""
    return {**classification_metrics(model, data.test, classes=classes), "params": count_parameters(model)}


def report_markdown(recipe, rows: dict[str, dict], columns: Columns = ACCURACY, notes: Sequence[str] = ()) -> str:
    """report.md: a title, one table row per model (params + `columns`), then `notes` as paragraphs."""
    lines = [f"# kdforge run — {recipe.data.name}, method {recipe.method}, seed {recipe.seed}", "",
             "| model | params |" + "".join(f" {h} |" for h, _ in columns), "|---|---:|" + "---:|" * len(columns)]
    for name, row in rows.items():
        params = f"{row['params']:,}" if "params" in row else "-"
        cells = "".join(f" {row[k]:.4f} |" if isinstance(row.get(k), (int, float)) else " - |" for _, k in columns)
        lines.append(f"| {name} | {params} |{cells}")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def on_main(ctx: dist.Context, fn: Callable[..., Any], *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)` on rank 0 only; the other ranks wait for it and get None.
    If it raises on rank 0, it raises there and every other rank raises a KDForgeError."""
    out, error = None, None
    if ctx.is_main:
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 (re-raised below, once the other ranks know)
            error = e
    failed = ctx.sum_dict({"failed": float(error is not None)})["failed"]  # a collective: the barrier too
    if error is not None:
        raise error
    if failed:
        raise KDForgeError("rank 0 failed (its error is printed above); this rank stops too")
    return out


class Run:
    """An opened run directory (`Run.open`); `dir`, the process group's `ctx`, and rank-0-only writes."""

    def __init__(self, recipe, ctx: dist.Context):
        self.recipe, self.ctx = recipe, ctx
        self.dir = Path(recipe.run_dir)

    @classmethod
    def open(cls, recipe, *, resume: bool = False, force: bool = False) -> "Run":
        """Call after every check has passed: nothing is written before."""
        run = cls(recipe, dist.context(recipe.device))
        run.on_main(run._write_head, resume, force)
        return run

    def _write_head(self, resume: bool, force: bool) -> None:
        prepare_run_dir(self.dir, resume, force)
        write_text(self.dir / "recipe.yaml", dump_recipe(self.recipe))
        write_json(self.dir / "env.json", {**environment(self.recipe.seed), "world_size": self.ctx.world})

    def on_main(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        return on_main(self.ctx, fn, *args, **kwargs)

    def record_work(self, **counts: int) -> None:
        """Add this process group's counts to RUN/work.json (kept apart from metrics.json, which a
        resumed run must reproduce exactly)."""
        counts = self.ctx.sum_dict(counts)

        def add() -> None:
            path = self.dir / "work.json"
            work = json.loads(path.read_text()) if path.exists() else {}
            write_json(path, {k: int(work.get(k, 0) + v) for k, v in counts.items()})

        self.on_main(add)

    def finish(self, results: dict, report: str) -> dict:
        """metrics.json and report.md, written by rank 0; every rank returns `results`."""
        def write() -> None:
            write_json(self.dir / "metrics.json", results)
            write_text(self.dir / "report.md", report)

        self.on_main(write)
        return results


__all__ = ["ACCURACY", "Run", "eval_row", "on_main", "prepare_run_dir", "report_markdown"]
