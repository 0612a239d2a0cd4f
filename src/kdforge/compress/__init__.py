"""Compression verbs: `quantize_`, `prune_`, `lowrank_` mutate a model in place by a typed
config; `export` writes deployable artifacts by one. Each verb has its own handler table
(QUANTIZE, PRUNE, LOWRANK, EXPORT: a `Verb`, keyed by config type). Never imports training."""
from kdforge.compress.base import Verb
from kdforge.compress.export import EXPORT, FORMATS, Export, export
from kdforge.compress.lowrank import LOWRANK, LowRank, lowrank_
from kdforge.compress.prune import PRUNE, Structured, Unstructured, prune_, sparsity
from kdforge.compress.quantize import QUANTIZE, Bf16, Fp16, Int8Dynamic, quantize_

__all__ = ["EXPORT", "FORMATS", "LOWRANK", "PRUNE", "QUANTIZE", "Bf16", "Export", "Fp16", "Int8Dynamic", "LowRank",
           "Structured", "Unstructured", "Verb", "export", "lowrank_", "prune_", "quantize_", "sparsity"]
