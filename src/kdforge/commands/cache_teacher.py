"""`kdforge cache-teacher RECIPE`: run the teacher once over the training set and write the store."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from kdforge.errors import KDForgeError


def cache_teacher_for(recipe) -> dict:
    """Write `recipe.store` from the recipe's teacher; returns what was written."""
    from kdforge.data import load_data
    from kdforge.models.build import build_model
    from kdforge.store import open_or_write

    if recipe.store is None:
        raise KDForgeError("store: the recipe has no `store:` section (store.path, store.k)")
    t = recipe.teacher
    if t.name != "hf" and not t.checkpoint:
        raise KDForgeError("teacher.checkpoint: cache-teacher needs a trained teacher (a checkpoint or an hf model); "
                           "or let `kdforge run` write the store after it trains the teacher")
    if getattr(t, "correct", False):
        raise KDForgeError("teacher.correct: the run fine-tunes the teacher first and writes the store from the corrected "
                           "teacher itself; use `kdforge run` (or point teacher.checkpoint at corrected weights, correct: false)")
    data = load_data(recipe.data, recipe.seed)
    teacher = build_model(t, data.input_shape, data.num_classes, "teacher", recipe.seed)
    cached = open_or_write(recipe, teacher, data, rewrite=True)
    return {"path": str(cached.store.path), "samples": cached.store.n, "k": cached.store.k, "sampling": cached.store.sampling,
            "vocab": cached.store.vocab, "bytes": cached.store.nbytes(), "bytes_per_position": cached.store.bytes_per_position(),
            "packed": cached.store.packed}


def register(app: typer.Typer) -> None:
    @app.command("cache-teacher")
    def cache_teacher(
        recipe: Path = typer.Argument(..., help="Recipe YAML with a `store:` section."),
        set_: List[str] = typer.Option([], "--set", help="Override a field: --set store.k=16 (repeatable)."),
    ) -> None:
        """Run the teacher once over the training set; write its sparse logits (sampled or top-k ids) and features to the store."""
        from kdforge.recipe_file import load_recipe

        info = cache_teacher_for(load_recipe(recipe, set_))
        typer.echo(f"teacher store {info['path']}: {info['samples']} samples, {info['sampling']} k={info['k']} of {info['vocab']}, "
                   f"{info['bytes'] / 1e6:.1f} MB ({info['bytes_per_position']:,.1f} bytes per position{', packed' if info['packed'] else ''})")
