"""kdforge search: scored on a part of train, never the test split; the choice is never worse than the default."""

import pytest
import yaml

import kdforge.search as search
from kdforge.cli import main
from kdforge.recipe_file import parse_recipe

TINY = {
    "seed": 0,
    "data": {"name": "digits", "train_limit": 300},
    "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": 2}},
    "student": {"name": "mlp", "hidden": [8]},
    "distill": {"epochs": 2, "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8},
                                        {"kind": "hint", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.1}]},
    "search": {"epochs": 2, "top_k": 1, "seeds": 2},
}


class NoTouching:
    def __len__(self):
        return 450

    def __getitem__(self, i):
        raise AssertionError("the search read the test split")


def test_search_never_reads_test_and_keeps_a_choice_at_least_as_good_as_default(tmp_path, monkeypatch):
    real = search.load_data

    def guarded(cfg, seed):
        data = real(cfg, seed)
        data.test = NoTouching()
        return data

    monkeypatch.setattr(search, "load_data", guarded)
    res = search.run_search(parse_recipe(TINY), 2, tmp_path / "out", report_test=False)
    assert res["trials"][0]["temperature"] == 4.0 and res["trials"][0]["alpha"] == 0.8  # trial 0 = the default
    assert res["chosen"]["mean"] >= res["default"]["mean"]
    best = yaml.safe_load((tmp_path / "out/best-recipe.yaml").read_text())
    assert best["distill"]["losses"][0]["temperature"] == pytest.approx(res["chosen"]["params"]["temperature"])
    for name in ("search.md", "search.png", "trials.csv", "search.json"):
        assert (tmp_path / "out" / name).exists()
    assert res["tune_size"] + res["holdout_size"] == len(real(parse_recipe(TINY).data, 0).train)


@pytest.mark.parametrize("field,value", [("temperature", [8.0, 2.0]), ("alpha", [0.5, 0.5]), ("weight", [])])
def test_empty_or_inverted_ranges_exit_2(tmp_path, capsys, field, value):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "search": {field: value}}))
    assert main(["search", str(recipe), "--trials", "2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty or inverted" in err
    assert field in err and not (tmp_path / "out").exists()


def test_trial_parameters_land_in_the_recipe_including_student_width():
    recipe = parse_recipe({**TINY, "search": {"widths": [4, 16]}})
    tuned = search.apply_params(recipe, {"temperature": 2.5, "alpha": 0.3, "weight_1": 0.05, "width": 16})
    kd, hint = tuned.distill.losses
    assert (kd.temperature, kd.alpha, hint.weight, tuned.student.hidden) == (2.5, 0.3, 0.05, [16])
    assert search.default_params(recipe) == {"temperature": 4.0, "alpha": 0.8, "weight_1": 0.1, "width": 8}


def test_a_recipe_without_a_kd_term_cannot_be_searched(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "distill": {"losses": [{"kind": "ce"}]}}))
    assert main(["search", str(recipe), "--trials", "2", "--out", str(tmp_path / "out")]) == 2


def test_an_existing_output_folder_is_kept_without_force(tmp_path):
    recipe, out = tmp_path / "r.yaml", tmp_path / "out"
    recipe.write_text(yaml.safe_dump(TINY))
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["search", str(recipe), "--trials", "1", "--out", str(out)]) == 2
    assert (out / "keep.txt").read_text() == "mine"


def test_search_of_a_recipe_with_auto_fields_starts_from_the_default(tmp_path):
    raw = {**TINY, "distill": {**TINY["distill"], "losses": [{"kind": "kd", "temperature": "auto", "alpha": "auto"}]}}
    res = search.run_search(parse_recipe(raw), 1, tmp_path / "out", report_test=False)
    assert res["trials"][0]["temperature"] == 4.0 and res["trials"][0]["alpha"] == 0.8
    best = yaml.safe_load((tmp_path / "out/best-recipe.yaml").read_text())
    assert best["distill"]["losses"][0]["temperature"] == 4.0  # the written recipe holds numbers, not "auto"
