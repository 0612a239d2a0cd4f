"""Recipes: every shipped recipe parses; bad values are named by field."""
import re
from pathlib import Path

import pytest

from kdforge.config import Recipe
from kdforge.recipe_file import load_recipe, parse_recipe
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
        (["store={path: s, sampling: priority, weights: packed}"], "store: weights: packed keeps draw counts"),
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


def test_yaml_features_that_stay_allowed(tmp_path):
    """The reader's guards (duplicates, alias size, encoding) leave ordinary YAML alone: a BOM,
    merge keys overridden by explicit keys, and aliases that reuse a section."""
    p = tmp_path / "r.yaml"
    p.write_bytes("\ufeff".encode() + b"student: &s {name: mlp, hidden: [8]}\nteacher:\n  <<: *s\n  hidden: [16]\n"
                  b"method: mutual\nmutual:\n  peers: [*s, *s]\n")  # the mutual section is read by method mutual only
    r = load_recipe(p)
    assert r.teacher.hidden == [16] and r.teacher.name == "mlp" and r.student.hidden == [8]
    assert [peer.hidden for peer in r.mutual.peers] == [[8], [8]]


def test_alias_limit_counts_expanded_values(tmp_path):
    """A recipe is refused by the values its aliases expand to, not by how many aliases it uses."""
    from kdforge.recipe_file import MAX_RECIPE_NODES

    p = tmp_path / "r.yaml"
    width, sizes = 10, [11]  # l0: a list of 10 values (11 with the list); l_i: 10 aliases of l_{i-1}
    while sizes[-1] * width < MAX_RECIPE_NODES:
        sizes.append(1 + width * sizes[-1])
    levels = len(sizes) - 1  # l0..l_levels together expand to fewer values than the limit, one more level to more
    assert sum(sizes) + 2 < MAX_RECIPE_NODES < 1 + width * sizes[-1]
    body = "l0: &l0 [" + ", ".join(["1"] * width) + "]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n" for i in range(1, levels + 1))
    p.write_text("seed: 1\n" + body)  # dozens of aliases, under the limit: past the guard, refused as unknown fields
    with pytest.raises(KDForgeError, match="l0: unknown field"):
        load_recipe(p)
    p.write_text("seed: 1\n" + body + f"l{levels + 1}: [" + ", ".join([f"*l{levels}"] * width) + "]\n")
    with pytest.raises(KDForgeError, match="YAML aliases expand to more than"):
        load_recipe(p)


@pytest.mark.parametrize("raw, needle", [
    ({"method": "born_again", "compress": [{"kind": "quantize"}]}, "compress: method 'born_again' does not run compress stages"),
    ({"method": "supervised", "compress": [{"kind": "prune", "amount": 0.5, "max_accuracy_drop": 0.1, "against": "teacher"}]},
     "compress.0.against"),
    ({"teacher": {"name": "hf", "hf": "x", "task": "causal_lm"}}, "teacher.task: method 'standard' distils classifiers"),
])
def test_whole_recipe_checks_name_their_field(raw, needle):
    with pytest.raises(KDForgeError) as e:
        parse_recipe(raw)
    assert str(e.value).startswith(f"recipe field {needle}")


def test_supervised_gate_against_student_and_lm_teachers_stay_allowed():
    parse_recipe({"method": "supervised", "compress": [{"kind": "quantize", "max_accuracy_drop": 0.1}]})
    parse_recipe({"method": "supervised", "teacher": {"name": "hf", "hf": "x", "task": "causal_lm"}})  # the teacher is unused
    parse_recipe({"method": "token_kd", "teacher": {"name": "hf", "hf": "x", "task": "causal_lm"},
                  "student": {"name": "hf", "hf": "x", "task": "causal_lm"}})


def test_feature_terms_have_no_silent_capture_field():
    """`capture` was accepted but ignored (taps always read outputs): it is gone, and naming it is an error."""
    with pytest.raises(KDForgeError, match=r"distill\.losses\.0\.capture: unknown field"):
        parse_recipe({"distill": {"losses": [{"kind": "hint", "student_layer": "a", "teacher_layer": "b", "capture": "input"}]}})


LLM = {"name": "hf", "hf": "x", "task": "causal_lm"}


@pytest.mark.parametrize("student, teacher, message", [
    ({**LLM, "prune": {"num_layers": 2}}, LLM, "prune: sizes to prune to are read with init: prune"),
    ({**LLM, "init": "prune"}, LLM, "init: prune needs a prune: section"),
    ({**LLM, "init": "prune", "prune": {"num_layers": 2}, "hidden_size": 64}, LLM, "init: prune takes its sizes from prune:, not from hidden_size"),
    ({"name": "hf", "hf": "x", "init": "prune", "prune": {}}, LLM, "init: prune prunes causal LMs"),
    (LLM, {"name": "hf", "hf": "x", "correct": True}, "correct: teacher correction fine-tunes an hf causal LM"),
])
def test_prune_and_correction_fields_are_checked(student, teacher, message):
    with pytest.raises(KDForgeError, match=re.escape(message)):
        parse_recipe({"method": "token_kd", "teacher": teacher, "student": student})


def test_a_causal_lm_recipe_takes_export_stages_only():
    ok = parse_recipe({"method": "token_kd", "teacher": LLM, "student": LLM, "compress": [{"kind": "export", "formats": ["hf", "onnx"]}]})
    assert ok.compress[0].formats == ["hf", "onnx"]
    with pytest.raises(KDForgeError, match="compress.0: a causal-LM run's stages export the student"):
        parse_recipe({"method": "token_kd", "teacher": LLM, "student": LLM, "compress": [{"kind": "quantize"}]})
