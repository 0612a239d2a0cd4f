"""Deterministic, resumable batch order and the batch dict every method receives."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """One rank's sample ids for one epoch: a permutation seeded by (seed, epoch), so a resumed run
    can skip exactly the batches it already did; rank r takes every world-th sample (the n mod world
    samples left over this epoch are skipped, a different few each epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    return order[: n - n % world][rank::world]  # equal shares, so every rank steps (and all-reduces) in lockstep


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """`epoch_order` cut into batches of `batch_size`, as lists of ids."""
    order = epoch_order(n, seed, epoch, rank, world).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate_indexed(items: list[tuple[int, Any]]) -> dict[str, Any]:
    """[(idx, sample)] -> {"x", "y", "idx"} for (x, y) samples, or the sample's own keys + "idx" for dicts."""
    idx = torch.tensor([i for i, _ in items])
    samples = [s for _, s in items]
    if isinstance(samples[0], dict):
        batch = default_collate(samples)
    else:
        x, y = default_collate(samples)[:2]
        batch = {"x": x, "y": y}
    batch["idx"] = idx
    return batch


def probe_batch(dataset, n: int = 8) -> dict[str, Any]:
    """The first n samples as one batch: methods run it once at construction to learn shapes."""
    return collate_indexed([(i, dataset[i]) for i in range(min(n, len(dataset)))])

