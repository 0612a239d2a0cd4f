"""Distillation losses: plain functions of tensors (no hooks, no config, no I/O), and `KINDS`, the one
registry of the loss kinds a recipe names and the outputs each works on (`kinds.py`)."""
from kdforge.losses.feature import (
    Projection,
    attention_distribution_kl,
    attention_map,
    attention_transfer,
    cosine_loss,
    flatten_features,
    hint_loss,
)
from kdforge.losses.kinds import KINDS
from kdforge.losses.logit import dist_loss, dkd, standardize, standardized_kl
from kdforge.losses.relation import rkd_angle, rkd_distance, similarity_matrix_loss, similarity_preserving
from kdforge.losses.response import distillation_loss, jsd, reverse_kl, soft_target_kl, tvd

__all__ = [
    "KINDS",
    "Projection",
    "attention_distribution_kl",
    "attention_map",
    "attention_transfer",
    "cosine_loss",
    "distillation_loss",
    "dist_loss",
    "dkd",
    "flatten_features",
    "hint_loss",
    "jsd",
    "reverse_kl",
    "rkd_angle",
    "rkd_distance",
    "similarity_matrix_loss",
    "similarity_preserving",
    "soft_target_kl",
    "standardize",
    "standardized_kl",
    "tvd",
]
