"""export(model, out_dir, Export(formats=...)): deployable artifacts plus a manifest.

`export` is a verb like `quantize_`: its handler is looked up by the config's type (EXPORT,
one handler, for `Export`). Formats:
  safetensors   the float weights (model.safetensors)
  hf            `save_pretrained` folder, for Hugging Face models (hf/)
  onnx          model.onnx, batch axis dynamic; ONNX Runtime is run against
                PyTorch on `example_inputs` and the max abs difference recorded
  onnx-int8     ONNX Runtime dynamic INT8 (weights int8, activations per batch)
  onnx-int8-static  ONNX Runtime static INT8 (QDQ) calibrated on `calibration`
                batches; the usual choice for CNNs
  onnx-opt, onnx-opt-int8, onnx-opt-int8-static
                the same after ONNX Runtime's graph optimizer (transformer fusions for
                BERT-style encoders); see kdforge.compress.ort_opt. The manifest records
                node counts before/after, the fusions, the INT8 settings and the CPU's
                INT8 instruction sets
Each INT8 mode has one implementation (ort_opt.quantize_dynamic_int8 / quantize_static_int8);
the plain formats call it with ONNX Runtime's defaults (per-tensor dynamic weights, constant-
weight MatMuls only, full 8-bit range), the optimized ones with the settings that fit the CPU.

ONNX export (exporter="auto") uses the TorchScript exporter for plain modules:
on this CPU it takes ~0.1 s where the dynamo exporter takes ~8 s for the same
parity; Hugging Face models go through the dynamo (torch.export) exporter. Tracing
warnings (data-dependent control flow baked into the graph) are errors here,
and the error names the layer that was running. Files are written to a
temporary folder and moved into `out_dir` only when every format succeeded.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from kdforge.compress import ort_opt
from kdforge.compress.base import Verb
from kdforge.errors import KDForgeError
from kdforge.models.hf import for_inference, hf_inner
from kdforge.rundir import write_json

FORMATS = ("safetensors", "hf", "onnx", "onnx-int8", "onnx-int8-static", *ort_opt.OPT_FORMATS)
PARITY_TOL = 1e-4
INPUT, OUTPUT = "x", "logits"
EXPORT = Verb("export", takes=("out_dir", "example_inputs", "calibration"))  # its handler: Export


@dataclass(frozen=True)
class Export:
    """Which artifacts to write, and how.

    exporter: "auto" (dynamo for Hugging Face models, else TorchScript), "torchscript" or "dynamo".
    int8_activations: onnx-opt-int8 also quantizes the activation x activation MatMuls (attention).
    gelu_approximation: onnx-opt-int8* of a transformer use the tanh GELU (FastGelu); see ort_opt.
    """

    formats: tuple[str, ...] = ("safetensors", "onnx")
    exporter: str = "auto"
    opset: int = 17
    int8_activations: bool = True
    gelu_approximation: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))  # a list from a recipe, kept immutable
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise KDForgeError(f"Export.formats: unknown {unknown or 'none given'}; valid: {', '.join(FORMATS)}")
        if self.exporter not in ("auto", "torchscript", "dynamo"):
            raise KDForgeError(f"Export.exporter: expected 'auto', 'torchscript' or 'dynamo', got {self.exporter!r}")


def export(model: nn.Module, out_dir: str | Path, config: Export = Export(), *,
           example_inputs: torch.Tensor | None = None, calibration: Iterable[torch.Tensor] | None = None) -> dict:
    """Write `config.formats` of `model` into `out_dir`; returns (and saves as manifest.json)
    {"files": {format: path}, "onnx_max_abs_diff": float, ...}.

    example_inputs: one batch (B, ...) used to trace and to check parity (needed for ONNX).
    calibration: input batches for the *-int8-static formats.
    """
    return EXPORT(model, config, out_dir=out_dir, example_inputs=example_inputs, calibration=calibration)


@EXPORT.register(Export)
def _export(model: nn.Module, config: Export, out_dir: str | Path, example_inputs: torch.Tensor | None,
            calibration: Iterable[torch.Tensor] | None) -> dict:
    formats, exporter = list(config.formats), config.exporter
    if exporter == "auto":  # HF models trip benign TorchScript tracer warnings (mask checks); torch.export handles them
        exporter = "dynamo" if hf_inner(model) is not None else "torchscript"
    needs_onnx = any(f.startswith("onnx") for f in formats)
    if needs_onnx and example_inputs is None:
        raise KDForgeError("export onnx: pass example_inputs (one batch of model inputs) to trace the model")
    static = [f for f in formats if f.endswith("int8-static")]
    if static and calibration is None:
        raise KDForgeError(f"export {static[0]}: pass calibration batches (an iterable of input tensors)")
    if "hf" in formats and hf_inner(model) is None:
        raise KDForgeError(f"export hf: {type(model).__name__} is not a Hugging Face model (no save_pretrained)")
    if is_quantized(model):
        raise KDForgeError("export: a torch INT8 (torch.ao) model cannot be exported; export the float model "
                           "and use format onnx-int8 for an INT8 deployment artifact")

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        int8 = {"activations": config.int8_activations, "gelu_approximation": config.gelu_approximation}
        manifest = _write(for_inference(model), tmp, formats, example_inputs, calibration, exporter, config.opset, int8)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            dest = out_dir / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            item.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest["files"] = {k: str(out_dir / v) for k, v in manifest["files"].items()}
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _write(model, tmp: Path, formats, example_inputs, calibration, exporter, opset, int8: dict) -> dict:
    files: dict[str, str] = {}
    info: dict = {"formats": formats}
    model.eval()
    if "safetensors" in formats:
        from safetensors.torch import save_model

        save_model(model, str(tmp / "model.safetensors"))
        files["safetensors"] = "model.safetensors"
    if "hf" in formats:
        hf_inner(model).save_pretrained(tmp / "hf", safe_serialization=True)
        files["hf"] = "hf"
    spec = ort_opt.transformer_spec(model)
    plain = [f for f in formats if f.startswith("onnx") and not (spec and f.startswith("onnx-opt"))]
    if plain:  # a BERT-style encoder's optimized formats come from their own (TorchScript) graph
        fp32 = tmp / "model.onnx"
        onnx_export(model, example_inputs, fp32, exporter=exporter, opset=opset)
        info["onnx_max_abs_diff"] = onnx_parity(model, fp32, example_inputs)
        if "onnx" in formats:
            files["onnx"] = fp32.name
        with _quiet_loggers():  # ORT logs "consider pre-processing" on the root logger
            if "onnx-int8" in formats:  # ONNX Runtime's defaults: per-tensor weights, constant-weight MatMuls only
                ort_opt.quantize_dynamic_int8(fp32, tmp / "model.int8.onnx", per_channel=False, activations=False,
                                              reduce_range=False)
                files["onnx-int8"] = "model.int8.onnx"
            if "onnx-int8-static" in formats:
                ort_opt.quantize_static_int8(fp32, tmp / "model.int8-static.onnx", calibration, transformer=False,
                                             reduce_range=False, fmt="onnx-int8-static")
                files["onnx-int8-static"] = "model.int8-static.onnx"
        if not spec and any(f.startswith("onnx-opt") for f in formats):
            info["onnx_opt"] = _write_optimized(model, tmp, formats, example_inputs, calibration, fp32, None, int8, files)
        if "onnx" not in formats:
            fp32.unlink()
    if spec and any(f.startswith("onnx-opt") for f in formats):
        traced = tmp / "model.traced.onnx"
        ort_opt.trace_transformer(model, example_inputs, traced, opset, _LogitsOnly)
        info["onnx_opt"] = _write_optimized(model, tmp, formats, example_inputs, calibration, traced, spec, int8, files)
        traced.unlink()
    if "onnx_opt" in info:
        info["onnx_opt_max_abs_diff"] = info["onnx_opt"]["max_abs_diff"]
    info["files"] = files
    return info


def _write_optimized(model, tmp: Path, formats, example, calibration, src: Path, spec, int8_opts: dict, files: dict) -> dict:
    """onnx-opt* formats from the fp32 graph `src`; every fp32 graph is checked against PyTorch
    (padded and unpadded rows for text models) before it is quantized. "max_abs_diff" is the
    fp32 artifacts' (exact); the INT8 source graph's, when it approximates GELU, is in "int8_graph"."""
    probe = _parity_inputs(model, example)
    out: dict = {"exporter": "torchscript, eager attention" if spec else "as onnx", "transformer_fusions": spec is not None,
                 "cpu": ort_opt.cpu_features(), "max_abs_diff": 0.0}

    def checked(path: Path, for_int8: bool) -> dict:
        approx = for_int8 and int8_opts["gelu_approximation"]
        stats = ort_opt.optimize(src, path, spec, for_int8=for_int8, gelu_approximation=approx)
        stats["max_abs_diff"] = onnx_parity(model, path, probe)
        if stats["max_abs_diff"] > 1e3 * PARITY_TOL:  # a wrong trace, not rounding
            raise KDForgeError(f"export onnx-opt: the optimized graph differs from the model by {stats['max_abs_diff']:.3g} "
                               f"(expected <= {PARITY_TOL:g}); use format onnx")
        if approx:  # approximated on purpose: its effect is gated with the quantization's
            stats["gelu_approximation"] = bool(stats["fused"].get("FastGelu"))
        else:
            out["max_abs_diff"] = max(out["max_abs_diff"], stats["max_abs_diff"])
        return stats

    with _quiet_loggers():  # the optimizer and quantizer log shape-inference notes on the root logger
        if "onnx-opt" in formats:
            out["fp32"] = checked(tmp / "model.opt.onnx", for_int8=False)
            files["onnx-opt"] = "model.opt.onnx"
        int8 = [f for f in formats if f.startswith("onnx-opt-int8")]
        if int8:
            # other models are quantized as exported: ORT fuses their QDQ / integer ops when a session loads them
            base = tmp / "model.opt-q-src.onnx"
            if spec:
                out["int8_graph"] = checked(base, for_int8=True)
            else:
                shutil.copyfile(src, base)
            if "onnx-opt-int8" in formats:
                out["int8"] = ort_opt.quantize_dynamic_int8(base, tmp / "model.opt.int8.onnx", activations=int8_opts["activations"])
                files["onnx-opt-int8"] = "model.opt.int8.onnx"
            if "onnx-opt-int8-static" in formats:
                out["int8_static"] = ort_opt.quantize_static_int8(base, tmp / "model.opt.int8-static.onnx", calibration,
                                                                  transformer=spec is not None, fmt="onnx-opt-int8-static")
                files["onnx-opt-int8-static"] = "model.opt.int8-static.onnx"
            base.unlink()
    return out


def _parity_inputs(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """`example`, plus for a text model with a pad id one row padded from the middle on and one
    row without padding, so a trace that baked in one padding pattern is caught."""
    pad = getattr(model, "pad_id", None)
    if pad is None or example.is_floating_point() or example.dim() != 2:
        return example
    half = example[:1].clone()
    half[:, example.shape[1] // 2:] = pad
    full = example[:1].clone()
    full[full == pad] = int(example[example != pad].min()) if (example != pad).any() else pad + 1
    return torch.cat([example, half, full])


@contextmanager
def _quiet_loggers(*names: str):
    """Only errors from these loggers (default: the root logger) while the block runs."""
    loggers = [logging.getLogger(n) for n in (names or ("",))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def is_quantized(model: nn.Module) -> bool:
    """True when any submodule is a torch.ao quantized module (inference-only, not exportable)."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def onnx_export(model: nn.Module, example: torch.Tensor, path: Path, *, exporter: str = "torchscript", opset: int = 17) -> None:
    """ONNX graph of `model` with a dynamic batch axis: input "x" (B, ...), output "logits" (B, C).

    Raises KDForgeError naming the layer that was running when tracing failed.
    """
    running: list[str] = []
    hooks = []
    model = _LogitsOnly(model).train(model.training)  # HF models return an output object: export its logits
    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda _m, _i, n=name: running.append(n)))
        hooks.append(m.register_forward_hook(lambda _m, _i, _o: _pop(running)))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("error", category=torch.jit.TracerWarning)
            if exporter == "dynamo":
                with _quiet_loggers("torch.onnx", "onnxscript"):  # "torchvision is not installed", constant-folding notes
                    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                      dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=max(opset, 18), verbose=False)
            else:
                torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=opset)
    except Exception as e:  # tracing errors come in many types
        layer = next((n for n in reversed(running) if n), None)
        name = layer.removeprefix("inner.") if layer else None
        where = f"layer {name!r} ({type(model.get_submodule(layer)).__name__})" if layer else \
            f"the forward of {type(model.inner).__name__}"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise KDForgeError(f"export onnx: cannot trace {where}: {first}") from None
    finally:
        for h in hooks:
            h.remove()


class _LogitsOnly(nn.Module):
    """model(x) -> logits tensor, for models whose forward returns an object with `.logits`."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out.logits if hasattr(out, "logits") else out


def _pop(stack: list) -> None:
    if stack:
        stack.pop()  # a forward hook must return None, or it would replace the output


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session set like a deployment: all graph optimizations, sequential
    execution (one request at a time), `threads` intra-op threads (None: ORT's default).
    ort_settings(session) reads the settings back for reports."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    sess.kdforge_settings = {"intra_op_threads": threads or "ORT default", "inter_op_threads": 1 if threads else "ORT default",
                             "graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "sequential",
                             "provider": "CPUExecutionProvider"}
    return sess


@torch.no_grad()
def onnx_parity(model: nn.Module, path: Path, example: torch.Tensor) -> float:
    """Max |ORT(x) − torch(x)| over `example`, also at a different batch size (proves the dynamic axis)."""
    sess = ort_session(path)
    worst = 0.0
    for x in (example, torch.cat([example, example[:1]])):
        ref = model(x)
        ref = (ref.logits if hasattr(ref, "logits") else ref).float().numpy()
        got = sess.run(None, {INPUT: x.numpy()})[0].astype(np.float32)
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
