"""The shipped KD recipes for few labels and the omitted class run end to end, shrunk to seconds."""
import copy
import json
from pathlib import Path

import pytest
import torch

import kdforge.workflows.standard as standard
from kdforge.cli import main
from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.train.calibrate import calibrate_bias
from kdforge.train.evaluate import predict

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, name, *sets):
    args = [a for s in [*sets, f"run_dir={tmp_path / 'run'}"] for a in ("--set", s)]
    assert main(["run", str(ROOT / "recipes" / name), "--quiet", *args]) == 0
    return json.loads((tmp_path / "run/metrics.json").read_text())


def test_few_labels_recipe_searches_t_and_alpha_and_uses_the_pool(tmp_path):
    run(tmp_path, "digits-few-labels.yaml", "teacher.train.epochs=2", "distill.epochs=2", "distill.auto.trials=3")
    auto = json.loads((tmp_path / "run/auto/auto.json").read_text())
    assert auto["tune_size"] > 900 and auto["holdout_size"] == 20  # the pool trains, only labelled samples score
    # searched: the default, the labels alone, then a sampled (T, α) of its own
    tried = [(t["0.temperature"], t["0.alpha"]) for t in auto["trials"]]
    assert len(tried) == 3 and len(set(tried)) == 3 and tried[1][1] == 0.0
    assert len({t for t, _ in tried}) > 1 and len({a for _, a in tried}) == 3  # both T and α vary
    best = max(auto["trials"], key=lambda t: t["holdout"])
    assert auto["chosen"]["holdout"] == pytest.approx(max(best["holdout"], auto["default"]["holdout"]))
    resolved = (tmp_path / "run/recipe.yaml").read_text()
    assert "standardize: true" in resolved and "labelled: 100" in resolved
    # the pool is used: the teacher labelled every training sample, labelled or not, in every student epoch
    n_train = len(load_data(DataConfig(name="digits"), 0).train)
    assert n_train > 100
    assert json.loads((tmp_path / "run/work.json").read_text())["teacher_forward_samples"] == 2 * n_train


def test_omit3_recipe_reports_the_calibrated_student(tmp_path, monkeypatch):
    seen = {}

    def spy(student, held_out, teacher=None, **kw):
        seen.update(student=copy.deepcopy(student), held_out=held_out, teacher=teacher)
        seen["bias"] = calibrate_bias(student, held_out, teacher, **kw)
        return seen["bias"]

    monkeypatch.setattr(standard, "calibrate_bias", spy)
    metrics = run(tmp_path, "digits-omit3.yaml", "teacher.train.epochs=2", "distill.epochs=2")
    s_logits, y = predict(seen["student"], seen["held_out"])
    assert (y == 3).any()  # fitted on held-out data that has the class the transfer set lacks
    target = predict(seen["teacher"], seen["held_out"])[0].softmax(-1)  # to the teacher's probabilities

    def ce(bias):
        return -(target * (s_logits + bias).log_softmax(-1)).sum(-1).mean().item()

    assert ce(seen["bias"]) < ce(torch.zeros_like(seen["bias"]))
    # the reported row is the kept student plus exactly these biases, on the test split (every class)
    z, y = predict(seen["student"], load_data(DataConfig(name="digits", omit_classes=[3]), 0).test)
    hit = ((z + seen["bias"]).argmax(-1) == y).float()
    cal = metrics["student_calibrated"]
    assert cal["bias"] == pytest.approx(seen["bias"].tolist())
    assert cal["accuracy"] == pytest.approx(hit.mean().item(), abs=1e-6)
    assert cal["accuracy_class_3"] == pytest.approx(hit[y == 3].mean().item(), abs=1e-6)
    assert "student (kept, calibrated)" in (tmp_path / "run/report.md").read_text()
