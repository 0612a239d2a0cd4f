"""Rows of a JSONL, JSON-lines, Parquet file or a `datasets` folder (`save_to_disk`), read with the
Hugging Face `datasets` library (the `llm` extra): the chat and text-lm datasets read through here.

Errors name the recipe field and the file; a folder saved as a DatasetDict gives its "train" split
(and its "test" split, for the caller that wants one).
"""
from __future__ import annotations

from pathlib import Path

from kdforge.errors import KDForgeError

SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _datasets():
    try:
        import datasets
    except ImportError:
        raise KDForgeError("data: reading JSONL / Parquet / datasets folders needs the `datasets` library "
                           "(pip install 'kdforge[llm]')") from None
    datasets.disable_progress_bars()  # one bar per file would bury a one-line error
    datasets.logging.set_verbosity_error()
    return datasets


def is_table(path: str | Path) -> bool:
    """True for a path `read_rows` reads: a .jsonl / .json / .parquet file or a folder."""
    p = Path(path)
    return p.suffix in SUFFIXES or p.is_dir()


def read_splits(path: str | Path, field: str = "data.path") -> dict[str, list[dict]]:
    """{split: rows}: a file is one split, "train"; a DatasetDict folder gives all its splits."""
    ds = _datasets()
    p = Path(path)
    if not p.exists():
        raise KDForgeError(f"{field}: file not found: {p}")
    try:
        if p.is_dir():
            if not any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
                raise KDForgeError(f"{field}: {p} is a folder but not a `datasets` folder (saved with save_to_disk: no "
                                   "state.json or dataset_dict.json); give a .jsonl or .parquet file or such a folder")
            loaded = ds.load_from_disk(str(p))
            parts = dict(loaded) if isinstance(loaded, ds.DatasetDict) else {"train": loaded}
        elif p.suffix in SUFFIXES:
            parts = {"train": ds.load_dataset(SUFFIXES[p.suffix], data_files=str(p), split="train")}
        else:
            raise KDForgeError(f"{field}: {p} is not a .jsonl, .json or .parquet file or a `datasets` folder")
    except KDForgeError:
        raise
    except Exception as e:  # noqa: BLE001  (arrow / json / datasets raise many types for a malformed file)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise KDForgeError(f"{field}: cannot read {p}: {first}") from None
    if "train" not in parts:
        raise KDForgeError(f"{field}: the datasets folder {p} has splits {sorted(parts)} but no 'train' split")
    out = {name: split.to_list() for name, split in parts.items()}
    if not out["train"]:
        raise KDForgeError(f"{field}: {p} has no rows")
    return out


def read_rows(path: str | Path, field: str = "data.path") -> list[dict]:
    """The rows of a file or the "train" split of a datasets folder, as dicts."""
    return read_splits(path, field)["train"]


def text_column(rows: list[dict], column: str, path, field: str = "data.text_column") -> list[str]:
    """The strings of `column`; a missing column, or an empty or non-text cell, names its rows."""
    if column not in rows[0]:
        raise KDForgeError(f"{field}: {column!r} is not a column of {path}; columns: {', '.join(map(str, rows[0]))}")
    bad = [i for i, r in enumerate(rows) if not isinstance(r.get(column), str) or not r[column].strip()]
    if bad:
        shown = ", ".join(str(i + 1) for i in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        raise KDForgeError(f"{field}: {column!r} of {path} is empty or not text at data row{'s' if len(bad) > 1 else ''} {shown}")
    return [r[column] for r in rows]


__all__ = ["is_table", "read_rows", "read_splits", "text_column"]
