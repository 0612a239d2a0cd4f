"""The shipped recipes of the multi-stage methods run end to end, shrunk to a few seconds."""
import json
from pathlib import Path

import pytest

from kdforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["data.train_limit=200", "distill.epochs=1"]
RECIPES = {
    "mutual.yaml": [],
    "born-again.yaml": ["born_again.generations=2"],
    "multi-teacher.yaml": [f"ensemble.teachers.{k}.train.epochs=1" for k in range(3)],
    "data-free.yaml": ["teacher.train.epochs=1", "data_free.batches_per_epoch=2"],
}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_small(tmp_path, name):
    sets = [a for s in [*SMALL, *RECIPES[name], f"run_dir={tmp_path / 'run'}"] for a in ("--set", s)]
    assert main(["run", str(ROOT / "recipes" / name), "--quiet", *sets]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert 0.0 <= metrics["student"]["accuracy"] <= 1.0 and (tmp_path / "run/report.md").exists()
