"""Plain supervised training, no teacher: cross-entropy on the labels (classifiers) or on the
data's next tokens (causal LMs).

Used to train teachers, to correct a causal-LM teacher on the distillation data, and for the
"student alone" / cross-entropy-only baseline arms.
"""
from __future__ import annotations

from torch import Tensor, nn

from kdforge.losses.chunked import chunked_head
from kdforge.methods.base import Method, register_method
from kdforge.methods.sequence import next_token_ce
from kdforge.methods.terms import labelled_ce


# distill.losses: read as "the labels" (recipes give [ce]); any other term is not scored
@register_method("supervised", workflow="classify", teacher=False,
                 reads=frozenset({"distill.losses", "distill.bias_calibration", "compress", "student.trim_vocab"}))
class Supervised(Method):
    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, cfg=None, probe=None):
        super().__init__()
        self.student = student

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.student(batch["x"])  # (B, C)
        return {"ce": labelled_ce(logits, batch["y"], batch.get("n_labelled"))}


class NextTokenCE(Method):
    """Next-token cross-entropy of a causal LM on the tokens each sample's loss_mask scores (batches
    {"input_ids": (B, T), "loss_mask": (B, T), "attention_mask"?: (B, T)}). For HF causal LMs the
    vocabulary projection runs per chunk of `chunk_size` positions (no (B, T, V) logits at once)."""

    def __init__(self, student: nn.Module, chunk_size: int | None = 128):
        super().__init__()
        self.student, self.chunk_size = student, chunk_size

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, mask = batch["input_ids"], batch["loss_mask"]
        if "attention_mask" in batch:
            mask = mask * batch["attention_mask"]
        targets, mask = ids[:, 1:], mask[:, 1:]  # position t predicts ids[:, t + 1]
        head = getattr(self.student, "head", None)
        if self.chunk_size and head is not None:
            hidden = self.student.hidden_states(ids)[:, :-1]  # (B, T-1, D)
            return chunked_head(head, hidden, mask, lambda s, pos: {"ce": next_token_ce(s, targets[:, pos], mask[:, pos])},
                                self.chunk_size)
        return {"ce": next_token_ce(self.student(ids)[:, :-1], targets, mask)}  # (B, T-1, V)
