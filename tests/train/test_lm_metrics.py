"""Held-out LM metrics: perplexity and the calibration error of next-token probabilities."""
import math

import pytest
import torch
from torch import nn

from kdforge.train.lm_metrics import perplexity_metrics


class Counter(nn.Module):
    """Predicts token t+1 = (t + 1) mod V with probability `p` (the rest spread evenly)."""

    def __init__(self, vocab: int, p: float):
        super().__init__()
        self.vocab, self.p = vocab, p

    def forward(self, ids):
        probs = torch.full((*ids.shape, self.vocab), (1 - self.p) / (self.vocab - 1))
        probs.scatter_(-1, ((ids + 1) % self.vocab)[..., None], self.p)
        return probs.log()


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_ece_is_the_gap_between_confidence_and_accuracy(p):
    data = [{"input_ids": (torch.arange(12) + i) % 5, "loss_mask": torch.ones(12)} for i in range(6)]
    m = perplexity_metrics(Counter(5, p), data, "cpu")
    assert m["accuracy"] == 1.0  # always right, with confidence p
    assert m["ece"] == pytest.approx(1 - p, abs=1e-6)
    assert m["perplexity"] == pytest.approx(1 / p, rel=1e-5) and m["loss"] == pytest.approx(-math.log(p), rel=1e-5)
