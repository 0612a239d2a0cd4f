"""Logit-bias calibration recovers a class's missing bias and never touches the student's weights."""
import torch
import torch.nn.functional as F

from kdforge.data.base import ArrayDataset
from kdforge.train.calibrate import LogitBias, calibrate_bias, fit_logit_bias


def test_recovers_a_shifted_bias_from_labels_and_from_probabilities():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 5, generator=g) * 2
    y = torch.distributions.Categorical(logits=true).sample()
    shift = torch.tensor([0.0, 0.0, 0.0, -3.5, 0.0])  # class 3 starved, as after an omitted-class transfer set
    for target in (y, F.softmax(true, -1)):
        b = fit_logit_bias(true + shift, target)
        want = -shift - (-shift).mean()
        assert torch.allclose(b, want, atol=0.25), (b, want)
        assert abs(b.sum().item()) < 1e-5


def test_no_shift_gives_no_bias_and_bias_improves_the_objective():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 4, generator=g)
    p = F.softmax(z, -1)
    assert fit_logit_bias(z, p).abs().max() < 1e-3
    skewed = z + torch.tensor([2.0, 0, 0, -2.0])
    b = fit_logit_bias(skewed, p)
    ce = lambda logits: -(p * F.log_softmax(logits, -1)).sum(-1).mean()  # noqa: E731
    assert ce(skewed + b) < ce(skewed) - 0.1


def test_calibrate_bias_uses_the_teacher_and_leaves_weights_alone():
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    teacher = torch.nn.Linear(6, 3)
    y = teacher(x).argmax(-1)
    student = torch.nn.Linear(6, 3)
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        student.bias[1] -= 4.0
    before = {k: v.clone() for k, v in student.state_dict().items()}
    b = calibrate_bias(student, ArrayDataset(x, y), teacher)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    fixed = LogitBias(student, b)
    assert (fixed(x).argmax(-1) == y).float().mean() > (student(x).argmax(-1) == y).float().mean()


def test_recipe_bias_calibration_reports_before_and_after(tmp_path):
    import json

    from kdforge.recipe_file import parse_recipe
    from kdforge.workflows import run_recipe

    recipe = parse_recipe({
        "run_dir": str(tmp_path / "run"), "data": {"name": "digits", "omit_classes": [3]},
        "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 3}}, "student": {"name": "mlp", "hidden": [16]},
        "distill": {"epochs": 3, "losses": [{"kind": "kd", "temperature": 20.0, "alpha": 1.0}], "bias_calibration": "teacher"},
    })
    res = run_recipe(recipe, quiet=True)
    raw, cal = res["student"], res["student_calibrated"]
    assert len(cal["bias"]) == 10 and abs(sum(cal["bias"])) < 1e-4
    assert cal["params"] == raw["params"]  # only C biases, no new weights
    assert "accuracy_class_3" in cal and "accuracy_class_3" in raw
    assert json.loads((tmp_path / "run/metrics.json").read_text())["student_calibrated"]["bias"] == cal["bias"]
    report = (tmp_path / "run/report.md").read_text()
    row = "student (kept, calibrated)" if "control" in res else "student_calibrated"  # named after the kept student
    assert f"| {row} |" in report and "accuracy on class 3" in report
