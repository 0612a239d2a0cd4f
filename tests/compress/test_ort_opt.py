"""Optimized ONNX formats: the fused graph is smaller and computes what the plain export
computes; INT8 of it stays close; the INT8 settings follow the CPU's instruction sets."""
import numpy as np
import pytest
import torch

from kdforge.bench.measure import measure
from kdforge.compress import Export, export, ort_opt
from kdforge.compress.export import ort_session
from tests.hf_tiny import tiny_bert_classifier

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bert_exports(tmp_path_factory):
    pytest.importorskip("transformers")
    from kdforge.models.hf import wrap

    model = wrap(tiny_bert_classifier(num_hidden_layers=2), "classify", pad_id=0, attentions=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (4, 16), generator=g)
    ids[1, 9:] = 0  # padding: the mask is computed from the ids inside the graph
    calib = [torch.randint(1, 50, (8, 16), generator=g) for _ in range(4)]
    man = export(model, tmp_path_factory.mktemp("bert") / "o",
                 Export(["onnx", "onnx-opt", "onnx-opt-int8", "onnx-opt-int8-static"]), example_inputs=ids, calibration=calib)
    return model, man


def _run(path, x):
    return ort_session(path, 1).run(None, {"x": x.numpy()})[0]


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 50, (6, 16), generator=g)
    x[0, 3:] = 0
    x[2, 12:] = 0
    return x


def test_fused_transformer_graph_has_fewer_nodes(bert_exports):
    _, man = bert_exports
    fp32 = man["onnx_opt"]["fp32"]
    assert fp32["nodes_after"] < fp32["nodes_before"]
    assert fp32["nodes_after"] == ort_opt.count_nodes(man["files"]["onnx-opt"])
    ops = ort_opt.op_counts(man["files"]["onnx-opt"])
    assert ops.get("Attention") == 2 and fp32["fused"]["Attention"] == 2  # one per layer
    assert ops.get("SkipLayerNormalization") == 4 and ops.get("EmbedLayerNormalization") == 1


def test_optimized_graph_matches_unoptimized(bert_exports):
    model, man = bert_exports
    x = _batch()  # another batch size and padding pattern than the trace
    plain, opt = _run(man["files"]["onnx"], x), _run(man["files"]["onnx-opt"], x)
    assert np.abs(opt - plain).max() <= 1e-4
    with torch.no_grad():
        assert np.abs(opt - model(x).numpy()).max() <= 1e-4
    assert man["onnx_opt_max_abs_diff"] <= 1e-4


def test_int8_of_optimized_graph_stays_close(bert_exports):
    _, man = bert_exports
    x = _batch(2)
    ref = _run(man["files"]["onnx"], x)
    for fmt in ("onnx-opt-int8", "onnx-opt-int8-static"):
        got = _run(man["files"][fmt], x)
        assert np.abs(got - ref).max() < 0.1, fmt
        ops = ort_opt.op_counts(man["files"][fmt])
        assert ops.get("DynamicQuantizeLinear", 0) + ops.get("QuantizeLinear", 0) > 0, fmt  # really INT8
    assert man["onnx_opt"]["int8_static"]["calibration_batches"] == 4


def test_int8_quantizes_attention_products_and_approximates_gelu(bert_exports):
    _, man = bert_exports
    info = man["onnx_opt"]
    assert info["int8"]["activations"] and info["int8_graph"]["gelu_approximation"]
    ops = ort_opt.op_counts(man["files"]["onnx-opt-int8"])
    assert "MatMul" not in ops  # every MatMul, QK^T and .V included, is an integer one
    assert ops.get("MatMulInteger", 0) > 0 and ops.get("FastGelu") == 2 and "BiasGelu" not in ops
    assert info["int8_graph"]["max_abs_diff"] < 1e-2  # the tanh GELU: close, not exact
    assert man["onnx_opt_max_abs_diff"] <= 1e-4  # the fp32 artifact stays exact


def test_int8_options_off_keep_onnx_runtime_defaults(tmp_path):
    pytest.importorskip("transformers")
    from kdforge.models.hf import wrap

    model = wrap(tiny_bert_classifier(num_hidden_layers=1), "classify", pad_id=0, attentions=True)
    ids = torch.randint(1, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    man = export(model, tmp_path / "o", Export(["onnx-opt-int8"], int8_activations=False, gelu_approximation=False),
                 example_inputs=ids)
    ops = ort_opt.op_counts(man["files"]["onnx-opt-int8"])
    assert ops.get("MatMul") == 2 and "FastGelu" not in ops  # the attention products stay fp32, GELU exact
    assert not man["onnx_opt"]["int8"]["activations"] and "gelu_approximation" not in man["onnx_opt"]["int8_graph"]


def test_plain_model_gets_offline_optimizations(tmp_path, digits, digits_cnn):
    calib = [digits.train.x[i:i + 32] for i in range(0, 256, 32)]
    man = export(digits_cnn, tmp_path / "o", Export(["onnx", "onnx-opt", "onnx-opt-int8-static"]),
                 example_inputs=digits.val.x[:8], calibration=calib)
    info = man["onnx_opt"]
    assert not info["transformer_fusions"] and info["fp32"]["nodes_after"] <= info["fp32"]["nodes_before"]
    assert man["onnx_opt_max_abs_diff"] <= 1e-4
    accs = {f: measure(man["files"][f], digits.test, batch_sizes=(32,), repeats=2, memory=False)["accuracy"]
            for f in ("onnx", "onnx-opt", "onnx-opt-int8-static")}
    assert accs["onnx-opt"] == pytest.approx(accs["onnx"], abs=1e-9)
    assert accs["onnx-opt-int8-static"] >= accs["onnx"] - 0.01


@pytest.mark.parametrize("flags,reduce", [({"avx512_vnni"}, False), ({"avx_vnni"}, False), ({"avx2", "avx512f"}, True)])
def test_int8_reduce_range_follows_cpu(tmp_path, digits, digits_mlp, monkeypatch, flags, reduce):
    monkeypatch.setattr(ort_opt, "cpu_features", lambda: {f: f in flags for f in ort_opt.CPU_FLAGS})
    man = export(digits_mlp, tmp_path / "o", Export(["onnx-opt-int8"]), example_inputs=digits.val.x[:4])
    assert man["onnx_opt"]["int8"]["reduce_range"] is reduce
    assert man["onnx_opt"]["cpu"] == {f: f in flags for f in ort_opt.CPU_FLAGS}


def test_cpu_features_reads_proc_cpuinfo():
    feats = ort_opt.cpu_features()
    assert set(feats) == set(ort_opt.CPU_FLAGS)
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    assert feats == {f: f in flags for f in ort_opt.CPU_FLAGS}
