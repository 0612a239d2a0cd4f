"""The shipped KD recipes for few labels and the omitted class run end to end, shrunk to seconds."""
import json
from pathlib import Path

from kdforge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, name, *sets):
    args = [a for s in [*sets, f"run_dir={tmp_path / 'run'}"] for a in ("--set", s)]
    assert main(["run", str(ROOT / "recipes" / name), "--quiet", *args]) == 0
    return json.loads((tmp_path / "run/metrics.json").read_text())


def test_few_labels_recipe_searches_t_and_alpha_and_uses_the_pool(tmp_path):
    metrics = run(tmp_path, "digits-few-labels.yaml", "teacher.train.epochs=2", "distill.epochs=2", "distill.auto.trials=2")
    auto = json.loads((tmp_path / "run/auto/auto.json").read_text())
    assert auto["tune_size"] > 900 and auto["holdout_size"] == 20  # the pool trains, only labelled samples score
    resolved = (tmp_path / "run/recipe.yaml").read_text()
    assert "standardize: true" in resolved and "labelled: 100" in resolved
    assert 0.0 <= metrics["student"]["accuracy"] <= 1.0


def test_omit3_recipe_reports_the_calibrated_student(tmp_path):
    metrics = run(tmp_path, "digits-omit3.yaml", "teacher.train.epochs=2", "distill.epochs=2")
    assert "accuracy_class_3" in metrics["student_calibrated"] and len(metrics["student_calibrated"]["bias"]) == 10
