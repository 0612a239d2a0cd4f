"""Vocabulary trimming for Hugging Face text students.

A BERT-style student built from a teacher keeps the teacher's whole word-embedding
table (30,522 rows for MiniLM), most of whose rows never occur in a domain. Trimming
keeps the special tokens and the tokens seen in the training corpus (at least
`min_count` times) and maps every other id to [UNK].

The remap lives in ONE place: the word-embedding module itself (`RemappedEmbedding`)
holds a buffer `vocab_map` (V_original,) -> row of the trimmed table, so the model keeps
taking the ORIGINAL tokenizer's ids everywhere — in PyTorch, in a saved HF folder
(the kept ids are written into config.json as `kdforge_kept_token_ids`; `install_saved`
re-creates the remap when kdforge loads the folder), and in an exported ONNX graph
(the remap is one Gather before the embedding Gather).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError

CONFIG_KEY = "kdforge_kept_token_ids"


class RemappedEmbedding(nn.Embedding):
    """nn.Embedding over the kept rows; forward takes original ids (…,) -> (…, D)."""

    def __init__(self, weight: Tensor, kept: Tensor, original_size: int, unk_new: int, padding_idx: int | None):
        super().__init__(weight.shape[0], weight.shape[1], padding_idx=padding_idx, _weight=weight.detach().clone())
        vocab_map = torch.full((original_size,), unk_new, dtype=torch.long)
        vocab_map[kept] = torch.arange(len(kept))
        self.register_buffer("vocab_map", vocab_map, persistent=False)  # rebuilt from config, never a weight

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(self.vocab_map[ids], self.weight, self.padding_idx)


def token_counts(ids: Tensor, vocab_size: int) -> Tensor:
    """(N, L) token ids -> (vocab_size,) occurrence counts."""
    return torch.bincount(ids.reshape(-1).long(), minlength=vocab_size)[:vocab_size]


def kept_ids(counts: Tensor, special_ids: list[int], min_count: int = 1) -> Tensor:
    """Sorted ids to keep: every special token, and every token seen >= min_count times."""
    keep = counts >= min_count
    keep[torch.as_tensor(special_ids, dtype=torch.long)] = True
    return keep.nonzero()[:, 0]


def _word_embeddings(hf: nn.Module) -> nn.Embedding:
    emb = hf.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise KDForgeError(f"student.trim_vocab: {type(hf).__name__} has no nn.Embedding input table to trim")
    return emb


def _install(hf: nn.Module, kept: Tensor, original_size: int, unk_id: int) -> RemappedEmbedding:
    emb = _word_embeddings(hf)
    pad_old = emb.padding_idx
    pos = {int(t): i for i, t in enumerate(kept.tolist())}
    if unk_id not in pos:
        raise KDForgeError(f"student.trim_vocab: the [UNK] id {unk_id} must be among the kept tokens")
    weight = emb.weight if emb.weight.shape[0] == len(kept) else emb.weight[kept]
    new = RemappedEmbedding(weight, kept, original_size, pos[unk_id], pos.get(pad_old) if pad_old is not None else None)
    hf.set_input_embeddings(new)
    hf.config.vocab_size = len(kept)
    setattr(hf.config, CONFIG_KEY, [int(t) for t in kept.tolist()])
    setattr(hf.config, "kdforge_original_vocab_size", int(original_size))
    setattr(hf.config, "kdforge_unk_token_id", int(unk_id))
    return new


def trim_vocab_(wrapper: nn.Module, corpus_ids: Tensor, special_ids: list[int], unk_id: int,
                min_count: int = 1) -> dict:
    """Trim the word embeddings of a kdforge HF wrapper in place to the tokens of `corpus_ids`
    (N, L). Returns {"vocab_before", "vocab_after", "params_freed", "bytes_freed"} (fp32 bytes)."""
    hf = wrapper.hf
    if hasattr(hf.config, CONFIG_KEY):
        raise KDForgeError("student.trim_vocab: this model's vocabulary is already trimmed")
    emb = _word_embeddings(hf)
    before, dim = emb.weight.shape
    kept = kept_ids(token_counts(corpus_ids, before), special_ids, min_count)
    _install(hf, kept, before, unk_id)
    freed = (before - len(kept)) * dim
    return {"vocab_before": int(before), "vocab_after": int(len(kept)), "params_freed": int(freed),
            "bytes_freed": int(freed * emb.weight.element_size())}


def trim_student(student: nn.Module, min_count: int, corpus_ids: Tensor, tokenizer) -> dict:
    """`student.trim_vocab` of a recipe: trim to the tokens of the training corpus (N, L) as the
    data's tokenizer wrote them; its special tokens are kept and its [UNK] takes every other id."""
    if not hasattr(student, "hf") or not hasattr(student.hf, "get_input_embeddings"):
        raise KDForgeError("student.trim_vocab: only Hugging Face text students (name: hf) have a vocabulary to trim")
    if tokenizer is None or tokenizer.unk_token_id is None:
        raise KDForgeError("student.trim_vocab: needs data.tokenizer with an [UNK] token (out-of-vocabulary ids map to it)")
    return trim_vocab_(student, corpus_ids, list(tokenizer.all_special_ids), int(tokenizer.unk_token_id), min_count)


def install_saved(hf: nn.Module) -> nn.Module:
    """After `from_pretrained` of a folder saved from a trimmed model: put the remap back,
    so the loaded model takes the original tokenizer's ids again. No-op for other models."""
    kept = getattr(hf.config, CONFIG_KEY, None)
    if kept is not None and not isinstance(hf.get_input_embeddings(), RemappedEmbedding):
        _install(hf, torch.tensor(kept, dtype=torch.long), int(hf.config.kdforge_original_vocab_size),
                 int(hf.config.kdforge_unk_token_id))
    return hf


__all__ = ["RemappedEmbedding", "install_saved", "kept_ids", "token_counts", "trim_student", "trim_vocab_"]
