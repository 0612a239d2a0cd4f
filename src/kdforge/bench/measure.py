"""measure(model_or_artifact, dataset): what a deployment decision needs, for a
torch module or an ONNX Runtime model.

  params            parameter count (int8 packed weights and ONNX initializers included)
  size_bytes        bytes on disk: the .onnx file, or the serialized state dict
  latency_ms        per batch size: p50 / p95 / mean over `repeats` timed calls after `warmup`
  throughput        samples per second at each batch size (B / mean latency)
  peak_memory_mb    process RSS high-water mark above the pre-run level during a
                    batch of the largest size (CPU; includes allocator effects)
  accuracy, loss    the task metric on `dataset` (classification)
  threads           intra-op threads used (torch and ORT are set to the same count)
  runtime           how the artifact ran: torch threads, or the ONNX Runtime session settings
                    (intra/inter-op threads, graph optimization level, execution mode)

Inputs are the first B samples of `dataset` so every artifact sees the same batch.
"""
from __future__ import annotations

import io
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.compress.export import ort_session
from kdforge.compress.quantize import input_dtype
from kdforge.errors import KDForgeError
from kdforge.train.evaluate import model_device

Runner = Callable[[torch.Tensor], torch.Tensor]


def load_artifact(obj: Any, threads: int | None = None) -> tuple[str, Any]:
    """("torch", module) | ("onnx", InferenceSession) from a module, a session or a path."""
    if isinstance(obj, nn.Module):
        return "torch", obj.eval()
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if path.is_dir() and (path / "model.onnx").exists():
            path = path / "model.onnx"
        if path.suffix != ".onnx" or not path.is_file():
            raise KDForgeError(f"bench: {path} is not an .onnx file (or a folder with model.onnx)")
        sess = ort_session(path, threads or torch.get_num_threads())
        sess.kdforge_path = path
        return "onnx", sess
    if type(obj).__name__ == "InferenceSession":
        return "onnx", obj
    raise KDForgeError(f"bench: cannot measure a {type(obj).__name__}; give an nn.Module or an .onnx path")


def make_runner(kind: str, obj: Any) -> Runner:
    """x (B, ...) float32 -> logits (B, C) float32 tensor, no autograd."""
    if kind == "onnx":
        name = obj.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(obj.run(None, {name: x.numpy()})[0])

        return run_onnx
    dtype, device = input_dtype(obj), model_device(obj)

    def run_torch(x: torch.Tensor) -> torch.Tensor:  # on the model's own device; the output stays there
        with torch.inference_mode():
            out = obj(x.to(device, dtype) if x.is_floating_point() else x.to(device))  # token ids stay integers
        return (out.logits if hasattr(out, "logits") else out).float()

    return run_torch


def count_params(kind: str, obj: Any) -> int | None:
    if kind == "onnx":
        import onnx

        if getattr(obj, "kdforge_path", None) is None:
            return None  # a session built elsewhere: its file is unknown

        graph = onnx.load(str(obj.kdforge_path), load_external_data=False).graph
        return int(sum(np.prod(t.dims) for t in graph.initializer))
    n = sum(p.numel() for p in obj.parameters())
    for m in obj.modules():  # torch.ao dynamic-quantized layers hold packed weights, not Parameters
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            n += m.weight().numel() + (m.bias().numel() if m.bias() is not None else 0)
    return int(n)


def size_bytes(kind: str, obj: Any) -> int | None:
    if kind == "onnx":
        if getattr(obj, "kdforge_path", None) is None:
            return None
        return onnx_file_bytes(Path(obj.kdforge_path))
    buf = io.BytesIO()
    torch.save(obj.state_dict(), buf)
    return buf.getbuffer().nbytes


def onnx_file_bytes(path: Path) -> int:
    """Bytes of an .onnx file plus the external-data files its initializers point to
    (the dynamo exporter keeps large weights in `model.onnx.data`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    external = {entry.value for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                for entry in t.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in external)


def time_calls(run: Runner, x: torch.Tensor, warmup: int = 5, repeats: int = 30) -> list[float]:
    """Seconds per call of run(x), `repeats` times after `warmup` untimed calls."""
    for _ in range(warmup):
        run(x)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = run(x)
        if y.is_cuda:  # kernels run asynchronously: the clock is read once the GPU has finished
            torch.cuda.synchronize(y.device)
        out.append(time.perf_counter() - t0)
    return out


def summarize(times: list[float], batch: int) -> dict[str, float]:
    ms = sorted(t * 1e3 for t in times)
    mean = statistics.fmean(ms)
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": mean,
            "throughput": batch / (mean / 1e3)}


def peak_memory_mb(run: Runner, x: torch.Tensor) -> float:
    """RSS high-water mark above the level before the call, sampled every ~1 ms."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(3):
        run(x)
    stop.set()
    t.join()
    return (peak[0] - base) / 2**20


def _as_input(x) -> torch.Tensor:
    """Features as float32; token ids keep their integer dtype (an ONNX graph expects int64)."""
    t = torch.as_tensor(x)
    return t.float() if t.is_floating_point() else t


def stack_inputs(dataset, n: int) -> torch.Tensor:
    """The first n inputs of `dataset` as one (n, ...) batch (repeated if it is shorter)."""
    xs = [dataset[i % len(dataset)] for i in range(n)]
    xs = [x["x"] if isinstance(x, dict) else x[0] for x in xs]
    return torch.stack([_as_input(x) for x in xs])


def task_metrics(run: Runner, dataset, batch_size: int = 256) -> dict[str, float]:
    """accuracy and cross-entropy of `run` over the whole `dataset`."""
    logits, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([_as_input(it[0]) for it in items])
        labels.append(torch.as_tensor([int(it[1]) for it in items]))
        logits.append(run(x).cpu())
    z, y = torch.cat(logits), torch.cat(labels)
    return {"accuracy": (z.argmax(-1) == y).float().mean().item(), "loss": F.cross_entropy(z, y).item()}


def measure(
    model_or_artifact: Any,
    dataset=None,
    *,
    example: torch.Tensor | None = None,
    batch_sizes: Iterable[int] = (1, 32),
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    memory: bool = True,
) -> dict:
    """Measure one model. `dataset` yields (x, y) (gives inputs and the metric); without it,
    `example` (1, ...) is repeated to make batches and no metric is computed.

    threads: intra-op threads for torch and ORT alike (restored afterwards). On a
    busy machine use 1: with 2+ threads, a descheduled worker stalls every call.
    """
    if dataset is None and example is None:
        raise KDForgeError("bench: give a dataset (for inputs and the metric) or an example input")
    before = torch.get_num_threads()
    threads = threads or before
    torch.set_num_threads(threads)
    try:
        return _measure(model_or_artifact, dataset, example, list(batch_sizes), warmup, repeats, threads, memory)
    finally:
        torch.set_num_threads(before)


def _measure(model_or_artifact, dataset, example, batch_sizes, warmup, repeats, threads, memory) -> dict:
    kind, obj = load_artifact(model_or_artifact, threads)
    run = make_runner(kind, obj)
    out: dict[str, Any] = {"kind": kind, "params": count_params(kind, obj), "size_bytes": size_bytes(kind, obj),
                           "threads": threads, "warmup": warmup, "repeats": repeats, "latency_ms": {},
                           "runtime": getattr(obj, "kdforge_settings", None) or {"torch_threads": threads}}
    for b in batch_sizes:
        x = stack_inputs(dataset, b) if dataset is not None else example[:1].expand(b, *example.shape[1:]).contiguous()
        out["latency_ms"][str(b)] = summarize(time_calls(run, x, warmup, repeats), b)
    if memory:
        x = stack_inputs(dataset, max(batch_sizes)) if dataset is not None else example[:1].expand(max(batch_sizes), *example.shape[1:]).contiguous()
        out["peak_memory_mb"] = peak_memory_mb(run, x)
        if kind != "onnx" and model_device(obj).type == "cuda":  # the GPU's own high-water mark
            torch.cuda.reset_peak_memory_stats(model_device(obj))
            run(x)
            out["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated(model_device(obj)) / 2**20
    if dataset is not None:
        out.update(task_metrics(run, dataset))
    return out


INT8_OPS = ("Integer", "Quant", "QLinear", "QAttention", "QEmbed", "QGemm")  # substrings of integer-kernel op types


def onnx_op_time(path: str | Path, x: torch.Tensor, threads: int = 1, runs: int = 5) -> dict[str, float]:
    """Share of kernel time per op type of an ONNX model on input `x` (ONNX Runtime's profiler,
    `runs` calls after one warm-up); shares sum to 1, largest first."""
    import json
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    spent: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            spent[op] = spent.get(op, 0.0) + e["dur"]
    total = sum(spent.values()) or 1.0
    return {op: t / total for op, t in sorted(spent.items(), key=lambda kv: -kv[1])}


def int8_share(shares: dict[str, float]) -> float:
    """The part of `onnx_op_time` shares spent in integer (INT8) kernels."""
    return sum(v for op, v in shares.items() if any(s in op for s in INT8_OPS))
