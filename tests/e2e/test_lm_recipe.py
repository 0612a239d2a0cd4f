"""A causal-LM recipe end to end on tiny local models: run, store, CLI errors."""
import json

import pytest

from kdforge.recipe_file import parse_recipe
from kdforge.errors import KDForgeError
from kdforge.teacher import Teacher
from kdforge.workflows import lm as lm_workflow
from kdforge.workflows import run_recipe
from tests.conftest import kdforge_cli
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)

TEXT = "to be or not to be, that is the question: whether tis nobler in the mind to suffer. " * 30


def _raw(tmp_path, folder, **extra):
    (tmp_path / "t.txt").write_text(TEXT)
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"), "method": "token_kd",
           "data": {"name": "text-lm", "path": str(tmp_path / "t.txt"), "tokenizer": str(folder), "max_length": 24,
                    "val_fraction": 0.1, "test_fraction": 0.1},
           "teacher": {"name": "hf", "hf": str(folder), "task": "causal_lm"},
           "student": {"name": "hf", "hf": str(folder), "task": "causal_lm", "layers": [1]},
           "distill": {"epochs": 1, "batch_size": 8, "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}]}}
    raw.update(extra)
    return raw


@pytest.mark.parametrize("store", [{"k": 8}, {"k": 16, "sampling": "random", "weights": "packed"}], ids=["priority", "packed"])
def test_token_kd_recipe_with_store_never_calls_teacher(tmp_path, tiny_llama_dir, store, monkeypatch):  # noqa: F811
    live, training = {"store pass": 0, "training": 0}, [False]
    real_call, real_stage = Teacher.__call__, lm_workflow.train_stage

    def counted(self, *a, **k):  # every forward of the live teacher (a store's CachedTeacher reads instead)
        if type(self) is Teacher:
            live["training" if training[0] else "store pass"] += 1
        return real_call(self, *a, **k)

    def stage(*a, **k):
        training[0] = True
        try:
            return real_stage(*a, **k)
        finally:
            training[0] = False

    monkeypatch.setattr(Teacher, "__call__", counted)
    monkeypatch.setattr(lm_workflow, "train_stage", stage)
    raw = _raw(tmp_path, tiny_llama_dir, store={"path": str(tmp_path / "store"), **store})
    res = run_recipe(parse_recipe(raw), quiet=True)
    assert live["store pass"] > 0 and live["training"] == 0  # the teacher ran for the store, never while the student trained
    assert res["teacher_calls"] > 0  # the student read its targets from the store
    meta = json.loads((tmp_path / "store/meta.json").read_text())
    assert meta["sampling"] == store.get("sampling", "priority") and (meta["values"] == "packed-draws") == ("weights" in store)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["student"]["perplexity"] > 1 and "accuracy" in metrics["student"]
    assert (tmp_path / "store/meta.json").exists() and (tmp_path / "run/report.md").exists()


def test_cli_bad_model_folder_and_empty_text_exit_2(tmp_path, tiny_llama_dir):  # noqa: F811
    import yaml

    raw = _raw(tmp_path, tiny_llama_dir)
    raw["teacher"]["hf"] = str(tmp_path)  # a folder with no model in it
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    r = kdforge_cli("run", str(tmp_path / "r.yaml"))
    assert r.returncode == 2 and "is not a model folder" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    raw = _raw(tmp_path, tiny_llama_dir)
    (tmp_path / "e.txt").write_text("")
    raw["data"]["path"] = str(tmp_path / "e.txt")
    with pytest.raises(KDForgeError, match="is empty"):
        run_recipe(parse_recipe(raw), quiet=True)
