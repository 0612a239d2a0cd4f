"""The control arm (kdforge.control): the same student on the labels alone, reported next to KD in every
output, the better one kept by validation only; teacher diagnostics that warn and never abort."""
import json
import os
import subprocess
import sys

import pytest
import torch

import kdforge
from kdforge import control as ctl
from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.models import MLP
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe

RECIPE = {
    "data": {"name": "digits", "train_limit": 300},
    "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 4}},
    "student": {"name": "mlp", "hidden": [16]},
    "distill": {"epochs": 3, "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]},
}


def recipe(tmp_path, **distill):
    return parse_recipe({**RECIPE, "run_dir": str(tmp_path / "run"), "distill": {**RECIPE["distill"], **distill}})


def test_control_runs_and_is_reported_in_metrics_report_and_terminal(tmp_path):
    (tmp_path / "r.yaml").write_text(json.dumps({**RECIPE, "run_dir": str(tmp_path / "run")}))
    r = subprocess.run([sys.executable, "-m", "kdforge", "run", str(tmp_path / "r.yaml"), "--quiet"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "KDFORGE_DEVICE": "cpu"})
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    sel = m["selection"]
    assert sel["kept"] in ("distilled", "control")
    assert sel["test"]["kd_minus_control"] == pytest.approx(m["student_distilled"]["accuracy"] - m["control"]["accuracy"])
    assert sel["val"]["kd_minus_control"] == pytest.approx(
        m["student_stage"]["best_val"]["accuracy"] - m["control_stage"]["best_val"]["accuracy"])
    kept = m["student_distilled"] if sel["kept"] == "distilled" else m["control"]
    assert m["student"] == kept
    report = (tmp_path / "run/report.md").read_text()
    assert "student (labels alone, control)" in report and "KD against training alone" in report
    assert f"Kept: **{sel['kept']}**" in report and "Teacher diagnostics" in report
    assert f"control {m['control']['accuracy']:.4f}" in r.stdout and f"kept {sel['kept']}" in r.stdout
    lines = (tmp_path / "run/control/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the distillation's schedule


class ConfidentlyWrong(torch.nn.Module):
    """A planted teacher: near one-hot targets on the class after the true one (x carries no label, so the
    targets come from a fixed random map of the inputs: arbitrary, confident, wrong)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = MLP((1, 8, 8), 10, hidden=[64])
        with torch.no_grad():
            for p in self.net.parameters():
                p.mul_(30.0)

    def forward(self, x):
        return self.net(x)


def test_selection_is_by_validation_and_a_control_that_wins_there_is_kept(tmp_path):
    data = load_data(DataConfig(name="digits", train_limit=300), seed=0)
    torch.manual_seed(1)
    student = MLP((1, 8, 8), 10, hidden=[16])
    teacher = ConfidentlyWrong()
    teacher.eval()
    res = kdforge.distill(teacher, student, data.train, data.val, test=data.test, run_dir=tmp_path / "api",
                          config={"epochs": 4, "lr": 1e-2, "control": True,
                                  "losses": [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}]})
    sel = res.metrics["selection"]
    assert sel["val"]["control"] > sel["val"]["distilled"]  # the planted case: soft targets only, from a wrong teacher
    assert sel["kept"] == "control"
    assert res.metrics["test"] == res.metrics["test_control"]  # the returned student is the control
    assert res.metrics["test"]["accuracy"] > res.metrics["test_distilled"]["accuracy"]
    assert res.metrics["teacher_diagnostics"]["warnings"]  # the teacher is worse than training alone: said


def test_choose_keeps_the_distilled_student_on_a_tie_and_never_reads_test():
    kd = {"best_val": {"accuracy": 0.9}}
    assert ctl.choose(kd, {"best_val": {"accuracy": 0.9}})["kept"] == "distilled"
    assert ctl.choose(kd, {"best_val": {"accuracy": 0.91}})["kept"] == "control"


def test_resume_skips_a_finished_control(tmp_path):
    first = run_recipe(recipe(tmp_path), quiet=True)
    log = tmp_path / "run/control/metrics.jsonl"
    stamp, text = log.stat().st_mtime_ns, log.read_text()
    again = run_recipe(recipe(tmp_path), resume=True, quiet=True)
    assert log.stat().st_mtime_ns == stamp and log.read_text() == text  # not retrained
    assert again["control"] == first["control"] and again["selection"] == first["selection"]


def test_control_off_and_auto_rule():
    small, big = MLP((1, 8, 8), 10, hidden=[8]), MLP((1, 8, 8), 10, hidden=[64])
    train = load_data(DataConfig(name="digits", train_limit=50), seed=0).train
    assert ctl.control_applies("auto", big, small, train)  # half the teacher's parameters or fewer: on
    assert not ctl.control_applies("auto", small, big, train)  # a student as costly as the teacher: off
    assert not ctl.control_applies(False, big, small, train)
    assert ctl.control_applies(True, small, big, train)


def test_labelled_regime_trains_the_control_on_the_labelled_part_only(tmp_path):
    raw = {**RECIPE, "run_dir": str(tmp_path / "run"), "data": {"name": "digits", "train_limit": 300, "labelled": 40},
           "distill": {**RECIPE["distill"], "batch_size": 16}}
    res = run_recipe(parse_recipe(raw), quiet=True)
    assert res["control_stage"]["steps"] == 3 * 3  # 40 labelled samples / batch 16 = 3 steps per epoch, 3 epochs
    assert res["student_stage"]["steps"] > res["control_stage"]["steps"]  # KD also reads the teacher-labelled pool


def test_an_underconfident_teacher_is_warned_about_and_the_run_goes_on():
    data = load_data(DataConfig(name="digits", train_limit=300), seed=0)
    torch.manual_seed(0)
    teacher = MLP((1, 8, 8), 10, hidden=[64])
    kdforge.distill(None, teacher, data.train, data.val, {"epochs": 8, "lr": 1e-2}, method="supervised")
    flat = torch.nn.Sequential(teacher, torch.nn.Linear(10, 10, bias=False))  # logits divided by 20: flat soft targets
    with torch.no_grad():
        flat[1].weight.copy_(torch.eye(10) / 20)
    with pytest.warns(UserWarning, match="under-confident"):
        d = ctl.teacher_diagnostics(flat.eval(), data.train, data.val)
    assert d["train_mean_top_prob"] < 0.3 and d["train_accuracy"] > 0.8
    assert 0 <= d["val_ece"] <= 1 and d["train_entropy"] <= d["max_entropy"]
