"""One text in two tokenizations, aligned: the data of cross-tokenizer distillation.

The text is cut into windows of `length` student tokens, as `text-lm` does. The teacher's
tokenizer reads the same text; a window's teacher tokens are those inside its characters, and
`losses.cross_tokenizer.align_spans` cuts the window into spans that both tokenizations cover
with whole tokens. Everything is computed
once, when the data is built; a sample is plain tensors:

    input_ids (T,), loss_mask (T,), token_bytes (T,)    the student's tokens
    teacher_ids (T',), teacher_mask (T',)                the teacher's tokens (right-padded)
    student_span (T,), teacher_span (T',)                span id of every token (-1: padding)

`teacher_view()` is the same windows as the teacher reads them, for the teacher's metrics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.base import DataBundle
from kdforge.data.offsets import (char_to_byte, encode_with_offsets, has_offsets, token_bytes, token_style, tokenizer_name,
                                  vocab_tokens)
from kdforge.data.text import read_text_file
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_tokenizer
from kdforge.losses.cross_tokenizer import SharedVocab, align_spans, shared_vocab


def check_alignable(s_tok, t_tok, field: str = "distill.lm.cross_tokenizer") -> None:
    """Both tokenizers must give character offsets; one error names both and what is missing."""
    missing = [f"the {role} tokenizer {tokenizer_name(tok)} gives no character offsets (it is not a fast tokenizer)"
               for role, tok in (("teacher", t_tok), ("student", s_tok)) if tok is None or not has_offsets(tok)]
    if missing:
        raise KDForgeError(f"{field}: cannot align teacher tokenizer {tokenizer_name(t_tok)} with student tokenizer "
                           f"{tokenizer_name(s_tok)}: {'; '.join(missing)}; cross-tokenizer distillation aligns the two "
                           "by the characters each token covers: give a fast (tokenizer.json) tokenizer")


def vocab_pair(s_tok, t_tok, s_size: int | None = None, t_size: int | None = None) -> SharedVocab:
    """The shared vocabulary of two tokenizers (`losses.cross_tokenizer.shared_vocab`)."""
    return shared_vocab(vocab_tokens(s_tok), vocab_tokens(t_tok), token_style(s_tok), token_style(t_tok),
                        set(s_tok.all_special_tokens), set(t_tok.all_special_tokens), s_size, t_size)


class TeacherWindows(Dataset):
    """The teacher's side of paired windows: {"input_ids", "loss_mask", "token_bytes"}, padding not scored."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, nbytes: torch.Tensor):
        self.ids, self.mask, self.nbytes = ids, mask, nbytes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        mask = self.mask[i].clone()
        mask[0] = 0  # the first token is never a prediction target
        return {"input_ids": self.ids[i], "loss_mask": mask, "token_bytes": self.nbytes[i]}


class PairedWindows(Dataset):
    """Windows of student tokens with the teacher's tokens of the same text and their span ids."""

    def __init__(self, parts: dict[str, torch.Tensor], prompt_tokens: int = 0):
        self.parts = parts  # input_ids, token_bytes, student_span (N, T); teacher_ids, teacher_mask, teacher_span, teacher_bytes (N, T')
        self.prompt_tokens = prompt_tokens

    def __len__(self) -> int:
        return len(self.parts["input_ids"])

    def __getitem__(self, i: int) -> dict:
        p = self.parts
        mask = torch.ones(p["input_ids"].shape[1], dtype=torch.long)
        mask[: max(self.prompt_tokens, 1)] = 0
        return {"input_ids": p["input_ids"][i], "loss_mask": mask, "token_bytes": p["token_bytes"][i],
                "teacher_ids": p["teacher_ids"][i], "teacher_mask": p["teacher_mask"][i],
                "student_span": p["student_span"][i], "teacher_span": p["teacher_span"][i]}

    def select(self, rows: slice) -> "PairedWindows":
        return PairedWindows({k: v[rows] for k, v in self.parts.items()}, self.prompt_tokens)

    def teacher_view(self) -> TeacherWindows:
        p = self.parts
        return TeacherWindows(p["teacher_ids"], p["teacher_mask"], p["teacher_bytes"])


def pair_windows(text: str, s_tok, t_tok, length: int) -> PairedWindows:
    """Every whole window of `length` student tokens of `text`, paired with the teacher's tokens.

    Both tokenizers read the whole text once; a window's teacher tokens are those inside the
    characters its student tokens cover (a teacher token across a window edge is left out, and
    the text it covers is scored in neither window), so one shared tokenizer gives the teacher
    exactly the student's tokens."""
    check_alignable(s_tok, t_tok)
    ids, offsets = encode_with_offsets(s_tok, text)
    n = len(ids) // length
    if n < 3:
        raise KDForgeError(f"data.path: text has {len(ids)} tokens, too few for 3 windows of max_length={length}")
    t_all, t_offsets = encode_with_offsets(t_tok, text)
    ends = np.maximum.accumulate(np.array([e for _, e in offsets], dtype=np.int64))
    t_starts = np.maximum.accumulate(np.array([s for s, _ in t_offsets] or [0], dtype=np.int64))
    t_ends = np.maximum.accumulate(np.array([e for _, e in t_offsets] or [0], dtype=np.int64))
    c2b = char_to_byte(text)
    s_bytes = token_bytes(offsets, c2b)
    bounds = [(int(ends[w * length - 1]) if w else 0, int(ends[(w + 1) * length - 1])) for w in range(n)]
    if t_all == ids:  # one tokenization (one tokenizer): the same windows, also where one splits a character
        t_rows = [(w * length, (w + 1) * length) for w in range(n)]
    else:
        t_rows = [(int(np.searchsorted(t_starts, a, "left")), int(np.searchsorted(t_ends, b, "right"))) for a, b in bounds]
        t_rows = [(i, max(i, j)) for i, j in t_rows]  # a window inside one teacher token has none of its own
    t_len = max(max(j - i for i, j in t_rows), 1)
    pad = t_tok.pad_token_id if t_tok.pad_token_id is not None else 0
    parts = {"input_ids": torch.tensor(ids[: n * length]).view(n, length),
             "token_bytes": torch.from_numpy(s_bytes[: n * length].copy()).view(n, length),
             "student_span": torch.zeros(n, length, dtype=torch.long),
             "teacher_ids": torch.full((n, t_len), pad, dtype=torch.long),
             "teacher_mask": torch.zeros(n, t_len, dtype=torch.long),
             "teacher_span": torch.full((n, t_len), -1, dtype=torch.long),
             "teacher_bytes": torch.zeros(n, t_len, dtype=torch.long)}

    def local(offs, a, b):  # offsets relative to the window's text, clipped to it
        return [(min(max(s - a, 0), b - a), min(max(e - a, 0), b - a)) for s, e in offs]

    for w, ((a, b), (i, j)) in enumerate(zip(bounds, t_rows)):
        t_off = local(t_offsets[i:j], a, b)
        s_span, t_span, _ = align_spans(local(offsets[w * length : (w + 1) * length], a, b), t_off, b - a)
        parts["student_span"][w] = torch.tensor(s_span)
        parts["teacher_ids"][w, : j - i] = torch.tensor(t_all[i:j], dtype=torch.long)
        parts["teacher_mask"][w, : j - i] = 1
        parts["teacher_span"][w, : j - i] = torch.tensor(t_span, dtype=torch.long)
        parts["teacher_bytes"][w, : j - i] = torch.from_numpy(token_bytes(t_offsets[i:j], c2b, a) if j > i else np.zeros(0, np.int64))
    return PairedWindows(parts)


def pair_tokenizers(recipe) -> tuple:
    """(student tokenizer: data.tokenizer, else student.hf's; teacher tokenizer: teacher.hf's), after
    checking that the recipe asks nothing cross-tokenizer distillation cannot do yet."""
    for field, unsupported in (("method", recipe.method != "token_kd"),
                               ("teacher.correct", bool(getattr(recipe.teacher, "correct", False)))):
        if unsupported:
            raise KDForgeError(f"{field}: distill.lm.cross_tokenizer works with method token_kd and the live teacher "
                               "or a store written from it (no teacher correction) so far")
    s_spec, field = (recipe.data.tokenizer, "data.tokenizer") if recipe.data.tokenizer else (recipe.student.hf, "student.hf")
    return load_tokenizer(s_spec, field=field), load_tokenizer(recipe.teacher.hf, field="teacher.hf")


def paired_lm_data(cfg, s_tok, t_tok) -> DataBundle:
    """`text-lm` data (a plain text file, contiguous train / val / test windows) in both tokenizations."""
    if cfg.name != "text-lm" or not cfg.path:
        raise KDForgeError(f"data.name: cross-tokenizer distillation reads a plain text file (name: text-lm with data.path), "
                           f"not {cfg.name!r}")
    windows = pair_windows(read_text_file(Path(cfg.path)), s_tok, t_tok, cfg.max_length)
    n = len(windows)
    n_test, n_val = max(1, int(n * cfg.test_fraction)), max(1, int(n * cfg.val_fraction))
    train = windows.select(slice(0, n - n_val - n_test))
    if cfg.train_limit is not None:
        train = train.select(slice(0, cfg.train_limit))
    return DataBundle(train, windows.select(slice(n - n_val - n_test, n - n_test)), windows.select(slice(n - n_test, n)),
                      input_shape=(cfg.max_length,), num_classes=len(s_tok))


__all__ = ["PairedWindows", "TeacherWindows", "check_alignable", "pair_tokenizers", "pair_windows", "paired_lm_data", "vocab_pair"]
