"""temperature: auto / alpha: auto — searched on held-out training data, default kept unless beaten, reused on resume."""
import json

import pytest
import torch

import kdforge
import kdforge.tuning as tuning
from kdforge.config import AutoConfig, DataConfig, DistillConfig, ModelConfig
from kdforge.recipe_file import parse_recipe
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.models import MLP
from kdforge.models.build import build_model
from kdforge.workflows import run_recipe


@pytest.fixture(scope="module")
def small():
    data = load_data(DataConfig(name="digits", train_limit=300), 0)
    teacher = build_model(ModelConfig(name="mlp", hidden=[64]), data.input_shape, data.num_classes, "t", 0)
    kdforge.distill(None, teacher, data.train, data.val, {"epochs": 3, "losses": [{"kind": "ce"}]}, method="supervised")
    return data, teacher


def student(data):
    return build_model(ModelConfig(name="mlp", hidden=[8]), data.input_shape, data.num_classes, "s", 1)


def auto_cfg(trials, **kd):
    return DistillConfig(epochs=2, losses=[{"kind": "kd", **kd}, {"kind": "ce", "weight": 0.0}], auto={"trials": trials})


def test_chosen_is_the_best_trial_or_the_default_and_is_written(small, tmp_path):
    data, teacher = small
    cfg = tuning.resolve_auto(auto_cfg(4, temperature="auto", alpha="auto"), teacher, student(data), data.train, 0, tmp_path)
    res = json.loads((tmp_path / "auto.json").read_text())
    trials = [r for r in res["trials"] if r["state"] == "COMPLETE"]
    assert res["trials"][0]["0.temperature"] == 4.0 and res["trials"][0]["0.alpha"] == 0.8  # trial 0: the default
    best = max(trials, key=lambda r: r["holdout"])
    if best["holdout"] > res["trials"][0]["holdout"]:
        assert res["chosen"]["holdout"] == best["holdout"]
    else:
        assert res["chosen"]["trial"] == 0
    kd = cfg.losses[0]
    assert (kd.temperature, kd.alpha) == (res["chosen"]["params"]["0.temperature"], res["chosen"]["params"]["0.alpha"])
    assert cfg.losses[1].kind == "ce"  # other terms untouched
    assert res["holdout_size"] + res["tune_size"] == len(data.train)  # the held-out part comes from train only
    assert "Chosen: trial" in (tmp_path / "auto.md").read_text()


def test_only_auto_fields_are_searched_and_one_trial_keeps_the_default(small, tmp_path):
    data, teacher = small
    cfg = tuning.resolve_auto(auto_cfg(1, temperature=2.0, alpha="auto"), teacher, student(data), data.train, 0, tmp_path)
    assert cfg.losses[0].temperature == 2.0 and cfg.losses[0].alpha == 0.8
    assert list(json.loads((tmp_path / "auto.json").read_text())["chosen"]["params"]) == ["0.alpha"]


def test_a_finished_search_is_reused_not_rerun(small, tmp_path, monkeypatch):
    data, teacher = small
    first = tuning.resolve_auto(auto_cfg(2, temperature="auto"), teacher, student(data), data.train, 0, tmp_path)
    monkeypatch.setattr(tuning, "fit_trial", lambda *a, **k: pytest.fail("searched again"))
    again = tuning.resolve_auto(auto_cfg(2, temperature="auto"), teacher, student(data), data.train, 0, tmp_path)
    assert again.losses[0].temperature == first.losses[0].temperature


def test_no_auto_field_means_no_search(small, tmp_path, monkeypatch):
    data, teacher = small
    monkeypatch.setattr(tuning, "fit_trial", lambda *a, **k: pytest.fail("searched"))
    cfg = auto_cfg(3, temperature=3.0, alpha=0.5)
    assert tuning.resolve_auto(cfg, teacher, student(data), data.train, 0, tmp_path) is cfg
    assert not (tmp_path / "auto.json").exists()


def test_unresolved_auto_cannot_train():
    from kdforge.methods.standard import StandardKD

    batch = {"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 0, 1])}
    m = StandardKD(torch.nn.Linear(3, 2), torch.nn.Linear(3, 2), auto_cfg(2, temperature="auto"), batch)
    with pytest.raises(ValueError, match="auto"):
        m.step(batch)


def test_recipe_with_auto_writes_the_choice_into_the_run(tmp_path):
    recipe = parse_recipe({
        "run_dir": str(tmp_path / "run"), "data": {"name": "digits", "train_limit": 200},
        "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": 2}}, "student": {"name": "mlp", "hidden": [8]},
        "distill": {"epochs": 2, "losses": [{"kind": "kd", "temperature": "auto", "alpha": "auto"}], "auto": {"trials": 2}},
    })
    run_recipe(recipe, quiet=True)
    res = json.loads((tmp_path / "run/auto/auto.json").read_text())
    assert set(res["chosen"]["params"]) == {"0.temperature", "0.alpha"}
    assert (tmp_path / "run/student/result.json").exists()


@pytest.mark.parametrize("bad,field", [
    ({"temperature": "hot"}, "distill.losses.0.temperature"),
    ({"alpha": 1.5}, "distill.losses.0.alpha"),
])
def test_bad_auto_values_name_the_field(bad, field):
    with pytest.raises(KDForgeError, match=field.replace(".", r"\.") + r".*'auto'"):
        parse_recipe({"distill": {"losses": [{"kind": "kd", **bad}]}})


def test_bad_auto_budget_names_the_field():
    with pytest.raises(KDForgeError, match=r"distill\.auto\W+alpha"):
        parse_recipe({"distill": {"auto": {"alpha": [0.5, 0.2]}}})


def test_search_counts_the_teacher_work(small, tmp_path):
    data, teacher = small
    tuning.resolve_auto(auto_cfg(2, alpha="auto"), teacher, student(data), data.train, 0, tmp_path)
    res = json.loads((tmp_path / "auto.json").read_text())
    # each trial's teacher sees the tuning part once per epoch (the probe batch at construction is not counted)
    assert res["teacher_forward_samples"] == res["student_epochs_spent"] * res["tune_size"]


def test_a_top_k_store_cannot_feed_standardized_kd():
    """z-scores need every class's logit: a top-k store is refused for standardize: true, and the
    recommended default (no losses given) leaves standardization off for such a store."""
    with pytest.raises(KDForgeError, match=r"store\.k"):
        parse_recipe({"store": {"path": "s", "k": 4}, "distill": {"losses": [{"kind": "kd", "standardize": True}]}})
    assert parse_recipe({"store": {"path": "s", "k": 4}}).distill.losses[0].standardize is False
    assert parse_recipe({"store": {"path": "s"}}).distill.losses[0].standardize is True


def test_alpha_auto_returns_labels_alone_when_the_teacher_is_random(tmp_path):
    """A planted task: the teacher is an untrained net (its soft targets carry nothing about the labels), so
    every α > 0 pulls the student toward confident arbitrary classes; trial 1 (α = 0, the labels alone) must win and be chosen."""
    data = load_data(DataConfig(name="digits", train_limit=400), seed=0)
    torch.manual_seed(5)
    teacher = MLP((1, 8, 8), 10, hidden=[64])  # random weights: a teacher that knows nothing ...
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(30.0)  # ... and says it confidently: near one-hot targets on arbitrary classes
    teacher.eval()
    cfg = DistillConfig(epochs=6, lr=1e-2, losses=[{"kind": "kd", "temperature": 1.0, "alpha": "auto"}], auto={"trials": 3})
    out = tuning.resolve_auto(cfg, teacher, student(data), data.train, 0, tmp_path)
    res = json.loads((tmp_path / "auto.json").read_text())
    assert res["trials"][1]["0.alpha"] == 0.0  # the labels-alone trial is always tried
    assert out.losses[0].alpha == 0.0, res["trials"]


def test_alpha_search_coordinates_are_log_spaced_near_zero_and_invert_exactly():
    a = AutoConfig()
    assert tuning.alpha_of(0.0, a) == 0.0 and tuning.alpha_of(1.0, a) == pytest.approx(1.0)
    assert tuning.alpha_of(0.5, a) < 0.04  # half of the coordinate range lies below α = 0.04
    for alpha in (0.0, 0.125, 0.8):
        u = tuning.to_search({"0.alpha": alpha}, a)["0.alpha:u"]
        assert tuning.alpha_of(u, a) == pytest.approx(alpha)
