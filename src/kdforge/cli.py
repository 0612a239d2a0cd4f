"""kdforge command line: demo | run (and, as they land, compress | bench | report | search | cache-teacher).

Errors a user can fix print as one line (`error: ...`) with exit code 2 (3 for a
failed gate); `--debug` shows the traceback instead.
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import typer

from kdforge.errors import KDForgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Knowledge distillation and model compression.")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory to write."),
    quick: bool = typer.Option(False, help="Fewer epochs (a smoke test, not the real numbers)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print one line per epoch (always kept in metrics.jsonl)."),
) -> None:
    """Teacher on digits -> small student by KD, next to the baseline arms, plus Hinton's omitted-3 experiment."""
    from kdforge.demo import run_demo
    from kdforge.train.progress import show_epoch_lines

    show_epoch_lines(verbose)
    run_demo(out, quick=quick)


@app.command()
def run(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (omit with --resume)."),
    set_: List[str] = typer.Option([], "--set", help="Override a field: --set distill.epochs=3 (repeatable)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this run directory."),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print one line per epoch (always kept in metrics.jsonl)."),
) -> None:
    """Run a recipe end to end and write its run directory."""
    from kdforge.recipe_file import load_recipe
    from kdforge.workflows import run_recipe
    from kdforge.rundir import run_dir_lock
    from kdforge.train.progress import show_epoch_lines

    show_epoch_lines(verbose)

    if resume is not None:
        recipe_path = resume / "recipe.yaml"
        if not recipe_path.exists():
            raise KDForgeError(f"--resume: {resume} is not a kdforge run directory (no recipe.yaml)")
        rec = load_recipe(recipe_path, [*set_, f"run_dir={resume}"])
    elif recipe is None:
        raise KDForgeError("run: give a RECIPE file or --resume RUN_DIR")
    else:
        rec = load_recipe(recipe, set_)
    # one live run per run directory (rank 0 holds the lock for a torchrun job)
    with run_dir_lock(Path(rec.run_dir)) if os.environ.get("RANK", "0") == "0" else nullcontext():
        results = run_recipe(rec, resume=resume is not None, force=force, quiet=quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the whole job
        typer.echo(
            f"student test accuracy {results['student']['accuracy']:.4f}; run directory {rec.run_dir}"
        )
        if "selection" in results:  # the control arm: KD against the same student trained on the labels alone
            sel = results["selection"]
            typer.echo(f"KD vs training alone: distilled {results['student_distilled']['accuracy']:.4f}, control "
                       f"{results['control']['accuracy']:.4f} on test ({sel['test']['kd_minus_control']:+.4f}); "
                       f"kept {sel['kept']} (validation {sel['val']['kd_minus_control']:+.4f})")
        for note in results.get("teacher_diagnostics", {}).get("warnings", []):
            typer.echo(f"warning: {note}")


def _register_commands() -> None:
    import importlib
    import pkgutil

    import kdforge.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"kdforge.commands.{info.name}").register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("KDFORGE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        from typer._click import exceptions as click_exc  # typer >= 0.2x vendors click
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    try:
        app(args=argv, prog_name="kdforge", standalone_mode=False)
        return 0
    except KDForgeError as e:
        if debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets the same error: rank 0 says it once
            typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except click_exc.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        return 2
    except typer.Abort:
        return 130


if __name__ == "__main__":
    sys.exit(main())
