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


CSV_NO_LABEL = "a,b\n1,2\n3,4\n"
CSV_TEXT_FEATURE = "f,label\nfoo,1\nbar,0\n"


def csv_recipe(content: str | None, **data) -> dict:
    return {**TINY, "data": {"name": "csv", "path": "@CSV" if content is not None else "/nonexistent/data.csv", **data}}


# name: (recipe (dict, YAML text or None = no file), overrides, expected text, CSV content)
CASES = {
    "malformed yaml": ("distill: {epochs: 3\n", [], "malformed YAML", None),
    "yaml is a list": ("- 1\n- 2\n", [], "expected a mapping", None),
    "python tag in yaml": ("student: !!python/object/apply:os.system ['true']\n", [], "malformed YAML", None),
    "unknown top-level field": ({**TINY, "teachr": {}}, [], "teachr: unknown field", None),
    "unknown loss kind": ({**TINY, "distill": {"losses": [{"kind": "klx"}]}}, [], "klx", None),
    "alpha above 1": ({**TINY, "distill": {"losses": [{"kind": "kd", "alpha": 2}]}}, [], "distill.losses.0.alpha", None),
    "negative temperature": ({**TINY, "distill": {"losses": [{"kind": "kd", "temperature": -1}]}}, [], "temperature", None),
    "zero epochs": ({**TINY, "distill": {"epochs": 0}}, [], "distill.epochs", None),
    "unknown dataset": ({**TINY, "data": {"name": "imagenet"}}, [], "data.name: unknown dataset 'imagenet'", None),
    "unknown model": ({**TINY, "student": {"name": "resnet50"}}, [], "student.name: unknown model 'resnet50'", None),
    "unknown method": ({**TINY, "method": "magic"}, [], "method: unknown method 'magic'", None),
    "bad val fraction": ({**TINY, "data": {"name": "digits", "val_fraction": 0.7}}, [], "data.val_fraction", None),
    "omitted class out of range": ({**TINY, "data": {"name": "digits", "omit_classes": [12]}}, [], "data.omit_classes: [12] out of range", None),
    "unknown student module": ({**TINY, "distill": {"losses": [hint("layers.9")]}}, [], "student has no module named 'layers.9'", None),
    "unknown teacher module": ({**TINY, "distill": {"losses": [hint("layers.0", "encoder")]}}, [], "teacher has no module named 'encoder'", None),
    "missing data file": (csv_recipe(None), [], "file not found: /nonexistent/data.csv", None),
    "csv without label column": (csv_recipe(CSV_NO_LABEL), [], "data.label_column: 'label' is not a column", CSV_NO_LABEL),
    "csv with text features": (csv_recipe(CSV_TEXT_FEATURE), [], "feature columns must be numeric", CSV_TEXT_FEATURE),
    "empty csv": (csv_recipe(""), [], "cannot parse", ""),
    "cnn on tabular data": (csv_recipe("f,g,label\n" + "1,2,0\n3,4,1\n" * 20, **{}) | {"student": {"name": "cnn"}}, [], "cnn needs image inputs", "f,g,label\n" + "1,2,0\n3,4,1\n" * 20),
    "missing teacher checkpoint": ({**TINY, "teacher": {"name": "mlp", "hidden": [16], "checkpoint": "/nope/t.safetensors"}}, [], "teacher.checkpoint: file not found", None),
    "pickled teacher checkpoint": ({**TINY, "teacher": {"name": "mlp", "hidden": [16], "checkpoint": "@PICKLE"}}, [], "pickled checkpoints are refused", None),
    "class count mismatch": (TINY, ["student.num_classes=5"], "teacher predicts 10 classes but student predicts 5", None),
    "nan loss": (TINY, ["distill.lr=1e30", "distill.max_grad_norm=null", "distill.epochs=3"], "non-finite", None),
    "bad override value": (TINY, ["distill.epochs=many"], "distill.epochs: got 'many'", None),
    "override without value": (TINY, ["distill.epochs"], "expected FIELD=VALUE", None),
    "override index out of range": (TINY, ["distill.losses.4.weight=1"], "is not an index of a list of 1", None),
    "missing recipe": (None, [], "recipe file not found", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2(name, tmp_path, capsys):
    recipe, overrides, needle, csv = CASES[name]
    run_dir = tmp_path / "run"
    if csv is not None:
        (tmp_path / "data.csv").write_text(csv)
    if isinstance(recipe, dict):
        text = yaml.safe_dump(recipe).replace("'@CSV'", str(tmp_path / "data.csv")).replace("'@PICKLE'", str(tmp_path / "t.pt"))
        (tmp_path / "t.pt").write_bytes(b"\x80\x04K\x01.")
        recipe = text
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


@pytest.mark.parametrize("args, needle", [
    (["run"], "give a RECIPE file or --resume RUN_DIR"),
    (["run", "--resume", "/tmp"], "is not a kdforge run directory"),
    (["run", "r.yaml", "--no-such-flag"], "No such option"),
    (["frobnicate"], "No such command"),
])
def test_bad_cli_arguments(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


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
