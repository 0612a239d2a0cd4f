"""What a recipe runs: one registered workflow per `method:` (kdforge.registry.WORKFLOWS).

Each workflow checks everything first, then opens the run directory through the one
rank-safe run context (`workflows.run.Run`), composes training stages
(`kdforge.stages.train_stage`), tests and reports; `compress` runs compression stages.
"""
from __future__ import annotations

from kdforge.registry import WORKFLOWS
from kdforge.workflows import born_again, data_free, embedding, lm, multi_teacher, mutual, standard  # noqa: F401  (register)


def run_recipe(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    """Run `recipe` end to end by its method's workflow; returns what it wrote to metrics.json."""
    return WORKFLOWS.get(recipe.method)(recipe, resume=resume, force=force, quiet=quiet)


__all__ = ["run_recipe"]
