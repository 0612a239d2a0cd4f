"""Static INT8 takes its activation ranges from the calibration batches: calibrated on data that
does not look like what the model will see, the export's accuracy gate stops it cleanly (exit 3,
one line) and the same stage passes with representative calibration."""
import shutil

import pytest
import yaml

from kdforge.workflows import compress as compress_workflow
from kdforge.cli import main

pytest.importorskip("onnxruntime")
STAGE = "{kind: export, formats: [onnx-opt-int8-static], max_accuracy_drop: 0.02}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    recipe = {
        "run_dir": str(tmp / "run"),
        "data": {"name": "digits", "train_limit": 400},
        "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 3}},
        "student": {"name": "mlp", "hidden": [32]},
        "distill": {"epochs": 3},
    }
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp / "r.yaml"), "--quiet"]) == 0
    return tmp / "run"


def test_representative_calibration_passes(run_dir):
    assert main(["compress", str(run_dir), "--quiet", "--stage", STAGE]) == 0


def test_unrepresentative_calibration_fails_the_gate_with_exit_3(run_dir, monkeypatch, capsys):
    real = compress_workflow.load_run

    def mismatched(path):  # calibration inputs at 1/100 of the real scale: a preprocessing mismatch
        recipe, data, student, teacher = real(path)
        data.train.x = data.train.x * 0.01
        return recipe, data, student, teacher

    monkeypatch.setattr(compress_workflow, "load_run", mismatched)
    shutil.rmtree(run_dir / "compress", ignore_errors=True)  # a finished stage would be reused, not recomputed
    code = main(["compress", str(run_dir), "--quiet", "--stage", STAGE])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert len(err.splitlines()) == 1 and "00-export" in err and "max_accuracy_drop 0.02" in err
    assert (run_dir / "compress/00-export/gate_failed.json").exists()
