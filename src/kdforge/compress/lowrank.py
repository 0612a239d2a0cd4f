"""lowrank_(model, config): replace Linear layers by two thinner ones via truncated SVD.

W (out, in) ≈ U_r S_r V_rᵀ, stored as Linear(in, r, bias=False) with weight
S_r^½ V_rᵀ (r, in) followed by Linear(r, out) with weight U_r S_r^½ (out, r)
and the original bias. A layer is factorized only when r·(in + out) < in·out,
i.e. when it really gets smaller.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdforge.compress.base import FilterFn, Verb, select, set_submodule
from kdforge.errors import KDForgeError

LOWRANK = Verb("lowrank_")  # its handler: LowRank


@dataclass(frozen=True)
class LowRank:
    """Give exactly one: `rank` (kept singular values per layer, capped at the layer's
    own rank) or `energy` in (0, 1] (smallest r whose Σσ² share reaches it)."""

    rank: int | None = None
    energy: float | None = None

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise KDForgeError("LowRank: give exactly one of rank or energy")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise KDForgeError(f"LowRank.rank: expected a positive integer, got {self.rank!r}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise KDForgeError(f"LowRank.energy: expected a value in (0, 1], got {self.energy!r}")


def lowrank_(model: nn.Module, config: LowRank, filter_fn: FilterFn | None = None) -> nn.Module:
    """Factorize the chosen Linear layers of `model` in place; returns it.

    The factorized layers are recorded in `model.kdforge_lowrank` as {name: rank}.
    """
    return LOWRANK(model, config, filter_fn=filter_fn)


def choose_rank(s: torch.Tensor, config: LowRank) -> int:
    """Rank for singular values `s` (descending, shape (k,))."""
    if config.rank is not None:
        return min(config.rank, len(s))
    share = (s.double() ** 2).cumsum(0) / (s.double() ** 2).sum().clamp_min(1e-30)
    return int(torch.searchsorted(share, torch.tensor(config.energy, dtype=share.dtype) - 1e-12).item()) + 1


@LOWRANK.register(LowRank)
def _lowrank(model: nn.Module, config: LowRank, filter_fn: FilterFn | None) -> nn.Module:
    chosen = select(model, (nn.Linear,), filter_fn)
    if not chosen:
        raise KDForgeError(f"lowrank_: {type(model).__name__} has no Linear layer to factorize")
    done: dict[str, int] = {}
    for name, lin in chosen:
        w = lin.weight.detach().float()  # (out, in)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, k), (k,), (k, in)
        r = choose_rank(s, config)
        if r * (lin.in_features + lin.out_features) >= lin.in_features * lin.out_features:
            continue  # would not get smaller
        root = s[:r].sqrt()
        first = nn.Linear(lin.in_features, r, bias=False)
        second = nn.Linear(r, lin.out_features, bias=lin.bias is not None)
        with torch.no_grad():
            first.weight.copy_(root[:, None] * vh[:r])  # (r, in)
            second.weight.copy_(u[:, :r] * root[None, :])  # (out, r)
            if lin.bias is not None:
                second.bias.copy_(lin.bias)
        new = nn.Sequential(first, second).to(lin.weight.dtype).to(lin.weight.device)
        set_submodule(model, name, new)
        done[name] = r
    model.kdforge_lowrank = done
    return model
