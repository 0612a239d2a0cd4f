import copy
import json
from pathlib import Path

import pytest

from tests.hf_tiny import tiny_bert_classifier
import torch
from torch import nn

from kdforge.bench.measure import measure
from kdforge.compress import Export, Int8Dynamic, export, ort_opt, quantize_
from kdforge.errors import KDForgeError


def test_onnx_parity_dynamic_batch_and_int8_accuracy(tmp_path, digits, digits_cnn):
    calib = [digits.train.x[i:i + 32] for i in range(0, 256, 32)]
    man = export(digits_cnn, tmp_path / "out", Export(["safetensors", "onnx", "onnx-int8", "onnx-int8-static"]),
                 example_inputs=digits.val.x[:8], calibration=calib)
    assert man["onnx_max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "out/manifest.json").read_text())["files"] == man["files"]
    import onnxruntime as ort

    sess = ort.InferenceSession(man["files"]["onnx"], providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"
    accs = {f: measure(man["files"][f], digits.test, batch_sizes=(32,), repeats=2, memory=False)["accuracy"]
            for f in ("onnx", "onnx-int8", "onnx-int8-static")}
    assert accs["onnx-int8"] >= accs["onnx"] - 0.01
    assert accs["onnx-int8-static"] >= accs["onnx"] - 0.01


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Gate()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: a trace would bake one branch in
            return x
        return -x


def test_untraceable_model_error_names_the_layer(tmp_path):
    with pytest.raises(KDForgeError, match="layer 'body' \\(Gate\\)"):
        export(Branchy(), tmp_path / "o", Export(["onnx"]), example_inputs=torch.randn(2, 4))
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_unknown_format_and_missing_inputs(tmp_path, digits_mlp):
    with pytest.raises(KDForgeError, match="unknown \\['tflite'\\]; valid: safetensors"):
        export(digits_mlp, tmp_path / "o", Export(["onnx", "tflite"]))
    with pytest.raises(KDForgeError, match="example_inputs"):
        export(digits_mlp, tmp_path / "o", Export(["onnx"]))
    with pytest.raises(KDForgeError, match="not a Hugging Face model"):
        export(digits_mlp, tmp_path / "o", Export(["hf"]))
    with pytest.raises(KDForgeError, match="torch INT8"):
        export(quantize_(copy.deepcopy(digits_mlp), Int8Dynamic()), tmp_path / "o", Export(["safetensors"]))
    assert not (tmp_path / "o").exists()


def test_hf_save_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg)
    man = export(model, tmp_path / "o", Export(["hf"]))
    reloaded = transformers.BertForSequenceClassification.from_pretrained(man["files"]["hf"])
    torch.testing.assert_close(reloaded.classifier.weight, model.classifier.weight)


def test_hf_classifier_to_onnx_int8(tmp_path):
    pytest.importorskip("transformers")
    model = tiny_bert_classifier(num_hidden_layers=1)
    ids = torch.randint(1, 50, (2, 7))
    man = export(model, tmp_path / "o", Export(["onnx", "onnx-int8"]), example_inputs=ids)  # dynamo exporter for HF
    assert man["onnx_max_abs_diff"] <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(man["files"]["onnx-int8"], providers=["CPUExecutionProvider"])
    more = torch.randint(1, 50, (5, 7))
    got = torch.from_numpy(sess.run(None, {"x": more.numpy()})[0])
    assert got.shape == (5, 3)
    assert (got - model(more).logits).abs().max() < 0.1


def test_kdforge_hf_wrapper_exports_onnx_and_hf_folder(tmp_path):
    """A trained kdforge text student (the wrapper, attention taps on) deploys: ONNX with the
    padding mask inside the graph, INT8, and a save_pretrained folder."""
    transformers = pytest.importorskip("transformers")
    from kdforge.models.hf import wrap

    model = wrap(tiny_bert_classifier(num_hidden_layers=2), "classify", pad_id=0, attentions=True)
    ids = torch.randint(1, 50, (2, 9))
    ids[1, 5:] = 0  # padding: the mask is computed from the ids inside the exported graph
    man = export(model, tmp_path / "o", Export(["onnx", "onnx-int8", "hf"]), example_inputs=ids)
    assert man["onnx_max_abs_diff"] <= 1e-4
    assert model.attentions  # the export used a copy; the caller's taps are untouched
    import onnxruntime as ort

    sess = ort.InferenceSession(man["files"]["onnx"], providers=["CPUExecutionProvider"])
    more = torch.randint(1, 50, (4, 9))
    more[:, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(sess.run(None, {"x": more.numpy()})[0]), model(more), atol=1e-4, rtol=1e-4)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(man["files"]["hf"])
    torch.testing.assert_close(reloaded.classifier.weight, model.hf.classifier.weight)


def test_every_onnx_int8_format_goes_through_the_one_implementation_of_its_mode(tmp_path, digits, digits_mlp, monkeypatch):
    """Plain and optimized INT8 formats call the same dynamic / static quantizer, each with its settings."""
    calls = []
    for name in ("quantize_dynamic_int8", "quantize_static_int8"):
        real = getattr(ort_opt, name)
        monkeypatch.setattr(ort_opt, name, lambda src, dst, *a, _real=real, _name=name, **kw:
                            calls.append((_name, Path(dst).name, kw.get("reduce_range"))) or _real(src, dst, *a, **kw))
    formats = ["onnx-int8", "onnx-int8-static", "onnx-opt-int8", "onnx-opt-int8-static"]
    man = export(digits_mlp, tmp_path / "o", Export(formats), example_inputs=digits.val.x[:4], calibration=[digits.train.x[:32]])
    assert sorted(calls) == [("quantize_dynamic_int8", "model.int8.onnx", False), ("quantize_dynamic_int8", "model.opt.int8.onnx", None),
                             ("quantize_static_int8", "model.int8-static.onnx", False),
                             ("quantize_static_int8", "model.opt.int8-static.onnx", None)]
    assert sorted(man["files"]) == sorted(formats)
