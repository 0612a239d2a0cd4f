"""Dataset containers and the split logic every built-in dataset shares."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.checks import check_classes, check_omit_range, stratified_split
from kdforge.errors import KDForgeError


UNLABELLED = -100  # label of a training sample nobody labelled (data.labelled); torch's cross-entropy ignore_index


class ArrayDataset(Dataset):
    """In-memory (x, y) pairs. x: (N, *input_shape) float32, y: (N,) int64."""

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor):
        # np.array copies: pandas may hand out read-only arrays, which torch warns about
        self.x = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        self.y = y.long() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y, dtype=np.int64))
        if len(self.x) != len(self.y):
            raise ValueError("x and y differ in length")
        # labels are fixed from here on (with_labels makes a new dataset): a fully labelled set says so per batch
        self.all_labelled = bool((self.y != UNLABELLED).all())

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def get_batch(self, idx: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Samples `idx` (ids, or a slice: views) as one batch {"x": (B, ...), "y": (B,)}: no per-sample loop;
        with "n_labelled" (their labelled count) when every sample of the dataset is labelled."""
        batch = {"x": self.x[idx], "y": self.y[idx]}
        if self.all_labelled:
            batch["n_labelled"] = len(batch["y"])
        return batch

    def subset(self, keep: np.ndarray) -> "ArrayDataset":
        return ArrayDataset(self.x[torch.as_tensor(keep)], self.y[torch.as_tensor(keep)])

    def with_labels(self, y: torch.Tensor) -> "ArrayDataset":
        return ArrayDataset(self.x, y)


@dataclass
class DataBundle:
    """train / val / test splits plus what a model builder needs to know."""

    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    calib: Dataset | None = None  # the validation split before data.omit_classes (for bias calibration); None: val


def split_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    omit_classes: list[int] = (),
    train_limit: int | None = None,
    class_names: list[str] | None = None,
    source: str = "the dataset",
) -> DataBundle:
    """Stratified, seeded train/val/test split.

    `omit_classes` removes those classes from train and val (the transfer set);
    test keeps every class, so a student can be tested on classes it never saw.
    `train_limit` keeps only the first N training samples (few-label experiments).
    Checked before returning: at least 2 classes to train on, every test class in train
    unless omitted (kdforge.data.checks).
    """
    if len(y) == 0:
        raise KDForgeError(f"data: {source} has no samples")
    num_classes = int(y.max()) + 1
    check_omit_range(omit_classes, num_classes)
    names = class_names or [str(c) for c in range(num_classes)]
    check_classes(y, np.arange(len(y)), np.arange(0), names, source=source)  # >= 2 classes before splitting
    idx = np.arange(len(y))
    rest, test = stratified_split(y, idx, test_fraction, seed, "train/val/test")
    train, val = stratified_split(y, rest, val_fraction / (1 - test_fraction), seed, "train/val/test")
    val_all = val
    if omit_classes:
        train = train[~np.isin(y[train], omit_classes)]
        val = val[~np.isin(y[val], omit_classes)]
    if train_limit is not None:
        train = train[:train_limit]
    check_classes(y, train, test, names, omit_classes=omit_classes, train_limit=train_limit, source=source)
    full = ArrayDataset(x, y)
    return DataBundle(
        train=full.subset(train),
        val=full.subset(val),
        test=full.subset(test),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
        class_names=names,
        calib=full.subset(val_all) if omit_classes else None,
    )
