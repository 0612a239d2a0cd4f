"""CPU latency of a text teacher and student side by side: PyTorch fp32, ONNX Runtime fp32 and
ONNX Runtime INT8 (dynamic), at batch 1 and 32 and a fixed sequence length; the artifacts'
test accuracy comes from the same ONNX files. Used by benchmarks/text.py."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdforge.bench.measure import load_artifact, make_runner, size_bytes, task_metrics
from kdforge.compress.export import export
from kdforge.data.text import TokenDataset
from kdforge.models.hf import for_inference

BATCHES = (1, 32)


def _pad(x: torch.Tensor, length: int, pad_id: int) -> torch.Tensor:
    """(B, L) ids -> (B, length): padding is masked out, so logits do not change."""
    return F.pad(x, (0, length - x.shape[1]), value=pad_id) if x.shape[1] < length else x[:, :length]


def alternating_ms(runners: dict, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median ms of one call per runner; the runners take turns call by call so a busy shared
    CPU slows them alike (the ratios are the result, absolute times are noisy)."""
    times: dict[str, list[float]] = {n: [] for n in runners}
    for i in range(reps + 2):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    return {n: 1000 * sorted(t)[len(t) // 2] for n, t in times.items()}


def latency_table(teacher, student, student_name: str, test, out_dir: Path, *, quick: bool = False,
                  length: int = 128) -> dict:
    """{"rows": {name: {"ms": {b: ms}, "speedup": {b: x}, "accuracy": float | None}}, "lines": markdown}."""
    pad_id = student.pad_id
    test = TokenDataset(_pad(test.x, length, pad_id), test.y)
    runners, accuracy, sizes = {}, {}, {}
    for role, model in (("teacher", teacher), ("student", student)):
        m = for_inference(model)  # no attention taps: the fused sdpa kernel, as deployed
        runners[f"{role} fp32 (PyTorch)"] = make_runner("torch", m)
        files = export(m, out_dir / role, ["onnx", "onnx-int8"], example_inputs=test.x[:2])["files"]
        for fmt, label in (("onnx", "ONNX fp32"), ("onnx-int8", "ONNX INT8")):
            kind, sess = load_artifact(files[fmt], torch.get_num_threads())
            name = f"{role} {label}"
            runners[name] = make_runner(kind, sess)
            accuracy[name] = task_metrics(runners[name], test, batch_size=64)["accuracy"]
            sizes[name] = size_bytes(kind, sess)
    ms = {b: alternating_ms(runners, test.x[:b], reps=3 if quick else (30 if b == 1 else 10)) for b in BATCHES}
    base = "teacher fp32 (PyTorch)"
    rows = {n: {"ms": {b: ms[b][n] for b in BATCHES}, "speedup": {b: ms[b][base] / ms[b][n] for b in BATCHES},
                "accuracy": accuracy.get(n)} for n in runners}
    lines = [
        f"CPU latency at sequence length {length} (the test queries padded; padding is masked), "
        f"{torch.get_num_threads()} threads for PyTorch and ONNX Runtime alike, median over calls with all six "
        f"artifacts taking turns; speedup against the PyTorch fp32 teacher. ONNX INT8 = ONNX Runtime dynamic "
        f"quantization (int8 weights, activations per batch). The student here is the last seed's "
        f"\"{student_name}\" student; accuracies of the ONNX files are measured on the test set.",
        "",
        "| artifact | ms, batch 1 | ms, batch 32 | speedup b1 | speedup b32 | ONNX MiB (with external data) | test accuracy % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows.items():
        size = f"{sizes[n] / 2**20:.1f}" if n in sizes else ""
        a = f"{100 * r['accuracy']:.2f}" if r["accuracy"] is not None else ""
        lines.append(f"| {n} | {r['ms'][1]:.1f} | {r['ms'][32]:.1f} | {r['speedup'][1]:.2f}× | {r['speedup'][32]:.2f}× | {size} | {a} |")
    return {"rows": rows, "lines": lines}
