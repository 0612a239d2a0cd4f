"""Recipes: every shipped recipe parses; bad values are named by field."""
from pathlib import Path

import pytest

from kdforge.config import Recipe, load_recipe, parse_recipe
from kdforge.errors import KDForgeError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path):
    assert isinstance(load_recipe(path), Recipe)


def test_override_sets_nested_fields_with_yaml_types():
    r = parse_recipe({}, ["distill.epochs=3", "student.hidden=[8, 4]", "distill.losses.0.temperature=2.5"])
    assert r.distill.epochs == 3 and r.student.hidden == [8, 4] and r.distill.losses[0].temperature == 2.5


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["distill.epochs=abc"], "distill.epochs: got 'abc'"),
        (["distill.epochs=0"], "distill.epochs"),
        (["distill.losses=[{kind: bogus}]"], "distill.losses.0"),
        (["distill.losses.0.alpha=1.5"], "distill.losses.0.alpha: got 1.5"),
        (["data.name=imagenet"], "data.name: unknown dataset 'imagenet'"),
        (["student.name=resnet"], "student.name: unknown model"),
        (["distill.colour=red"], "distill.colour: unknown field"),
        (["distill.losses.7.weight=1"], "--set distill.losses.7.weight"),
        (["noequals"], "expected FIELD=VALUE"),
    ],
)
def test_bad_values_name_the_field(overrides, needle):
    with pytest.raises(KDForgeError) as e:
        parse_recipe({}, overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_loss_kind_lists_allowed_kinds():
    with pytest.raises(KDForgeError) as e:
        parse_recipe({"distill": {"losses": [{"kind": "kl_magic"}]}})
    assert "kl_magic" in str(e.value) and "'kd'" in str(e.value)


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("distill:\n  epochs: [1, 2\n")
    with pytest.raises(KDForgeError, match=r"malformed YAML at line \d+"):
        load_recipe(p)


def test_recipe_cannot_hold_code():
    p = Path("/tmp/kdforge-code.yaml")
    p.write_text("student: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(KDForgeError, match="malformed YAML"):
        load_recipe(p)
