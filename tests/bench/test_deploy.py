"""The deployment summary recommends by measurement: fastest within the accuracy budget."""
import pytest

from kdforge.bench.deploy import Artifact, cpu_line, render, report_lines, summarize

REF = Artifact("torch fp32", {1: 8.0, 32: 100.0}, {1: 9.0, 32: 120.0}, 18 * 2**20, 0.950)
ARTS = [
    REF,
    Artifact("int8 fast but wrong", {1: 1.0, 32: 20.0}, {1: 1.1, 32: 22.0}, 5 * 2**20, 0.900),  # 5 points down
    Artifact("int8 good", {1: 2.0, 32: 45.0}, {1: 2.2, 32: 50.0}, 5 * 2**20, 0.947),           # 0.3 points down
    Artifact("opt fp32", {1: 1.5, 32: 80.0}, {1: 1.6, 32: 90.0}, 18 * 2**20, 0.950),
    Artifact("unmeasured accuracy", {1: 0.5, 32: 10.0}),
]


def test_recommends_fastest_within_accuracy_budget():
    s = summarize(ARTS, "torch fp32", max_drop=0.005)
    assert s["latency"] == "opt fp32"  # lowest p50 at batch 1 among eligible ones
    assert s["throughput"] == "int8 good"  # lowest p50 at batch 32 among eligible ones
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["int8 good"]["speedup"] == {1: 8.0 / 2.0, 32: 100.0 / 45.0}
    assert rows["int8 good"]["drop"] == pytest.approx(0.003)
    assert not rows["int8 fast but wrong"]["eligible"] and not rows["unmeasured accuracy"]["eligible"]


def test_a_looser_budget_changes_the_choice():
    assert summarize(ARTS, "torch fp32", max_drop=0.10)["throughput"] == "int8 fast but wrong"


def test_render_names_the_recommendations():
    text = "\n".join(render(summarize(ARTS, "torch fp32")))
    assert "Recommended for latency" in text and "**opt fp32**" in text and "**int8 good**" in text
    assert "| int8 good | 2.00 / 2.20 | 45.00 / 50.00 | 4.00× | 2.22× | 5.0 | 94.70 | +0.30 |" in text
    assert "×" in text and "unmeasured accuracy" in text


def test_unknown_reference_is_an_error():
    with pytest.raises(KeyError, match="reference 'nope'"):
        summarize(ARTS, "nope")


def test_report_lines_from_a_compress_summary():
    def m(p1, p32, acc):
        return {"latency_ms": {"1": {"p50": p1, "p95": p1}, "32": {"p50": p32, "p95": p32}}, "size_bytes": 1000,
                "accuracy": acc, "threads": 1}

    comp = {"baseline": {"student": m(4.0, 40.0, 0.9)},
            "stages": [{"name": "00-export", "kind": "export",
                        "artifacts": {"torch": m(4.0, 40.0, 0.9), "onnx-opt-int8": m(1.0, 10.0, 0.899)}}]}
    text = "\n".join(report_lines(comp))
    assert "## Deployment summary" in text and "**00-export onnx-opt-int8**, 4.00×" in text
    assert "intra_op_num_threads=1" in text and "CPU INT8 instruction sets" in text
    assert report_lines({}) == []


def test_cpu_line_lists_flags():
    line = cpu_line()
    assert line.startswith("CPU INT8 instruction sets:")
