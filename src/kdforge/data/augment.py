"""In-domain transfer-set augmentation for text classification (TinyBERT's data augmentation,
Jiao et al. 2020, without its masked-LM half when no MLM is at hand).

Each training text gets `n` variants, made on the tokenized ids word by word (a word is a
token plus its `##` continuation pieces):

- replacement: a single-token word is replaced, with probability `replace`, by one of its
  `neighbours` nearest whole-word tokens by cosine similarity in the teacher's
  word-embedding table (TinyBERT uses GloVe neighbours for the same purpose);
- dropout: a word is deleted with probability `drop` (one word always stays);
- swap: a word trades places with the next one with probability `swap`.

Masked-LM replacement (TinyBERT's other half) needs a masked language model; the offline
encoder here (all-MiniLM-L6-v2) is a sentence encoder without an MLM head, so it is not done.

Variants carry no label (`UNLABELLED`): the teacher labels them through the teacher-output
store, label terms skip them. Only the training split is augmented, and a variant equal to
any row given in `exclude` (the val and test ids) or to its source is discarded, so no
augmented sample duplicates an evaluation sample. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.data.base import UNLABELLED
from kdforge.data.text import TokenDataset

TRIES = 3  # attempts per variant before it is given up (a one-word text has few variants)


def word_neighbours(embeddings: Tensor, tokens: list[str], wanted: Tensor, k: int, special: set[int],
                    chunk: int = 512) -> dict[int, np.ndarray]:
    """{token id: (k,) ids of its nearest whole-word tokens} for the whole-word ids in `wanted`.

    embeddings: (V, D) the teacher's input word embeddings; tokens: id -> token string."""
    def is_word(i: int) -> bool:
        t = tokens[i]
        return i not in special and len(t) > 1 and t.isalpha()

    cand = torch.tensor([i for i in range(len(tokens)) if is_word(i)], dtype=torch.long)  # (C,)
    queries = torch.tensor([int(i) for i in wanted.tolist() if is_word(int(i))], dtype=torch.long)  # (U,)
    if len(cand) <= 1 or len(queries) == 0:
        return {}
    emb = F.normalize(embeddings.detach().float(), dim=-1)
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        sim = emb[q] @ emb[cand].T  # (u, C) cosine
        sim[q[:, None] == cand[None, :]] = -2.0  # never itself
        top = sim.topk(min(k, len(cand) - 1), dim=-1).indices  # (u, k)
        for i, row in zip(q.tolist(), cand[top].numpy()):
            out[i] = row
    return out


def _words(ids: list[int], continuation: np.ndarray) -> list[list[int]]:
    words: list[list[int]] = []
    for t in ids:
        if words and continuation[t]:
            words[-1].append(t)
        else:
            words.append([t])
    return words


def _variant(words: list[list[int]], cfg, rng: np.random.Generator, neighbours: dict[int, np.ndarray]) -> list[int]:
    out = []
    for w in words:
        if cfg.drop and rng.random() < cfg.drop:
            continue
        if len(w) == 1 and w[0] in neighbours and cfg.replace and rng.random() < cfg.replace:
            w = [int(rng.choice(neighbours[w[0]]))]
        out.append(w)
    if not out:  # never an empty text
        out = [words[int(rng.integers(len(words)))]]
    for i in range(len(out) - 1):
        if cfg.swap and rng.random() < cfg.swap:
            out[i], out[i + 1] = out[i + 1], out[i]
    return [t for w in out for t in w]


def augment(train: TokenDataset, cfg, seed: int, *, embeddings: Tensor, tokenizer,
            exclude: list[Tensor] = ()) -> TokenDataset:
    """train (N rows, right-padded (N, L) ids) -> the N originals followed by up to N·cfg.n unlabelled variants.

    embeddings: (V, D) the teacher's word embeddings; exclude: (M, L) id tensors no variant may equal."""
    ids, L = train.x, train.x.shape[1]
    pad, cls, sep = tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    tokens = tokenizer.convert_ids_to_tokens(list(range(embeddings.shape[0])))
    special = set(tokenizer.all_special_ids)
    continuation = np.array([t is not None and t.startswith("##") for t in tokens])
    neighbours = word_neighbours(embeddings, tokens, torch.unique(ids), cfg.neighbours, special) if cfg.replace else {}
    seen = {tuple(r) for part in (ids, *exclude) for r in part.tolist()}  # originals, val and test: never produced
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = []
    for row in ids.tolist():
        body = [t for t in row if t != pad]
        head = [body.pop(0)] if body and body[0] == cls else []
        tail = [body.pop()] if body and body[-1] == sep else []
        if not body:
            continue
        words = _words(body, continuation)
        for _ in range(cfg.n):
            for _try in range(TRIES):
                new = head + _variant(words, cfg, rng, neighbours)[: L - len(head) - len(tail)] + tail
                new += [pad] * (L - len(new))
                if tuple(new) not in seen:
                    seen.add(tuple(new))
                    rows.append(new)
                    break
    extra = torch.tensor(rows, dtype=torch.long).reshape(-1, L)
    texts = list(train.texts or [""] * len(train)) + tokenizer.batch_decode(extra, skip_special_tokens=True)
    y = torch.cat([train.y, torch.full((len(extra),), UNLABELLED, dtype=torch.long)])
    return TokenDataset(torch.cat([ids, extra]), y, texts)


__all__ = ["augment", "word_neighbours"]
