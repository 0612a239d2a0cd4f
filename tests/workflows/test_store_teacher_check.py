"""A teacher store written by another teacher is refused with one error naming the store, before the
student trains: at once (nothing written) when the teachers differ in architecture or come from a
checkpoint, right after the run's own teacher trains when only its weights tell them apart."""
import json

import pytest

from kdforge.errors import KDForgeError
from kdforge.store.fingerprint import compare
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe


def _recipe(tmp_path, run: str, hidden: list[int], store=None, **teacher_train) -> dict:
    return {"run_dir": str(tmp_path / run), "data": {"name": "digits"},
            "teacher": {"name": "mlp", "hidden": hidden, "train": {"epochs": 1, "tracker": "none", **teacher_train}},
            "student": {"name": "mlp", "hidden": [8]},
            "distill": {"epochs": 1, "tracker": "none", "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]},
            "store": {"path": str(store or tmp_path / "store"), "k": 4}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store written by a run whose teacher is an MLP [32] trained one epoch (read only by the tests)."""
    tmp_path = tmp_path_factory.mktemp("written")
    run_recipe(parse_recipe(_recipe(tmp_path, "first", [32])), quiet=True)
    assert (tmp_path / "store/meta.json").is_file()
    return tmp_path / "store"


def test_another_teacher_architecture_is_refused_before_anything_is_written(tmp_path, store):
    with pytest.raises(KDForgeError) as e:
        run_recipe(parse_recipe(_recipe(tmp_path, "second", [16], store)), quiet=True)
    msg = str(e.value)
    assert msg.startswith(f"teacher store {store} was written by another teacher: ") and "architecture (store " in msg
    assert len(msg.splitlines()) == 1 and "store.path" in msg
    assert not (tmp_path / "second").exists()  # checked before the teacher trained: no run directory at all


def test_another_teacher_of_the_same_architecture_is_refused_before_the_student_trains(tmp_path, store):
    with pytest.raises(KDForgeError, match=f"^teacher store {store} was written by another teacher: teacher \\(store "):
        run_recipe(parse_recipe(_recipe(tmp_path, "second", [32], store, lr=0.01)), quiet=True)
    assert (tmp_path / "second/teacher/metrics.jsonl").is_file()  # only its weights differ: known once it trained
    assert not (tmp_path / "second/student").exists()  # no student epoch logged


def test_another_checkpoint_teacher_is_refused_before_anything_is_written(tmp_path, store):
    raw = _recipe(tmp_path, "second", [32], store)
    run_recipe(parse_recipe({**raw, "run_dir": str(tmp_path / "other"), "store": None, "seed": 3}), quiet=True)
    raw["teacher"]["checkpoint"] = str(tmp_path / "other/teacher/checkpoints/best")
    with pytest.raises(KDForgeError, match=f"^teacher store {store} was written by another teacher: teacher \\(store "):
        run_recipe(parse_recipe(raw), quiet=True)
    assert not (tmp_path / "second").exists()


def test_a_store_from_before_the_architecture_field_is_still_read(store):
    meta = json.loads((store / "meta.json").read_text())
    old = {k: v for k, v in meta["fingerprint"].items() if k != "architecture"}
    compare(old, meta["fingerprint"], store)  # not an error: the field did not exist when it was written
    with pytest.raises(KDForgeError, match="does not match this run: k \\(store 4, now 8\\) differ"):
        compare(old, {**meta["fingerprint"], "k": "8"}, store)
