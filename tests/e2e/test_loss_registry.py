"""A new logit loss is one function plus one registration: it runs in a classification recipe and in a
token_kd recipe, and a method it does not fit refuses it with one line naming the method."""
import json

import pytest
import torch.nn.functional as F

from kdforge.errors import KDForgeError
from kdforge.losses.kinds import CLASS_LOGITS, KINDS
from kdforge.methods.terms import TERMS
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)

SHAPES: list[tuple[int, ...]] = []  # the student logits' shape of every call of the toy loss


def toy_l1(student, teacher, *, temperature=1.0, mask=None):
    """L1 between the softened distributions, masked mean over positions. (B, C) or (B, T, V) -> scalar."""
    SHAPES.append(tuple(student.shape))
    per = (F.softmax(student.float() / temperature, -1) - F.softmax(teacher.float() / temperature, -1)).abs().sum(-1)
    if mask is None:
        return per.mean()
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


@pytest.fixture(autouse=True, scope="module")
def _toy_registered():
    KINDS.register("toy_l1", options=("temperature",))(toy_l1)  # the one registration a new logit loss needs
    yield
    KINDS.remove("toy_l1")  # registered for this module's tests only: the rest of the session sees the built-in kinds


def _epochs(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_toy_loss_runs_in_a_classification_recipe(tmp_path):
    SHAPES.clear()
    recipe = parse_recipe({
        "seed": 0, "run_dir": str(tmp_path / "run"),
        "data": {"name": "digits", "train_limit": 128},
        "teacher": {"name": "mlp", "hidden": [16], "train": {"epochs": 1}},
        "student": {"name": "mlp", "hidden": [8]},
        "distill": {"epochs": 1, "batch_size": 32, "control": False,
                    "losses": [{"kind": "toy_l1", "temperature": 2.0, "weight": 0.5}, {"kind": "ce"}]},
    })
    assert recipe.distill.losses[0].kind == "toy_l1" and recipe.distill.losses[0].temperature == 2.0
    run_recipe(recipe, quiet=True)
    epochs = _epochs(tmp_path / "run/student/metrics.jsonl")
    assert epochs[-1]["train/toy_l1"] > 0  # weighted value logged beside ce
    assert {len(s) for s in SHAPES} == {2} and SHAPES[0][-1] == 10  # (B, C) class logits


def _lm_raw(tmp_path, folder, losses):
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question: whether tis nobler in the mind. " * 30)
    return {"seed": 0, "run_dir": str(tmp_path / "run"), "method": "token_kd",
            "data": {"name": "text-lm", "path": str(tmp_path / "t.txt"), "tokenizer": str(folder), "max_length": 24,
                     "val_fraction": 0.1, "test_fraction": 0.1},
            "teacher": {"name": "hf", "hf": str(folder), "task": "causal_lm"},
            "student": {"name": "hf", "hf": str(folder), "task": "causal_lm", "layers": [1]},
            "distill": {"epochs": 1, "batch_size": 8, "lm": {"chunk_size": 8}, "losses": losses}}


def test_toy_loss_runs_in_a_token_kd_recipe_chunked(tmp_path, tiny_llama_dir):  # noqa: F811
    SHAPES.clear()
    raw = _lm_raw(tmp_path, tiny_llama_dir, [{"kind": "toy_l1"}, {"kind": "ce", "weight": 0.1}])
    run_recipe(parse_recipe(raw), quiet=True)
    epochs = _epochs(tmp_path / "run/student/metrics.jsonl")
    assert epochs[-1]["train/toy_l1"] > 0
    assert SHAPES and {len(s) for s in SHAPES} == {3}  # (B, chunk, V) token logits
    assert max(s[1] for s in SHAPES) <= 8  # the vocabulary projection ran per chunk of positions


def test_a_class_logit_only_kind_is_refused_by_token_kd_naming_the_method(tmp_path, tiny_llama_dir):  # noqa: F811
    KINDS.add("toy_class_only", (CLASS_LOGITS,), lambda s, t, mask=None: (s - t).abs().mean())
    try:
        raw = _lm_raw(tmp_path, tiny_llama_dir, [{"kind": "toy_class_only"}])
        with pytest.raises(KDForgeError, match="toy_class_only is not supported by method token_kd .*token logits"):
            run_recipe(parse_recipe(raw), quiet=True)
    finally:
        KINDS.remove("toy_class_only")


def test_an_unregistered_kind_is_refused_by_the_recipe():
    with pytest.raises(KDForgeError, match="unknown loss kind 'toy_nothing'"):
        parse_recipe({"distill": {"losses": [{"kind": "toy_nothing"}]}})


def test_every_method_step_belongs_to_a_registered_kind():
    assert set(TERMS) <= set(KINDS.names())  # no kind exists only in a method's table
