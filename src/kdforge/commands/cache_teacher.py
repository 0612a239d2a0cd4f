"""`kdforge cache-teacher RECIPE`: run the teacher once over the training set and write the store
(kdforge.workflows.teacher_store.cache_teacher_for)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer


def register(app: typer.Typer) -> None:
    @app.command("cache-teacher")
    def cache_teacher(
        recipe: Path = typer.Argument(..., help="Recipe YAML with a `store:` section."),
        set_: List[str] = typer.Option([], "--set", help="Override a field: --set store.k=16 (repeatable)."),
    ) -> None:
        """Run the teacher once over the training set; write its sparse logits (sampled or top-k ids) and features to the store."""
        from kdforge.recipe_file import load_recipe
        from kdforge.workflows.teacher_store import cache_teacher_for

        info = cache_teacher_for(load_recipe(recipe, set_))
        typer.echo(f"teacher store {info['path']}: {info['samples']} samples, {info['sampling']} k={info['k']} of {info['vocab']}, "
                   f"{info['bytes'] / 1e6:.1f} MB ({info['bytes_per_position']:,.1f} bytes per position{', packed' if info['packed'] else ''})")
