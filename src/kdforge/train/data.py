"""The loop's data pipeline: a `torch.utils.data.DataLoader` driven by the seeded,
resumable batch order of `batching.epoch_batches`.

The batch sampler yields one epoch's index lists (from a given batch on, so a resumed
run skips exactly what it already did). A whole batch is fetched at once: datasets
with `get_batch(idx)` (in-memory tensors: one slice per batch) return the batch dict
directly; others are read sample by sample and collated. Workers (`num_workers`) only
fetch, so the order (and a resumed run) does not depend on them; batches are pinned
for an asynchronous copy when training on a GPU.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from kdforge.data.base import UNLABELLED
from kdforge.train.batching import collate_indexed, epoch_order


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Yields one epoch's batches (`batching.epoch_order` cut by `batch_size`) from `start` on, as index
    tensors (the order `epoch_batches` lists; computed once per `set_epoch`)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self._order = epoch_order(self.n, self.seed, epoch, self.rank, self.world)

    def batches(self) -> list[torch.Tensor]:
        return list(self._order.split(self.batch_size))

    def __iter__(self):
        return iter(self.batches()[self.start :])

    def __len__(self) -> int:
        return -(-len(self._order) // self.batch_size) - self.start


def fetch_batch(dataset: Dataset, idx) -> dict[str, Any]:
    """One batch dict {"x", "y", ..., "idx"} for sample ids `idx` (list, tensor, or a `range`), sliced at once
    when the dataset can; a contiguous range of a dataset that slices is a view, not a gathered copy."""
    if isinstance(idx, range) and idx.step == 1 and hasattr(dataset, "get_batch"):
        batch = dataset.get_batch(slice(idx.start, idx.stop))
        batch["idx"] = torch.arange(idx.start, idx.stop)
        return _count_labels(batch)
    idx = torch.as_tensor(idx)
    base, ids = dataset, idx
    while isinstance(base, Subset):  # map through subsets down to a dataset that may slice
        ids = torch.as_tensor(base.indices)[ids]
        base = base.dataset
    get_batch = getattr(base, "get_batch", None)
    batch = collate_indexed([(i, dataset[i]) for i in idx.tolist()]) if get_batch is None else get_batch(ids)
    batch["idx"] = idx
    return _count_labels(batch)


def _count_labels(batch: dict[str, Any]) -> dict[str, Any]:
    """`n_labelled`: the batch's labelled samples (class labels other than UNLABELLED), counted here on the
    host where the labels are, so the loss can use torch's mean without a device-side count."""
    if "n_labelled" in batch:  # the dataset knew (every sample labelled)
        return batch
    y = batch.get("y")
    if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point() and y.device.type == "cpu":
        batch["n_labelled"] = int(y.ne(UNLABELLED).sum())
    return batch


class _BatchView(Dataset):
    """DataLoader sees a dataset whose `__getitems__(ids)` is one whole batch."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        return fetch_batch(self.dataset, idx)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def make_loader(dataset: Dataset, sampler: EpochBatchSampler, *, num_workers: int = 0,
                device: torch.device | None = None):
    """A DataLoader over `sampler`'s batches when workers fetch or batches are pinned for a GPU; with
    neither, the same batches from a plain generator (the DataLoader machinery would only add time)."""
    pin = device is not None and device.type == "cuda"
    if num_workers == 0 and not pin:
        return _Batches(dataset, sampler)
    return DataLoader(_BatchView(dataset), batch_sampler=sampler, collate_fn=_as_is, num_workers=num_workers,
                      pin_memory=pin, persistent_workers=False,
                      generator=torch.Generator())  # its own: starting an epoch must not draw from the global RNG


class _Batches:
    def __init__(self, dataset: Dataset, sampler: EpochBatchSampler):
        self.dataset, self.sampler = dataset, sampler

    def __iter__(self):
        return (fetch_batch(self.dataset, idx) for idx in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to `device`; non-blocking (the loader pinned them) when it is a GPU."""
    if device.type == "cpu":  # the loop's batches come from the CPU-side pipeline: nothing to move
        return batch
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
