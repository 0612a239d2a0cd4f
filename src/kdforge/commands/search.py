"""`kdforge search RECIPE --trials N`: Optuna over temperature, α, loss weights (and width)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        recipe: Path = typer.Argument(..., help="Recipe YAML (method standard, with a kd term)."),
        trials: int = typer.Option(20, "--trials", help="Optuna trials (the first is the recipe's own settings)."),
        out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN_DIR-search)."),
        set_: List[str] = typer.Option([], "--set", help="Override a field: --set search.epochs=10 (repeatable)."),
        no_test: bool = typer.Option(False, "--no-test", help="Do not report the chosen configuration's test accuracy."),
        quiet: bool = typer.Option(False, help="No per-trial lines."),
        force: bool = typer.Option(False, help="Replace an existing output folder."),
    ) -> None:
        """Tune KD hyperparameters on a held-out part of the training split; write best-recipe.yaml."""
        from kdforge.recipe_file import load_recipe
        from kdforge.search import run_search

        rec = load_recipe(recipe, set_)
        out_dir = out or Path(f"{rec.run_dir}-search")
        res = run_search(rec, trials, out_dir, quiet=quiet, report_test=not no_test, force=force)
        c, d = res["chosen"], res["default"]
        typer.echo(f"chosen trial {c['trial']}: held-out {c['mean']:.4f} ± {c['std']:.4f} (default {d['mean']:.4f} ± {d['std']:.4f})")
        if "test" in res:
            typer.echo(f"test accuracy: chosen {res['test']['chosen']:.4f}, default {res['test']['default']:.4f}")
        typer.echo(f"best recipe {out_dir / 'best-recipe.yaml'}; report {out_dir / 'search.md'}")
