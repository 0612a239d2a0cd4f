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


# an f-string field that lost its `f`: `{args.rounds}`, `{x:.2f}`, `{row['acc']}`, `{a - b}`. YAML or JSON in the
# text (`{kind: prune, amount: 0.5}`, `{"temperature": 1.0}`) has a space after its colon or a quote first: not a field.
PLACEHOLDER = re.compile(r"\{[A-Za-z_][\w.]*(?:\([^{}]*\)|\[[^{}]*\])*(?:\s*[-+*/]\s*[\w.()]+)*(?:![rsa])?(?::[^{}\s]*)?\}")
SECTION = re.compile(r"<!-- section:(\S+) -->\n(.*?)<!-- /section:\1 -->", re.S)


def section_problems(results: str) -> list[str]:
    """What a reader of RESULTS.md must never see: a section without a heading first, an unfilled placeholder."""
    problems = []
    for name, body in SECTION.findall(results):
        if not body.lstrip().startswith("#"):
            problems.append(f"section {name}: no heading (its first line is {body.strip().splitlines()[0][:60]!r})")
        problems += [f"section {name}: unfilled placeholder {m}" for m in PLACEHOLDER.findall(body)]
    return problems


def test_checker_catches_a_planted_placeholder_and_a_missing_heading():
    good = ("<!-- section:ok -->\n## Fine (`benchmarks/ok.py`)\n\nstages `{kind: prune, amount: 0.5}`, "
            'chosen {"temperature": 1.05}\n<!-- /section:ok -->\n')
    assert section_problems(good) == []
    bad = good + ("<!-- section:loop -->\nRatios over {args.rounds} rounds × {args.epochs} epochs, "
                  "{ratio:.3f}×, {row['acc']}, {time.time() - t0:.0f} s\n<!-- /section:loop -->\n")
    found = section_problems(bad)
    assert found[0].startswith("section loop: no heading")
    assert [f.split("placeholder ", 1)[1] for f in found[1:]] == [
        "{args.rounds}", "{args.epochs}", "{ratio:.3f}", "{row['acc']}", "{time.time() - t0:.0f}"]
    assert all(f.startswith("section loop") for f in found)


def test_every_results_section_has_a_heading_and_no_placeholder():
    results = (BENCHMARKS / "RESULTS.md").read_text()
    assert SECTION.findall(results), "RESULTS.md has no sections"
    problems = section_problems(results)
    assert not problems, "RESULTS.md: " + "; ".join(problems)
