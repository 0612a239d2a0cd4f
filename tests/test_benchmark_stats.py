"""benchmarks/_stats.py: the paired test and Holm's correction behind every 'gain / harm / none' line."""
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _stats import SPREAD_LIMIT, Comparison, compare, holm, spread  # noqa: E402


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


def test_spread_is_median_and_quartiles_and_flags_a_bimodal_timing():
    steady = spread([1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97])
    assert steady.median == pytest.approx(1.00) and not steady.unstable
    assert steady.lo < steady.median < steady.hi
    bimodal = spread([1.3, 1.4, 5.1, 1.35, 5.0, 4.9, 1.32])  # two states of the machine, as the MLP-1024 baseline had
    assert bimodal.hi - bimodal.lo > SPREAD_LIMIT * bimodal.median and bimodal.unstable
    assert bimodal.text(2, " ms").endswith("⚠") and "⚠" not in steady.text()


def test_cells_hold_the_same_numbers_as_the_sentence():
    c = holm({"a": compare([0.9, 0.92, 0.91], [0.8, 0.81, 0.8], 100), "b": compare([0.8, 0.81, 0.82], [0.8, 0.81, 0.8], 100)})["a"]
    delta, p, p_holm, verdict = (x.strip() for x in c.cells().split("|"))
    assert c.text().startswith(delta) and f"p = {p}, Holm {p_holm}" in c.text() and c.text().endswith(verdict)
