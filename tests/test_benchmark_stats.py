"""benchmarks/_stats.py: the paired test and Holm's correction behind every 'gain / harm / none' line."""
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _stats import Comparison, compare, holm  # noqa: E402


def test_compare_is_the_paired_t_test():
    a, b = [0.81, 0.84, 0.80, 0.83, 0.82], [0.80, 0.81, 0.80, 0.79, 0.80]
    c = compare(a, b, scale=100)
    assert c.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c.mean == pytest.approx(100 * (sum(a) - sum(b)) / 5)
    assert c.verdict == "gain" and c.n == 5


def test_harm_is_named_harm_and_noise_is_none():
    base = [0.80, 0.81, 0.82, 0.83, 0.84]
    assert compare([x - 0.03 + 0.001 * i for i, x in enumerate(base)], base).verdict == "harm"
    assert compare([0.81, 0.80, 0.83, 0.82, 0.84], base).verdict == "no difference measurable"
    assert math.isnan(compare([0.9], [0.8]).p)  # one seed: nothing measurable
    assert compare([0.9], [0.8]).verdict == "no difference measurable"


def test_holm_matches_the_step_down_procedure():
    ps = {"a": 0.01, "b": 0.04, "c": 0.03}
    family = holm({k: Comparison(1.0, 0.1, p, 5) for k, p in ps.items()})
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert family["a"].p_holm == pytest.approx(0.03)
    assert family["c"].p_holm == pytest.approx(0.06)
    assert family["b"].p_holm == pytest.approx(0.06)
    assert family["a"].verdict == "gain" and family["b"].verdict == "no difference measurable"
    assert "Holm 0.03" in family["a"].text()
