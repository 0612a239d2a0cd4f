"""Compression verbs: `quantize_`, `prune_`, `lowrank_` mutate a model in place
by a typed config; `export` writes deployable artifacts. Never imports training."""
from kdforge.compress.export import FORMATS, export
from kdforge.compress.lowrank import LowRank, lowrank_
from kdforge.compress.prune import Structured, Unstructured, prune_, sparsity
from kdforge.compress.quantize import Bf16, Fp16, Int8Dynamic, quantize_

__all__ = ["FORMATS", "Bf16", "Fp16", "Int8Dynamic", "LowRank", "Structured", "Unstructured",
           "export", "lowrank_", "prune_", "quantize_", "sparsity"]
