"""The teacher: a frozen source of outputs.

Frozen by construction: eval mode that `.train()` cannot undo, every parameter
`requires_grad=False`, and every call under `torch.no_grad()` so no autograd
graph is ever built through it. (`inference_mode` would be stricter, but its
tensors cannot be saved for the student's backward pass.)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdforge.taps import FeatureTaps


class Teacher:
    """Wraps a trained nn.Module. `teacher(x)` -> (logits, {layer: feature})."""

    calls = 0
    samples = 0

    def __init__(self, model: nn.Module, feature_layers: list[str] | set[str] = ()):
        self.model = model.eval().requires_grad_(False)
        self.model.train = lambda mode=True: self.model  # type: ignore[method-assign]  # stays in eval
        self.taps = FeatureTaps(self.model, feature_layers, role="teacher") if feature_layers else None
        self.calls = 0  # counted so tests can prove a cached run never calls the teacher
        self.samples = 0  # samples forwarded through the teacher (benchmarks count teacher work)

    @torch.no_grad()
    def __call__(self, inputs: Any, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """idx (the batch's sample ids) is ignored here; a CachedTeacher (kdforge.store) reads by it."""
        self.calls += 1
        out = self.model(inputs)
        logits = out.logits if hasattr(out, "logits") else out
        self.samples += logits.shape[0]
        feats = dict(self.taps.outputs) if self.taps else {}
        return logits, feats  # made under no_grad: no graph to detach from

    def probe(self, inputs: Any, idx: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One call that is not counted: methods use it to learn shapes before training."""
        calls, samples = self.calls, self.samples
        out = self(inputs, idx=idx)
        self.calls, self.samples = calls, samples
        return out

    def parameters(self):
        return self.model.parameters()

    def to(self, device: torch.device | str) -> "Teacher":
        self.model.to(device)
        return self


TOKEN_LOGP = "token_logp"  # the store feature of a cross-tokenizer store (see TokenLogprobTeacher)


class TokenLogprobTeacher(Teacher):
    """A causal-LM teacher that also gives, per position t, the log-probability of its own token t
    given the tokens before it, at `temperature`: feature TOKEN_LOGP (B, T), 0 at t = 0.

    What a teacher store for cross-tokenizer distillation keeps beside the sparse distribution of
    every teacher token: a span of several teacher tokens is scored by the chain rule (GOLD's merge,
    kdforge.losses.cross_chunked), which needs the exact probability of each token but the last,
    whether or not it is among the stored top-k ids or draws."""

    def __init__(self, model: nn.Module, temperature: float = 1.0, feature_layers: list[str] | set[str] = ()):
        super().__init__(model, feature_layers)
        self.temperature = float(temperature)

    @torch.no_grad()
    def __call__(self, inputs: Tensor, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits, feats = super().__call__(inputs, idx)  # (B, T, V)
        ids = inputs.long()
        logp = torch.log_softmax(logits[:, :-1].float() / self.temperature, -1).gather(-1, ids[:, 1:, None])[..., 0]
        return logits, {**feats, TOKEN_LOGP: torch.nn.functional.pad(logp, (1, 0))}  # (B, T): token t given < t
