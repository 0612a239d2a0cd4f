"""Bad input: one line naming the cause, exit code 2, no traceback, nothing half-written."""
from pathlib import Path

import pytest
import yaml

from kdforge.cli import main
from tests.conftest import kdforge_cli

TINY = {
    "data": {"name": "digits", "train_limit": 200},
    "teacher": {"name": "mlp", "hidden": [16], "train": {"epochs": 1}},
    "student": {"name": "mlp", "hidden": [8]},
    "distill": {"epochs": 1},
}


def write(tmp_path: Path, recipe: dict | str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return p


def hint(student_layer="layers.0", teacher_layer="layers.0"):
    return {"kind": "hint", "student_layer": student_layer, "teacher_layer": teacher_layer}


CASES = {
    "malformed yaml": ("distill: {epochs: 3\n", [], "malformed YAML"),
    "unknown loss kind": ({**TINY, "distill": {"losses": [{"kind": "klx"}]}}, [], "klx"),
    "unknown module": ({**TINY, "distill": {"losses": [hint("layers.9")]}}, [], "no module named 'layers.9'"),
    "missing data file": ({**TINY, "data": {"name": "csv", "path": "/nonexistent/data.csv"}}, [], "file not found: /nonexistent/data.csv"),
    "class count mismatch": (TINY, ["student.num_classes=5"], "teacher predicts 10 classes but student predicts 5"),
    "nan loss": (TINY, ["distill.lr=1e30", "distill.max_grad_norm=null", "distill.epochs=3"], "non-finite"),
    "bad override": (TINY, ["distill.epochs=many"], "distill.epochs: got 'many'"),
    "missing recipe": (None, [], "recipe file not found"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2(name, tmp_path, capsys):
    recipe, overrides, needle = CASES[name]
    run_dir = tmp_path / "run"
    path = write(tmp_path, recipe) if recipe is not None else tmp_path / "absent.yaml"
    args = ["run", str(path), "--quiet", "--set", f"run_dir={run_dir}"]
    for o in overrides:
        args += ["--set", o]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    if name == "nan loss":  # it got as far as training: the last good checkpoint is kept, no final metrics
        assert not (run_dir / "metrics.json").exists()
    else:
        assert not run_dir.exists()


def test_real_entry_point_prints_one_line_and_debug_shows_traceback(tmp_path):
    path = write(tmp_path, {**TINY, "distill": {"losses": [hint("nope")]}})
    r = kdforge_cli("run", str(path))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: student has no module named 'nope'")
    assert len(r.stderr.strip().splitlines()) == 1
    r = kdforge_cli("run", str(path), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep")
    assert main(["run", str(write(tmp_path, TINY)), "--set", f"run_dir={run_dir}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "precious.txt").read_text() == "keep"
