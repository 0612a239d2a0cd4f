"""Self-distillation: born-again networks (Furlanello et al. 2018, "Born-Again Neural Networks").

Generation 1 learns from the labels alone. Generation k+1 — the same
architecture, freshly and independently initialised — learns from generation k
(frozen) with the recipe's distill losses (typically the kd term: α · T²·KL + (1−α) · CE).

The step is the standard teacher -> student step, so the method is StandardKD registered
under its own key; the generations are its workflow (kdforge.workflows.born_again).
"""
from __future__ import annotations

from kdforge.methods.base import register_method
from kdforge.methods.standard import StandardKD

# the step reads the losses (layer maps and the confidence filter included); the workflow the generations
register_method("born_again", StandardKD, workflow="born_again",
                reads=frozenset({"distill.losses", "distill.layer_map", "distill.filter", "born_again"}))
