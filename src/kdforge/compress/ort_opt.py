"""ONNX Runtime graph optimization, and the one implementation of each ONNX INT8 mode (dynamic,
static QDQ) that every `export` format uses; the optimized formats set it to fit the CPU.

  onnx-opt               fp32 graph after ONNX Runtime's optimizer. BERT-style Hugging Face
                         encoders get the transformer fusions (`onnxruntime.transformers.optimizer`,
                         model type "bert": embedding + LayerNorm, attention, skip + LayerNorm,
                         bias + GELU); other models get ORT's hardware-independent offline
                         graph optimizations (constant folding, Gemm/activation fusions).
  onnx-opt-int8          dynamic INT8 (per-channel int8 weights, activations quantized per batch)
                         of an optimized graph
  onnx-opt-int8-static   static INT8 (QDQ, per-channel weights) of the same graph, activation
                         ranges calibrated on training batches

Why the TorchScript exporter here: the fusion patterns match the graph of HF's eager attention
as the TorchScript exporter writes it; the dynamo graph of sdpa fuses no attention at all
(measured on the MiniLM student: 0 Attention, 6 SkipLayerNorm). The one tracer warning HF
raises is a shape check of the padding mask (the sequence length is fixed in the graph);
the exported graph is checked against PyTorch on padded and unpadded rows.

Why the INT8 graphs keep attention and skip+LayerNorm unfused: the quantizer then turns
every MatMul, the attention products included, into int8 kernels (VNNI where the CPU has
it), and ORT's SkipLayerNormalization kernel was the slow one at batch 32. Measured on the
MiniLM student (AMD EPYC, avx512_vnni, 1 thread, batch 32, seq 128, median of 30 calls with
all variants alternating): PyTorch fp32 282 ms, fully fused + dynamic INT8 192 ms,
attention/skip unfused + dynamic INT8 per-channel 146 ms.

Dynamic INT8 quantizes the activation x activation MatMuls too (`activations`, ONNX
Runtime's `MatMulConstBOnly` off; `quantize_dynamic` defaults it on, which left the
attention products QK^T and .V in fp32: 26% of the student's INT8 time at length 128), and
the INT8 source graph may take ORT's tanh approximation of GELU (`gelu_approximation`,
FastGelu; the exact erf GELU was 11%). Measured on the BBC News student (3 x 128, length
128, 1 thread, batch 32, alternating calls): fused QAttention 1.58x PyTorch fp32,
unfused with weight-only MatMuls 1.92x, all MatMuls int8 2.01x, + FastGelu 2.08x; test
accuracy unchanged. Both change the numbers by quantization-sized amounts, so the INT8
artifact's accuracy gate covers them; the fp32 formats never approximate.

On a CPU without VNNI, u8 x s8 products can saturate in the 16-bit intermediate of the
AVX2/AVX-512 kernels; weights are then quantized to 7 bits (`reduce_range`), as ONNX Runtime
advises.
"""
from __future__ import annotations

import collections
import copy
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from kdforge.errors import KDForgeError
from kdforge.models.hf import hf_inner

OPT_FORMATS = ("onnx-opt", "onnx-opt-int8", "onnx-opt-int8-static")
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}  # fusions of model type "bert"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu_features() -> dict[str, bool]:
    """The INT8-relevant instruction sets of this CPU, from /proc/cpuinfo (all False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {f: f in flags for f in CPU_FLAGS}


def has_vnni(features: dict[str, bool] | None = None) -> bool:
    f = features or cpu_features()
    return f["avx512_vnni"] or f["avx_vnni"] or f["amx_int8"]


def transformer_spec(model: nn.Module) -> dict | None:
    """{"model_type": "bert", "num_heads", "hidden_size"} for a BERT-style HF encoder, else None."""
    hf = hf_inner(model)
    cfg = getattr(hf, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in BERT_LIKE or getattr(cfg, "is_decoder", False):
        return None
    return {"model_type": "bert", "num_heads": cfg.num_attention_heads, "hidden_size": cfg.hidden_size}


def count_nodes(path: str | Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def op_counts(path: str | Path) -> dict[str, int]:
    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node))


def eager_copy(model: nn.Module) -> nn.Module:
    """An eval copy whose HF attention is the eager implementation (what the fusions match)."""
    m = copy.deepcopy(model).eval()
    hf_inner(m).set_attn_implementation("eager")
    return m


def trace_transformer(model: nn.Module, example: torch.Tensor, path: Path, opset: int, wrap) -> None:
    """TorchScript ONNX export of a BERT-style encoder, batch axis dynamic; `wrap` makes logits the output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)  # "aten::index ... combination of ONNX operators"
        warnings.filterwarnings("error", category=torch.jit.TracerWarning)
        # the padding-mask length check: the sequence length is fixed in the graph, so it cannot change
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"transformers\.masking_utils")
        try:
            torch.onnx.export(wrap(eager_copy(model)), (example,), str(path), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset)
        except Exception as e:  # tracing errors come in many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise KDForgeError(f"export onnx-opt: cannot trace {type(hf_inner(model)).__name__}: {first}") from None


def optimize(src: Path, dst: Path, spec: dict | None, *, for_int8: bool, gelu_approximation: bool = False) -> dict:
    """Write the optimized graph of `src` to `dst`; returns {"nodes_before", "nodes_after", "fused"}.

    spec: transformer_spec(model) (None: ORT's offline graph optimizations).
    for_int8: keep attention and skip+LayerNorm unfused (see the module docstring).
    gelu_approximation: fuse GELU as ORT's tanh approximation (FastGelu) instead of the exact
    erf (BiasGelu); transformer graphs only.
    """
    before = count_nodes(src)
    if spec is not None:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        options.enable_attention = not for_int8
        options.enable_skip_layer_norm = not for_int8
        options.enable_gelu_approximation = gelu_approximation
        opt = optimize_model(str(src), model_type=spec["model_type"], num_heads=spec["num_heads"],
                             hidden_size=spec["hidden_size"], opt_level=0, optimization_options=options)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(dst))
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # no CPU-layout-specific ops
        opts.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
        fused = {}
    return {"nodes_before": before, "nodes_after": count_nodes(dst), "fused": fused}


def quantize_dynamic_int8(src: Path, dst: Path, *, per_channel: bool = True, activations: bool = True,
                          reduce_range: bool | None = None) -> dict:
    """Dynamic INT8 of `src` (int8 weights, activations quantized per batch); returns its settings.

    activations: also quantize MatMuls whose both inputs are activations (attention QK^T and .V);
    False quantizes only the MatMuls with a constant weight (ONNX Runtime's default).
    reduce_range: 7-bit weights; None: when the CPU has no VNNI (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = not has_vnni() if reduce_range is None else reduce_range
    # com.microsoft fused ops defeat ONNX shape inference: tensors of unknown type are float
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": not activations})
    return {"method": "dynamic", "per_channel": per_channel, "reduce_range": reduce_range, "activations": activations}


def quantize_static_int8(src: Path, dst: Path, calibration: Iterable, *, transformer: bool, reduce_range: bool | None = None,
                         fmt: str = "int8-static") -> dict:
    """Static INT8 (QDQ, per-channel weights) with activation ranges from `calibration` batches.

    transformer: quantize the MatMuls only (the pooler/classifier Gemm on a gathered [CLS]
    row has no calibrated bias scale and is a negligible share of the time).
    reduce_range: 7-bit weights; None: when the CPU has no VNNI. fmt: the format named in errors."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    batches = [b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b) for b in calibration]
    batches = [b for b in batches if len(b)]  # an empty batch breaks the calibration session
    if not batches:
        raise KDForgeError(f"export {fmt}: calibration gave no batches")
    batches = [b if np.issubdtype(b.dtype, np.integer) else b.astype(np.float32) for b in batches]
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {name: b}

    reduce_range = not has_vnni() if reduce_range is None else reduce_range
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"] if transformer else None,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "static QDQ", "per_channel": True, "reduce_range": reduce_range, "calibration_batches": len(batches)}
