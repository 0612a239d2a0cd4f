"""What a recipe runs: the workflow its method's registration names (MethodSpec.workflow, a key of
kdforge.registry.WORKFLOWS): classify (standard, supervised), lm (token_kd, sequence_kd, gkd), reasoning,
born_again, mutual, multi_teacher, data_free, embedding.

Each workflow checks everything first, then opens the run directory through the one
rank-safe run context (`workflows.run.Run`), composes training stages
(`kdforge.stages.train_stage`), tests and reports; `compress` runs compression stages.
"""
from __future__ import annotations

from kdforge.methods.base import method_spec
from kdforge.registry import WORKFLOWS
from kdforge.workflows import born_again, data_free, embedding, lm, multi_teacher, mutual, reasoning, standard  # noqa: F401  (register)


def run_recipe(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    """Run `recipe` end to end by its method's workflow; returns what it wrote to metrics.json."""
    return WORKFLOWS.get(method_spec(recipe.method).workflow)(recipe, resume=resume, force=force, quiet=quiet)


__all__ = ["run_recipe"]
