"""Bits per byte beside perplexity: total NLL / ln 2 / UTF-8 bytes of the scored text."""
import math

import torch

from kdforge.data.text import LMWindows, lm_windows
from kdforge.train.lm_metrics import perplexity_metrics
from tests.losses.test_cross_tokenizer import SAMPLE, bpe_tokenizer


class Uniform(torch.nn.Module):
    """Every next token equally likely: NLL ln V per token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.vocab) + self.w


def test_bpb_is_total_nll_over_the_scored_bytes():
    tok = bpe_tokenizer(300)
    data = lm_windows(SAMPLE, tok, 12, val_fraction=0.2, test_fraction=0.2)
    test = data.test
    m = perplexity_metrics(Uniform(len(tok)), test)
    scored = sum(int(test[i]["token_bytes"][1:].sum()) for i in range(len(test)))
    tokens = sum(int(test[i]["loss_mask"].sum()) for i in range(len(test)))
    assert m["loss"] == pytest_approx(math.log(len(tok)))
    assert m["bpb"] == pytest_approx(tokens * math.log(len(tok)) / math.log(2) / scored)
    # the windows' bytes are the text's: every token of the text accounts for its own bytes once
    all_bytes = sum(int(ds[i]["token_bytes"].sum()) for ds in (data.train, data.val, data.test) for i in range(len(ds)))
    assert all_bytes <= len(SAMPLE.encode()) and all_bytes > 0.9 * len(SAMPLE.encode())


def test_no_bytes_no_bpb():
    m = perplexity_metrics(Uniform(50), LMWindows(torch.randint(0, 50, (3, 8))))
    assert "bpb" not in m and m["perplexity"] > 1


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-6)
