"""The text transfer set of a recipe, before any training: `data.augment` adds teacher-labelled
variants of the training texts (never of val/test), then `student.trim_vocab` trims the
student's word embeddings to the tokens of that augmented corpus. Both run before the run
directory opens, so their errors leave nothing half-written."""
from __future__ import annotations

import dataclasses

from torch import nn

from kdforge.data.augment import augment
from kdforge.errors import KDForgeError
from kdforge.models.hf import hf_inner, load_tokenizer
from kdforge.models.vocab import trim_student


def prepare_transfer_set(recipe, data, student: nn.Module, teacher: nn.Module | None):
    """-> (data with the augmented training split, {"augment": {...}, "trim_vocab": {...}} for metrics.json)."""
    info: dict = {}
    needs_tokens = recipe.data.augment is not None or recipe.student.trim_vocab
    tokenizer = load_tokenizer(recipe.data.tokenizer, field="data.tokenizer") if needs_tokens and recipe.data.tokenizer else None
    if recipe.data.augment is not None:
        inner = hf_inner(teacher) if teacher is not None else None
        if inner is None or tokenizer is None:
            raise KDForgeError("data.augment: needs a Hugging Face text teacher (name: hf) and data.tokenizer "
                               "(the variants use the teacher's word embeddings and are labelled by the teacher)")
        before = len(data.train)
        train = augment(data.train, recipe.data.augment, recipe.seed, embeddings=inner.get_input_embeddings().weight,
                        tokenizer=tokenizer, exclude=[data.val.x, data.test.x])
        data = dataclasses.replace(data, train=train)
        info["augment"] = {"train_texts": before, "variants": len(train) - before}
    if recipe.student.trim_vocab:
        info["trim_vocab"] = trim_student(student, recipe.student.vocab_min_count or 1, data.train.x, tokenizer)
    return data, info


__all__ = ["prepare_transfer_set"]
