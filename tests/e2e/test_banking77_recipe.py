"""The banking77-minilm recipe's ingredients end to end on a tiny local BERT: augmented transfer
set labelled through the teacher-output store, trimmed student vocabulary, the two-phase schedule
(layer-wise phase, then KD), export to HF and ONNX-optimized INT8 — and the shipped recipe holds
the benchmark's best student."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import onnxruntime as ort
import torch

from kdforge.config import TEXT_AUTO
from kdforge.data import load_data
from kdforge.models.hf import load_hf
from kdforge.recipe_file import load_recipe, parse_recipe
from kdforge.workflows import run_recipe
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/banking77-minilm.yaml"


def _benchmark(monkeypatch):
    """benchmarks/text.py (its datasets and schedules) and its _text_arms (arms, students, loss terms) as modules,
    their folder on sys.path as when the benchmark runs."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_text", ROOT / "benchmarks/text.py")
    text = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(text)
    return text, sys.modules["_text_arms"]


def test_shipped_recipe_is_the_benchmarks_default_arm_with_its_control(monkeypatch):
    """recipes/banking77-minilm.yaml trains what RESULTS.md's "recommended default" and "shipped recipe" rows measure:
    the same student, data and schedule, no `losses` (the recommended default, its search budget the benchmark's),
    and the control arm on."""
    text, arms = _benchmark(monkeypatch)
    arm = next(a for a in arms.BANKING77 if a.name == arms.DEFAULT)
    assert arm.auto and not arm.augment and not arm.layerwise
    recipe = load_recipe(RECIPE)
    wide = arms.STUDENTS[arm.student]  # the same student: layers copied, width, trimmed vocabulary
    assert recipe.student.layers == wide["layers"] and recipe.student.hidden_size == wide["hidden_size"]
    assert recipe.student.num_heads == wide["num_heads"] and recipe.student.intermediate_size == wide["intermediate_size"]
    assert recipe.student.trim_vocab == (arm.student in arms.TRIMMED)
    spec = text.DATASETS["banking77"]  # the same data and schedule
    assert recipe.data.max_length == spec["data"]["max_length"] and recipe.data.val_fraction == spec["data"]["val_fraction"]
    assert recipe.data.augment is None and recipe.distill.intermediate_epochs == 0
    assert recipe.distill.epochs == spec["epochs"] and recipe.distill.lr == 1e-3 and recipe.distill.batch_size == 16
    assert recipe.teacher.train.epochs == spec["teacher_epochs"] and recipe.teacher.train.patience == spec["teacher_patience"]
    # the losses are the recommended default, searched with the budget the benchmark's default arm used
    assert [t.model_dump() for t in recipe.distill.losses] == arms.arm_losses(arm)
    assert {k: getattr(recipe.distill.auto, k) for k in TEXT_AUTO} == TEXT_AUTO
    assert recipe.distill.control in ("auto", True) and recipe.store is not None
    assert any("int8" in f for stage in recipe.compress for f in stage.formats)


def test_text_student_without_losses_gets_the_recommended_default_and_a_text_budget():
    raw = {"data": {"name": "text", "path": "x.csv", "tokenizer": "minilm-l6"},
           "teacher": {"name": "hf", "hf": "minilm-l6", "task": "classify"},
           "student": {"name": "hf", "hf": "minilm-l6", "task": "classify", "layers": [0, 2]}}
    recipe = parse_recipe(raw)
    (kd,) = recipe.distill.losses
    assert (kd.kind, kd.temperature, kd.alpha, kd.standardize) == ("kd", "auto", "auto", True)
    assert {k: getattr(recipe.distill.auto, k) for k in TEXT_AUTO} == TEXT_AUTO
    given = parse_recipe({**raw, "distill": {"auto": {"trials": 6}}})  # a budget the recipe states is kept
    assert given.distill.auto.trials == 6 and given.distill.losses[0].temperature == "auto"


def test_banking77_style_recipe_small(tmp_path, tiny_bert_dir):  # noqa: F811
    rows = [f"item {i} says {'yes yes' if i % 3 == 0 else 'no' if i % 3 == 1 else 'maybe so'},{i % 3}" for i in range(90)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows))
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"),
           "data": {"name": "text", "path": str(tmp_path / "d.csv"), "tokenizer": str(tiny_bert_dir), "max_length": 16,
                    "augment": {"n": 2}},
           "teacher": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "attentions": True,
                       "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3}},
           "student": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "layers": [1, 3], "hidden_size": 16,
                       "num_heads": 2, "intermediate_size": 32, "attentions": True, "trim_vocab": True},
           "store": {"path": str(tmp_path / "store")},
           "distill": {"epochs": 1, "intermediate_epochs": 1, "batch_size": 16, "lr": 3e-3,
                       "losses": [{"kind": "layerwise"}, {"kind": "kd", "temperature": 2.0, "alpha": 0.7}]},
           "compress": [{"kind": "export", "formats": ["hf", "onnx", "onnx-opt-int8"]}]}
    recipe = parse_recipe(raw)
    run_recipe(recipe, quiet=True)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    data = load_data(recipe.data, 0)
    transfer = metrics["transfer_set"]
    assert transfer["augment"]["train_texts"] == len(data.train) and transfer["augment"]["variants"] > len(data.train)
    trim = transfer["trim_vocab"]
    assert trim["vocab_before"] == 100 and trim["vocab_after"] < 40  # the csv uses few of the 100 tokens
    assert "intermediate_stage" in metrics and (tmp_path / "run/student-intermediate/result.json").is_file()
    assert json.loads((tmp_path / "store/meta.json").read_text())["n"] == len(data.train) + transfer["augment"]["variants"]

    stage = next((tmp_path / "run/compress").glob("*export*"))
    manifest = json.loads((stage / "artifacts/manifest.json").read_text())
    hf = load_hf(manifest["files"]["hf"] if Path(manifest["files"]["hf"]).is_absolute() else str(stage / "artifacts" / manifest["files"]["hf"]),
                 "classify", num_labels=3).eval()
    assert hf.hf.get_input_embeddings().weight.shape[0] == trim["vocab_after"]
    x = data.test.x.clone()
    x[0, 3] = 99  # a token id the training corpus never used: read as [UNK], not out of range
    sess = ort.InferenceSession(manifest["files"]["onnx-opt-int8"], providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])  # the ORIGINAL tokenizer's ids in
    assert logits.shape == (len(x), 3) and torch.isfinite(logits).all()
    with torch.no_grad():
        torch.testing.assert_close(hf(x), torch.from_numpy(
            ort.InferenceSession(manifest["files"]["onnx"], providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]),
            rtol=0, atol=1e-4)
