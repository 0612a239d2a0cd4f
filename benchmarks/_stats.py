"""Paired comparisons for every benchmark's "Reading" lines: gain, harm or no difference measurable.

One test everywhere: the two-sided paired t-test over seeds (scipy), at ALPHA. Where several arms are
compared against one baseline, Holm's step-down correction (statsmodels' `multipletests(method="holm")`
is the same procedure; scipy has none, so it is written out here) gives the adjusted p-values that stand
beside the raw ones.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """arm − baseline over paired seeds."""

    mean: float  # mean difference (in the units given)
    std: float
    p: float  # raw two-sided paired t-test; nan with one seed or identical values
    n: int
    p_holm: float | None = None  # set by holm() when the comparison is one of a family

    @property
    def verdict(self) -> str:
        """'gain' / 'harm' when the (Holm-adjusted, if set) p is below ALPHA, else 'no difference measurable'."""
        p = self.p if self.p_holm is None else self.p_holm
        if math.isnan(p) or p >= ALPHA:
            return "no difference measurable"
        return "gain" if self.mean > 0 else "harm"

    def text(self, unit: str = "points", digits: int = 2) -> str:
        """'+Δ ± sd points (p = …, Holm …, n seeds): verdict', as one sentence's clause."""
        ps = f"p = {_p(self.p)}" + ("" if self.p_holm is None else f", Holm {_p(self.p_holm)}")
        return f"{self.mean:+.{digits}f} ± {self.std:.{digits}f} {unit} ({ps}, {self.n} seeds): {self.verdict}"

    def cells(self, digits: int = 2) -> str:
        """The same as table cells: 'Δ | p | Holm p | verdict' (Holm '—' outside a family)."""
        holm = "—" if self.p_holm is None else _p(self.p_holm)
        return f"{self.mean:+.{digits}f} ± {self.std:.{digits}f} | {_p(self.p)} | {holm} | {self.verdict}"


SPREAD_LIMIT = 0.20  # a timing whose interquartile range exceeds this share of its median is re-measured, then flagged


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of repeated measurements (interleaved rounds of one timing)."""

    median: float
    lo: float  # first quartile
    hi: float  # third quartile
    n: int

    @property
    def unstable(self) -> bool:
        return self.hi - self.lo > SPREAD_LIMIT * abs(self.median)

    def text(self, digits: int = 2, unit: str = "") -> str:
        """'median unit (IQR q1–q3)', then ' ⚠' when the spread exceeds SPREAD_LIMIT of the median."""
        flag = " ⚠" if self.unstable else ""
        return f"{self.median:.{digits}f}{unit} (IQR {self.lo:.{digits}f}–{self.hi:.{digits}f}){flag}"


def spread(xs: list[float]) -> Spread:
    if len(xs) < 2:
        return Spread(xs[0], xs[0], xs[0], len(xs))
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Spread(q2, q1, q3, len(xs))


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}"


def compare(arm: list[float], base: list[float], scale: float = 1.0) -> Comparison:
    """Paired difference arm − base (each list: one value per seed, same seed order), times `scale`."""
    if len(arm) != len(base):
        raise ValueError(f"paired comparison needs as many values per arm: {len(arm)} vs {len(base)}")
    diff = [(a - b) * scale for a, b in zip(arm, base)]
    sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
    if len(diff) < 2 or not any(diff):
        p = float("nan") if len(diff) < 2 else 1.0
    else:
        from scipy import stats

        p = float(stats.ttest_rel(arm, base).pvalue) if sd > 0 else 0.0
    return Comparison(statistics.mean(diff), sd, p, len(diff))


def holm(comparisons: dict[str, Comparison]) -> dict[str, Comparison]:
    """The same comparisons with Holm-adjusted p-values (the family: every entry; nan p-values stay out)."""
    ranked = sorted(((c.p, k) for k, c in comparisons.items() if not math.isnan(c.p)))
    m, running, out = len(ranked), 0.0, dict(comparisons)
    for i, (p, k) in enumerate(ranked):
        running = max(running, min(1.0, (m - i) * p))
        c = comparisons[k]
        out[k] = Comparison(c.mean, c.std, c.p, c.n, running)
    return out


__all__ = ["ALPHA", "SPREAD_LIMIT", "Comparison", "Spread", "compare", "holm", "spread"]
