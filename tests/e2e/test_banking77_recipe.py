"""The banking77-minilm recipe's ingredients end to end on a tiny local BERT: augmented transfer
set labelled through the teacher-output store, trimmed student vocabulary, the two-phase schedule
(layer-wise phase, then KD), export to HF and ONNX-optimized INT8 — and the shipped recipe holds
the benchmark's best student."""
import json
from pathlib import Path

import onnxruntime as ort
import torch

from kdforge.data import load_data
from kdforge.models.hf import load_hf
from kdforge.recipe_file import load_recipe, parse_recipe
from kdforge.workflows import run_recipe
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)

RECIPE = Path(__file__).resolve().parents[2] / "recipes/banking77-minilm.yaml"


def test_shipped_recipe_is_the_benchmarks_best_student():
    recipe = load_recipe(RECIPE)  # arm "full − augmentation": trimmed 4 x 256 student, layer-wise phase, then KD
    assert recipe.student.trim_vocab and recipe.student.layers == [1, 2, 4, 5] and recipe.student.hidden_size == 256
    assert recipe.data.augment is None and recipe.distill.intermediate_epochs == 1 and recipe.distill.epochs == 1
    assert {t.kind for t in recipe.distill.losses} == {"layerwise", "kd"} and recipe.store is not None
    assert any("int8" in f for stage in recipe.compress for f in stage.formats)


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
