"""The recipe's compress: stages end to end through the CLI: artifacts per stage,
re-runs skip finished stages, a failed gate exits 3, bad stages exit 2."""
import json
from pathlib import Path

import pytest
import yaml

from kdforge.cli import main

STAGES = [
    {"kind": "prune", "method": "structured", "amount": 0.5},
    {"kind": "recover", "epochs": 2},
    {"kind": "quantize", "method": "int8_dynamic", "max_accuracy_drop": 0.5, "against": "teacher"},
    {"kind": "export", "formats": ["onnx", "onnx-int8"]},
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("stages")
    recipe = {
        "run_dir": str(tmp / "run"),
        "data": {"name": "digits", "train_limit": 400},
        "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 3}},
        "student": {"name": "mlp", "hidden": [32]},
        "distill": {"epochs": 3},
        "compress": STAGES,
    }
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp / "r.yaml"), "--quiet"]) == 0
    return tmp / "run"


def test_each_stage_saved_and_measured(run_dir):
    root = run_dir / "compress"
    names = ["00-prune", "01-recover", "02-quantize", "03-export"]
    for name in names:
        assert (root / name / "stage.json").exists(), name
    summary = json.loads((root / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == names
    prune = summary["stages"][0]["metrics"]
    assert prune["params"] < summary["baseline"]["student"]["params"]
    assert (root / "01-recover/metrics.jsonl").exists() and (root / "01-recover/model.safetensors").exists()
    export = summary["stages"][3]
    assert export["manifest"]["onnx_max_abs_diff"] <= 1e-4
    assert {"onnx", "onnx-int8"} <= set(export["artifacts"])
    assert summary["stages"][2]["gate"]["passed"]
    assert "compress" in json.loads((run_dir / "metrics.json").read_text())
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "03-export onnx-int8" in html


def test_rerun_skips_finished_stages(run_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "compress").glob("*/stage.json")}
    assert main(["compress", str(run_dir), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_failed_gate_exits_3_and_keeps_last_passing(run_dir, capsys):
    code = main(["compress", str(run_dir), "--quiet", "--stage", "{kind: lowrank, rank: 1, max_accuracy_drop: 0.0}"])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert len(err.splitlines()) == 1 and "00-lowrank" in err and "max_accuracy_drop 0.0" in err
    assert "last passing artifact: student" in err
    assert (run_dir / "compress/00-lowrank/gate_failed.json").exists()
    assert not (run_dir / "compress/00-lowrank/stage.json").exists()


@pytest.mark.parametrize("stage,needle", [
    ("{kind: prune, amount: 1.5}", "field 0: Structured.amount: pruning amount must be strictly between 0 and 1, got 1.5"),
    ("{kind: prune, amount: 0}", "field 0: Structured.amount: pruning amount must be strictly between 0 and 1, got 0.0"),
    ("{kind: lowrank, rank: 2, energy: 0.5}", "field 0: LowRank: give exactly one of rank or energy"),
    ("{kind: prune, method: unstructured, amount: 1}", "field 0: Unstructured.amount: pruning amount must be"),
    ("{kind: export, formats: [tflite]}", "formats.0: got 'tflite'"),
    ("{kind: zip}", "'zip'"),
    ("not a mapping", "expected a YAML mapping"),
])
def test_bad_stage_is_one_line_exit_2(run_dir, capsys, stage, needle):
    assert main(["compress", str(run_dir), "--stage", stage]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["compress", str(tmp_path)]) == 2
    assert "not a kdforge run directory" in capsys.readouterr().err


def test_recipe_gate_failure_in_run_exits_3(run_dir, capsys):
    # the INT8 student can never match the teacher exactly: a zero-drop gate against it must stop the run
    code = main(["run", "--resume", str(run_dir), "--quiet",
                 "--set", "compress.2.max_accuracy_drop=0.0", "--set", "compress.2.against=teacher"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "02-quantize" in err and "teacher" in err
    assert "last passing artifact" in err and err.endswith("01-recover")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "gate_failed" in metrics["compress"] and (run_dir / "report.html").exists()
    assert not (run_dir / "compress/03-export").exists()
