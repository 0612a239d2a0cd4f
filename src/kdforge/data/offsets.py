"""Where each token of a text sits: character offsets from fast tokenizers, and the UTF-8 bytes
each token accounts for (the denominator of bits per byte).

A token accounts for the text from the end of the token before it to its own end, so the
whitespace a WordPiece tokenizer drops belongs to the word after it, the tokens of a text
account for its bytes exactly once, and overlapping offsets (byte-level tokens that split one
character) are counted once, by the token that completes the character.
"""
from __future__ import annotations

import numpy as np

from kdforge.errors import KDForgeError


def tokenizer_name(tok) -> str:
    """How an error names a tokenizer: its folder or alias and its class."""
    where = getattr(tok, "name_or_path", "") or "?"
    return f"{where} ({type(tok).__name__})"


def has_offsets(tok) -> bool:
    return bool(getattr(tok, "is_fast", False))


def encode_with_offsets(tok, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character offsets) of `text` without special tokens; a tokenizer that cannot give
    offsets (not a fast tokenizer) is a KDForgeError that names it."""
    if not has_offsets(tok):
        raise KDForgeError(f"tokenizer {tokenizer_name(tok)} gives no character offsets (it is not a fast tokenizer)")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def char_to_byte(text: str) -> np.ndarray:
    """(len(text) + 1,) int64: the UTF-8 byte position of each character boundary."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    starts = np.flatnonzero((raw & 0xC0) != 0x80)  # a byte that does not continue a character starts one
    return np.append(starts, len(raw)).astype(np.int64)


def token_bytes(offsets: list[tuple[int, int]], c2b: np.ndarray, start: int = 0) -> np.ndarray:
    """(N,) int64 bytes each token accounts for: from the previous token's end (or `start`, a
    character position) to its own, ends taken as a running maximum."""
    ends = np.array([e for _, e in offsets], dtype=np.int64).reshape(-1)
    if len(ends):
        ends = np.maximum.accumulate(np.maximum(ends, start))
    return np.diff(c2b[np.concatenate([[start], ends])])


def text_token_bytes(tok, text: str | list[str], eos: bool = False) -> np.ndarray | None:
    """Bytes of each token of a text, or of documents each followed by an end-of-sequence token
    (which accounts for no byte) when `eos`, in the order the tokenizer reads them; None for a
    tokenizer without offsets."""
    if not has_offsets(tok):
        return None
    docs = [text] if isinstance(text, str) else list(text)
    enc = tok(docs, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out = []
    for doc, offsets in zip(docs, enc):
        out.append(token_bytes([tuple(o) for o in offsets], char_to_byte(doc)))
        if eos and not isinstance(text, str):
            out.append(np.zeros(1, np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def token_style(tok) -> str:
    """How a tokenizer's vocabulary spells a leading space (see losses.cross_tokenizer.token_text)."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return "plain"
    parts = [type(backend.model).__name__, repr(backend.pre_tokenizer), repr(backend.decoder)]
    text = " ".join(parts)
    if "ByteLevel" in text:
        return "byte_level"
    if "Metaspace" in text or "▁" in text:
        return "metaspace"
    if "WordPiece" in text:
        return "wordpiece"
    return "plain"


def vocab_tokens(tok) -> list[str | None]:
    """Each id's token string, by id (None for a gap in the ids)."""
    vocab = tok.get_vocab()
    out: list[str | None] = [None] * (max(vocab.values()) + 1 if vocab else 0)
    for s, i in vocab.items():
        out[i] = s
    return out


__all__ = ["char_to_byte", "encode_with_offsets", "has_offsets", "text_token_bytes", "token_bytes", "token_style",
           "tokenizer_name", "vocab_tokens"]
