"""Recipe sections of single methods and commands with no model configs inside: born_again:, data_free:,
search: (re-exported by kdforge.config, where the rest of the schema lives)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from kdforge.config_terms import Strict


class BornAgainConfig(Strict):
    """method: born_again (Furlanello et al. 2018): generation k+1, same model, learns from generation k."""

    generations: int = Field(3, ge=2, description="Generations; generation 1 learns from the labels alone.")


class DataFreeConfig(Strict):
    """method: data_free (DAFL, Chen et al. 2019; DeepInversion, Yin et al. 2020): a generator replaces the training data."""

    latent_dim: int = Field(64, ge=1, description="Generator noise size.")
    batches_per_epoch: int = Field(50, ge=1, description="Generated batches per epoch (the loop iterates over noise seeds).")
    generator_hidden: int = Field(256, ge=8, description="Generator width.")
    onehot_weight: float = Field(1.0, ge=0, description="DAFL one-hot loss: teacher confident on generated inputs.")
    entropy_weight: float = Field(5.0, ge=0, description="DAFL information-entropy loss: balanced classes over a batch.")
    bn_weight: float = Field(1.0, ge=0, description="DeepInversion BN-statistics matching (teachers with BatchNorm).")
    adversarial_weight: float = Field(0.0, ge=0, description="Generator also seeks inputs where student and teacher disagree (DFAD).")
    temperature: float = Field(1.0, gt=0, description="Temperature of the student's KL to the teacher.")


class SearchConfig(Strict):
    """`kdforge search`: Optuna over the first kd term and the other terms' weights, scored on a held-out part of train."""

    temperature: list[float] = Field([1.0, 10.0], description="[low, high] of the kd temperature (log scale).")
    alpha: list[float] = Field([0.1, 1.0], description="[low, high] of the kd alpha.")
    weight: list[float] | None = Field([0.01, 1.0], description="[low, high] of each non-kd term's weight (log scale); null: fixed.")
    widths: list[Annotated[int, Field(gt=0)]] | None = Field(None, description="Student widths to try (first hidden layer / channel count); null: fixed.")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5, description="Part of the training split held out for scoring trials.")
    epochs: int | None = Field(None, ge=1, description="Student epochs per trial; null: distill.epochs.")
    top_k: int = Field(3, ge=1, description="Best trials re-run over `seeds` seeds (the default config always is).")
    seeds: int = Field(3, ge=1, description="Seeds per re-run.")

    @model_validator(mode="after")
    def _ranges(self) -> "SearchConfig":
        for name in ("temperature", "alpha", "weight"):
            r = getattr(self, name)
            if r is None:
                continue
            if len(r) != 2 or not r[0] < r[1]:
                raise ValueError(f"{name}: expected a range [low, high] with low < high, got {r} (empty or inverted)")
            if name != "alpha" and r[0] <= 0:
                raise ValueError(f"{name}: a log-scale range must be positive, got {r}")
        if not (0 <= self.alpha[0] and self.alpha[1] <= 1):
            raise ValueError(f"alpha: range must lie in [0, 1], got {self.alpha}")
        if self.widths is not None and len(self.widths) == 0:
            raise ValueError("widths: empty list; give at least one width or null")
        return self


__all__ = ["BornAgainConfig", "DataFreeConfig", "SearchConfig"]
