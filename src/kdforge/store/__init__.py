"""The teacher-output store: the teacher runs once, training reads its outputs from disk.

  read.py         TeacherStore (rows by sample id from memory-mapped shards), CachedTeacher
  write.py        write_store: run a teacher once over a dataset, keep sparse or dense outputs
  packing.py      lossless Elias-Fano packing of a random-sampled store's draws
  fingerprint.py  what a store was written from (hashes of teacher, data, tokenizer), cached by file

Below models in the layer map: it imports the teacher wrapper, losses and errors, never training
code, model loaders or a recipe; a recipe's store (preflight, open_or_write, cache-teacher) is the
workflow's: kdforge.workflows.teacher_store.
"""
from kdforge.store.fingerprint import (FINGERPRINT_FIELDS, cached_hash, compare, file_identity, fingerprint, hash_architecture,
                                       hash_dataset, hash_module, hash_tokenizer)
from kdforge.store.read import CachedTeacher, TeacherStore
from kdforge.store.write import SAMPLINGS, write_store

__all__ = ["FINGERPRINT_FIELDS", "SAMPLINGS", "CachedTeacher", "TeacherStore", "cached_hash", "compare", "file_identity",
           "fingerprint", "hash_architecture", "hash_dataset", "hash_module", "hash_tokenizer", "write_store"]
