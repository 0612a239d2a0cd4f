"""Lossless packing of a random-sampled teacher: K draws per position at about 2 bytes per id.

A `sampling: random` store keeps, per position, the unique ids drawn and their counts
(weights c / K). Stored plainly that is 2 bytes per id and 2 per weight; packed
(`store.weights: packed`) one sample's row of P positions is one byte string:

    U        (P,) unique ids per position (uint8; uint16 when K > 255)
    high     per position, the ids' high parts (id >> l) as an Elias–Fano bucket bitvector:
             bit h_i + i set for the i-th id (ascending), U + ceil(V / 2^l) bits
    low      the ids' l low bits, U·l bits
    counts   per id, unary: c − 1 ones, then a zero (K bits per position)

each segment padded to a whole byte (Elias 1974, Fano 1971; the layout of Vigna 2013,
"Quasi-succinct indices"). With l = floor(log2(V / mean U)) an id costs about l + 2 bits
and its count about K / U bits: for SmolLM2 (V = 49,152) at K = 64 draws, about 30 unique ids
per position fit in about 56 bytes, less than the 64 bytes of top-16 (16 fp16 logits + 16 uint16 ids).
The packing is exact: the unpacked ids and counts are the drawn ones, so the estimator
(and its unbiasedness) is the random store's.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["low_bits_for", "pack_draws", "packed_bytes", "unpack_draws", "unpack_rows"]


def low_bits_for(vocab: int, mean_unique: float) -> int:
    """Elias–Fano's low-bit width for ids in [0, vocab) with about `mean_unique` ids per position."""
    return max(0, int(math.floor(math.log2(vocab / max(mean_unique, 1.0)))))


def _count_dtype(draws: int) -> np.dtype:
    return np.dtype(np.uint8 if draws < 256 else np.uint16)


def _nbytes(bits: int) -> int:
    return (bits + 7) // 8


def pack_draws(ids: np.ndarray, counts: np.ndarray, vocab: int, draws: int, low_bits: int) -> np.ndarray:
    """One sample's draws -> its byte string. ids, counts (P, k): each position's unique ids and how
    often each was drawn (count 0: a padding slot); every position's counts sum to `draws`."""
    ids, counts = np.asarray(ids, np.int64).reshape(-1, ids.shape[-1]), np.asarray(counts, np.int64).reshape(-1, ids.shape[-1])
    if (counts.sum(1) != draws).any():
        raise ValueError(f"every position's counts must sum to the {draws} draws")
    n_pos = ids.shape[0]
    keep = counts > 0
    key = np.where(keep, ids, vocab)  # padding sorts last
    order = np.argsort(key, axis=1, kind="stable")
    key, counts = np.take_along_axis(key, order, 1), np.take_along_axis(counts, order, 1)
    kept = key < vocab
    flat_ids, flat_c = key[kept], counts[kept]  # positions in order, ids ascending within each
    if len(flat_ids) and (np.diff(flat_ids)[np.diff(np.nonzero(kept)[0]) == 0] == 0).any():
        raise ValueError("an id is repeated within a position (give unique ids with their counts)")
    unique = kept.sum(1)
    pos, within, seg_start = _layout(unique, vocab, low_bits)
    buckets = ((vocab - 1) >> low_bits) + 1
    high = np.zeros(int(unique.sum()) + n_pos * buckets, bool)
    high[seg_start[pos] + (flat_ids >> low_bits) + within] = True
    low = ((flat_ids[:, None] >> np.arange(low_bits - 1, -1, -1)) & 1).astype(bool).reshape(-1)
    unary = np.ones(n_pos * draws, bool)
    unary[np.cumsum(flat_c) - 1] = False  # each id's terminating zero
    return np.concatenate([unique.astype(_count_dtype(draws)).view(np.uint8), np.packbits(high), np.packbits(low), np.packbits(unary)])


def _layout(unique: np.ndarray, vocab: int, low_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the flat id list of positions with `unique` ids each: each id's position, its index within
    the position, and each position's first bit in the high bitvector."""
    unique = unique.astype(np.int64)
    pos = np.repeat(np.arange(len(unique)), unique)
    first = np.cumsum(unique) - unique
    within = np.arange(int(unique.sum())) - first[pos]
    seg = unique + ((vocab - 1) >> low_bits) + 1
    return pos, within, np.cumsum(seg) - seg


def unpack_draws(blob: np.ndarray, positions: int, vocab: int, draws: int, low_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A byte string of `pack_draws` -> (ids (N,), counts (N,), unique (P,)): every position's ids in
    ascending order, positions in order."""
    return _unpack(blob, positions, vocab, draws, low_bits)[:3]


def _unpack(blob, positions, vocab, draws, low_bits):
    """`unpack_draws`, plus each id's position and index within it."""
    blob = np.asarray(blob, np.uint8)
    dt = _count_dtype(draws)
    o = positions * dt.itemsize
    unique = blob[:o].view(dt).astype(np.int64)
    n = int(unique.sum())
    pos, within, seg_start = _layout(unique, vocab, low_bits)
    high_len = n + positions * (((vocab - 1) >> low_bits) + 1)
    ones = np.flatnonzero(np.unpackbits(blob[o : o + _nbytes(high_len)], count=high_len))
    o += _nbytes(high_len)
    if len(ones) != n:
        raise ValueError(f"packed row is corrupt: {len(ones)} ids in the high bits, {n} promised")
    low = np.unpackbits(blob[o : o + _nbytes(n * low_bits)], count=n * low_bits).reshape(n, low_bits).astype(np.int64)
    o += _nbytes(n * low_bits)
    ids = ((ones - seg_start[pos] - within) << low_bits) | (low @ (1 << np.arange(low_bits - 1, -1, -1, dtype=np.int64)))
    ends = np.flatnonzero(np.unpackbits(blob[o : o + _nbytes(positions * draws)], count=positions * draws) == 0)
    if len(ends) != n:
        raise ValueError(f"packed row is corrupt: {len(ends)} counts, {n} ids")
    return ids, np.diff(ends, prepend=-1), unique, pos, within


def unpack_rows(blobs: list[np.ndarray], positions: int, vocab: int, draws: int, low_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Several samples' byte strings -> (ids, counts), each (B, P, k) with k the batch's most unique ids
    at one position; padding slots have count 0 and repeat the position's first id."""
    rows = [_unpack(b, positions, vocab, draws, low_bits) for b in blobs]
    k = max(int(row[2].max()) for row in rows)
    out_ids = np.empty((len(rows), positions, k), np.int64)
    out_c = np.zeros((len(rows), positions, k), np.int64)
    for r, (ids, counts, unique, pos, within) in enumerate(rows):
        out_ids[r] = ids[np.cumsum(unique) - unique][:, None]  # every slot: the position's first id
        out_ids[r, pos, within], out_c[r, pos, within] = ids, counts
    return out_ids, out_c


def packed_bytes(unique: np.ndarray, vocab: int, draws: int, low_bits: int) -> int:
    """Bytes of one sample's packed row with `unique` (P,) ids per position (for the size estimate)."""
    n, positions = int(np.sum(unique)), len(unique)
    high = n + positions * (((vocab - 1) >> low_bits) + 1)
    return positions * _count_dtype(draws).itemsize + _nbytes(high) + _nbytes(n * low_bits) + _nbytes(positions * draws)
