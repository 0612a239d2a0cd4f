"""Datasets: built-in (digits, mnist5k), CSV files, and any torch Dataset through the API."""
from kdforge.data import builtin as _builtin  # noqa: F401  (registers datasets)
from kdforge.data import chat as _chat  # noqa: F401  (registers chat)
from kdforge.data import text as _text  # noqa: F401  (registers bbc-news, text, text-lm)
from kdforge.data.base import ArrayDataset, DataBundle, split_arrays
from kdforge.data.builtin import load_data

__all__ = ["ArrayDataset", "DataBundle", "load_data", "split_arrays"]
