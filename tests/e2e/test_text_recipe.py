"""A text-classification recipe end to end on a tiny local BERT: teacher fine-tuning, KD with
logits + hint + attention terms, then export to ONNX fp32 / INT8 through the compress stage."""
import json

import onnxruntime as ort
import torch

from kdforge.config import TEXT_AUTO
from kdforge.recipe_file import parse_recipe
from kdforge.data import load_data
from kdforge.workflows import run_recipe
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)


def test_text_recipe_distils_and_exports_int8_onnx(tmp_path, tiny_bert_dir):  # noqa: F811
    rows = [f"item {i} says {'yes yes' if i % 3 == 0 else 'no' if i % 3 == 1 else 'maybe so'},{i % 3}" for i in range(90)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows))
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"),
           "data": {"name": "text", "path": str(tmp_path / "d.csv"), "tokenizer": str(tiny_bert_dir), "max_length": 12},
           "teacher": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "attentions": True,
                       "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3}},
           "student": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "layers": [0, 2],
                       "hidden_size": 16, "num_heads": 2, "intermediate_size": 32, "attentions": True},
           "distill": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "losses": [
               {"kind": "kd", "temperature": 2.0, "alpha": 0.7},
               {"kind": "hint", "student_layer": "hidden.2", "teacher_layer": "hidden.4", "weight": 0.05},
               {"kind": "attention_kl", "student_layer": "attn.1", "teacher_layer": "attn.3", "weight": 0.5}]},
           "compress": [{"kind": "export", "formats": ["onnx", "onnx-int8"]}]}
    recipe = parse_recipe(raw)
    run_recipe(recipe, quiet=True)
    stage = next((tmp_path / "run/compress").glob("*export*"))
    manifest = json.loads((stage / "artifacts/manifest.json").read_text())
    assert manifest["onnx_max_abs_diff"] <= 1e-4
    data = load_data(recipe.data, 0)
    sess = ort.InferenceSession(manifest["files"]["onnx-int8"], providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(sess.run(None, {"x": data.test.x.numpy()})[0])  # int64 token ids in, padding masked inside
    assert logits.shape == (len(data.test), 3) and torch.isfinite(logits).all()


def test_text_recipe_without_losses_searches_on_the_text_budget_beside_its_control(tmp_path, tiny_bert_dir):  # noqa: F811
    """The recommended default reaches text students: standardized KD, T and α searched with the text budget
    (trial 1 the labels alone), the control trained beside it, and the run keeping the better one on validation."""
    rows = [f"item {i} says {'yes yes' if i % 3 == 0 else 'no' if i % 3 == 1 else 'maybe so'},{i % 3}" for i in range(90)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows))
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"),
           "data": {"name": "text", "path": str(tmp_path / "d.csv"), "tokenizer": str(tiny_bert_dir), "max_length": 12},
           "teacher": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3}},
           "student": {"name": "hf", "hf": str(tiny_bert_dir), "task": "classify", "layers": [0], "hidden_size": 16,
                       "num_heads": 2, "intermediate_size": 32},
           "distill": {"epochs": 2, "batch_size": 16, "lr": 3e-3}}
    run_recipe(parse_recipe(raw), quiet=True)
    auto = json.loads((tmp_path / "run/auto/auto.json").read_text())
    assert len(auto["trials"]) == TEXT_AUTO["trials"] and auto["epochs_per_trial"] == TEXT_AUTO["epochs"]
    assert auto["trials"][1]["0.alpha"] == 0.0  # the labels alone is always tried
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    sel = metrics["selection"]
    assert sel["kept"] == ("control" if sel["val"]["control"] > sel["val"]["distilled"] else "distilled")
    resolved = (tmp_path / "run/recipe.yaml").read_text()
    assert "standardize: true" in resolved
