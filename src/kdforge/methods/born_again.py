"""Self-distillation: born-again networks (Furlanello et al. 2018, "Born-Again Neural Networks").

Generation 1 learns from the labels alone. Generation k+1 — the same
architecture, freshly and independently initialised — learns from generation k
(frozen) with the recipe's distill losses (typically the kd term: α · T²·KL + (1−α) · CE).
Each generation is one stage of the run directory (`gen1/`, `gen2/`, ...) with its
own metrics.jsonl; metrics.json lists every generation's test accuracy and that of
the generations' ensemble (averaged softmax, BANE in the paper).

The step is the standard teacher -> student step; the generations are a workflow
(kdforge.workflows.born_again).
"""
from __future__ import annotations

from kdforge.methods.standard import StandardKD
from kdforge.registry import METHODS
from kdforge.train.evaluate import predict


@METHODS.register("born_again")
class BornAgain(StandardKD):
    """StandardKD whose teacher is the previous generation (kdforge.workflows.born_again runs the generations)."""


def ensemble_accuracy(models: list, dataset) -> float:
    """Accuracy of the averaged softmax of `models` on `dataset`."""
    probs, y = None, None
    for m in models:
        logits, y = predict(m, dataset)  # (N, C), (N,)
        probs = logits.softmax(-1) if probs is None else probs + logits.softmax(-1)
    return (probs.argmax(-1) == y).float().mean().item()


__all__ = ["BornAgain", "ensemble_accuracy"]
