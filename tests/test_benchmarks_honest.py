"""Every figure in benchmarks/RESULTS.md is measured by the run that writes it: no benchmark
script carries a typed-in timing or accuracy in its text (issue 15: compress.py once wrote
"fp32 8.5 ms, torch.ao INT8 1.7 ms, torchao INT8 13.2 ms" from a literal)."""
import ast
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# what a measurement looks like in prose: a duration ("8.5 ms", "71.7 s") or a decimal percentage,
# speedup or point change ("93.4 %", "2.3×", "+1.5 points"). Integer thresholds and settings
# ("≥ 97%", "4×", "50% pruning", "T=4", "weight 0.05") are fine, and so is a bound after a comparison
# ("≤ 0.5 points drop"): a target is stated, not measured.
FIGURE = re.compile(
    r"(?<![\w.])("
    r"\d+(?:\.\d+)?\s*(?:ms|µs|us)(?!\w)"
    r"|\d+(?:\.\d+)?\s+(?:s|sec|seconds|min|minutes)(?!\w)"
    r"|\d+\.\d+\s*(?:%|×|x|points?|pts)(?!\w)"
    r")"
)

COMPARISONS = ("≤", "≥", "<", ">", "<=", ">=")


def typed_figures(source: str) -> list[tuple[int, str]]:
    """(line, figure) for every measurement-looking figure in a string literal (f-string text included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m.group(1)) for m in FIGURE.finditer(node.value)
                      if not node.value[: m.start()].rstrip().endswith(COMPARISONS)]
    return found


def test_detector_catches_the_typed_torchao_sentence():
    old = ('notes = ["... p50: fp32 8.5 ms, torch.ao INT8 1.7 ms, torchao INT8 13.2 ms "\n'
           '         f"(its CPU path falls back) {x:.2f}"]')
    assert [f for _, f in typed_figures(old)] == ["8.5 ms", "1.7 ms", "13.2 ms"]
    assert [f for _, f in typed_figures('s = f"accuracy 93.12 %, speedup 2.4×, took 71.7 s"')] == ["93.12 %", "2.4×", "71.7 s"]


def test_detector_lets_settings_and_formatted_values_through():
    src = ('s = f"Target ≥ 97% retention at ≤ 0.5 points drop, at ≥ 4× speedup; 50% pruning; T=4, α=0.8, lr 5e-3; '
           'hint weight 0.05; p50 {ms:.3f} ms; {delay:.2f} s; accuracy on test 3s; seed 0"')
    assert typed_figures(src) == []


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_no_typed_figures_in_benchmark_sources(script):
    found = typed_figures(script.read_text())
    assert not found, f"{script.name}: typed figures {found} would reach RESULTS.md unmeasured; compute them in the run"
