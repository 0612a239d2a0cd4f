"""Validation of data files and splits, done before anything is trained or written.

Every problem is a one-line KDForgeError naming the recipe field, the file and,
for bad values, the column and the first rows (1-based data rows: row 1 is the
first line after a CSV header, or the first line of a JSONL file).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from kdforge.errors import KDForgeError

SHOWN = 3  # rows / columns named in a message


def rows_text(rows: np.ndarray) -> str:
    """0-based positions -> 'data rows 2, 5, 9 (+4 more)'."""
    rows = np.asarray(rows)
    shown = ", ".join(str(int(r) + 1) for r in rows[:SHOWN])
    more = f" (+{len(rows) - SHOWN} more)" if len(rows) > SHOWN else ""
    return f"data row{'s' if len(rows) > 1 else ''} {shown}{more}"


def decode_utf8(data: bytes, label: str, hint: str, nul_hint: str | None = None) -> str:
    """A file's bytes as text (a UTF-8 BOM dropped); not UTF-8, or NUL bytes (a binary file), is a one-line
    KDForgeError starting with `label` and ending with the hint. Shared by data files and recipe files."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KDForgeError(f"{label} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); {hint}") from None
    if "\x00" in text:
        raise KDForgeError(f"{label} contains NUL bytes (a binary file?); {nul_hint or hint}")
    return text


def read_text(path: Path, field: str = "data.path") -> str:
    """A data file's text: it must exist, be UTF-8 and hold more than whitespace."""
    path = Path(path)
    if path.is_dir():
        raise KDForgeError(f"{field}: {path} is a directory; give a file")
    if not path.is_file():
        raise KDForgeError(f"{field}: file not found: {path}")
    text = decode_utf8(path.read_bytes(), f"{field}: {path}", "save it as UTF-8", "expected a text file")
    if not text.strip():
        raise KDForgeError(f"{field}: {path} is empty")
    return text


def read_frame(path: Path, field: str = "data.path"):
    """A CSV (or .jsonl / .json lines) file as a DataFrame with at least one row."""
    import pandas as pd

    path = Path(path)
    text = read_text(path, field)
    try:
        if path.suffix in (".jsonl", ".json"):
            frame = pd.read_json(io.StringIO(text), lines=True)
        else:
            frame = pd.read_csv(io.StringIO(text))
    except Exception as e:  # pandas raises many types for malformed files
        raise KDForgeError(f"{field}: cannot parse {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if frame.empty:
        raise KDForgeError(f"{field}: {path} has a header but no rows" if len(frame.columns) else f"{field}: {path} has no rows")
    return frame


def require_column(frame, column: str, field: str, path: Path) -> None:
    if column not in frame.columns:
        raise KDForgeError(f"{field}: {column!r} is not a column of {path}; columns: {', '.join(map(str, frame.columns))}")


def check_finite(frame, path: Path) -> np.ndarray:
    """Numeric feature columns -> (N, F) float32; missing, nan or inf values name their columns and rows."""
    x = frame.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        cols = np.flatnonzero(bad.any(0))
        parts = [f"column {str(frame.columns[c])!r} at {rows_text(np.flatnonzero(bad[:, c]))}" for c in cols[:SHOWN]]
        more = f" (+{len(cols) - SHOWN} more columns)" if len(cols) > SHOWN else ""
        raise KDForgeError(f"data.path: {path} has missing or non-finite values (nan/inf): {'; '.join(parts)}{more}; "
                           "fix or drop those rows")
    too_big = np.abs(x) > np.finfo(np.float32).max
    if too_big.any():
        c = int(np.flatnonzero(too_big.any(0))[0])
        raise KDForgeError(f"data.path: {path} column {str(frame.columns[c])!r} overflows float32 at "
                           f"{rows_text(np.flatnonzero(too_big[:, c]))}")
    return x.astype(np.float32)


def check_present(values, field: str, column: str, path: Path) -> list[str]:
    """A text column -> its strings; empty or missing cells are named."""
    missing = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        raise KDForgeError(f"{field}: {column!r} of {path} is empty at {rows_text(missing)}")
    return values.astype(str).tolist()


def label_strings(labels, field: str, column: str, path: Path) -> list[str]:
    """A label column -> class names as strings. Labels are integers or names; missing
    labels, fractional numbers (a regression target?) and lists / mappings are refused."""
    import pandas as pd

    where = f"{field}: {column!r} of {path}"
    missing = np.flatnonzero(labels.isna().to_numpy() | (labels.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        raise KDForgeError(f"{where} has no label at {rows_text(missing)}")
    nested = np.flatnonzero([isinstance(v, (list, dict, tuple)) for v in labels])
    if len(nested):
        raise KDForgeError(f"{where} holds lists or mappings at {rows_text(nested)}; a label is a class name or integer")
    if pd.api.types.is_bool_dtype(labels):
        return labels.astype(str).tolist()
    if pd.api.types.is_float_dtype(labels):
        v = labels.to_numpy()
        frac = np.flatnonzero(~np.isfinite(v) | (v != np.round(v)))
        if len(frac):
            raise KDForgeError(f"{where} holds fractional or infinite numbers (e.g. {labels.iloc[frac[0]].item()!r} at {rows_text(frac)}); "
                               "a label is a class (an integer or a name), not a regression target")
        labels = labels.astype(np.int64)
    return labels.astype(str).tolist()


def class_names(strings: list[str]) -> list[str]:
    """Sorted class names: numerically when every name is an integer (2 before 10), else as text."""
    names = set(strings)
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def check_classes(y: np.ndarray, train: np.ndarray, test: np.ndarray, names: list[str], *,
                  omit_classes=(), train_limit: int | None = None, source: str = "the dataset") -> None:
    """After the split: at least 2 classes to train on, and every test class seen in training
    unless the recipe omits it on purpose (data.omit_classes)."""
    everywhere = np.unique(y)
    if len(everywhere) == 0:
        raise KDForgeError(f"data: {source} has no samples")
    if len(everywhere) == 1:
        raise KDForgeError(f"data: {source} has a single class ({names[int(everywhere[0])]!r}); "
                           "a classifier needs samples of at least 2 classes")
    seen = np.unique(y[train])
    if len(seen) < 2:
        if omit_classes:
            raise KDForgeError(f"data.omit_classes: {list(omit_classes)} leaves {len(seen)} class(es) to train on; "
                               "at least 2 must remain")
        if train_limit is not None:
            raise KDForgeError(f"data.train_limit: {train_limit} training samples hold {len(seen)} class(es); "
                               "at least 2 are needed, raise train_limit")
        raise KDForgeError(f"data: the training split of {source} holds {len(seen)} class(es); at least 2 are needed")
    unseen = sorted(set(np.unique(y[test]).tolist()) - set(seen.tolist()) - set(omit_classes))
    if unseen:
        shown = [names[c] for c in unseen[:5]]
        cause = f"data.train_limit: {train_limit} training samples" if train_limit is not None else f"data: the training split of {source}"
        raise KDForgeError(f"{cause} leave{'s' if train_limit is None else ''} test classes {shown} without a training sample; "
                           f"{'raise train_limit or ' if train_limit is not None else ''}list them in data.omit_classes if that is intended")


def check_omit_range(omit_classes, num_classes: int) -> None:
    bad = [c for c in omit_classes if not 0 <= c < num_classes]
    if bad:
        raise KDForgeError(f"data.omit_classes: {bad} out of range; classes are 0..{num_classes - 1}")


def stratified_split(y: np.ndarray, idx: np.ndarray, test_size: float, seed: int, what: str):
    """sklearn's stratified split; too few samples of a class becomes a one-line error."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(idx, test_size=test_size, stratify=y[idx], random_state=seed)
    except ValueError as e:
        raise KDForgeError(f"data: cannot split {len(idx)} samples into stratified {what}: {str(e).splitlines()[0]}") from None
