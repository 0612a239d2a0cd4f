"""CPU latency of a text teacher and student side by side, every deployment option kdforge has:
PyTorch fp32 and dynamic INT8 (torch.ao), ONNX Runtime fp32 / INT8 (dynamic) of the plain
export, and the ONNX Runtime-optimized graphs (transformer fusions) in fp32, dynamic INT8 and
static INT8 (QDQ, calibrated on training batches). Batch 1 and 32 at a fixed sequence length,
all artifacts taking turns call by call; accuracies come from the artifacts themselves.
The student's options go into a deployment summary (kdforge.bench.deploy) against the
student in PyTorch fp32. Used by benchmarks/text.py."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _stats import SPREAD_LIMIT, spread
from kdforge.bench.deploy import Artifact, render, runtime_line, summarize
from kdforge.bench.measure import int8_share, load_artifact, make_runner, onnx_op_time, size_bytes, task_metrics
from kdforge.compress import Bf16, Export, Int8Dynamic, export, quantize_
from kdforge.compress.ort_opt import cpu_features
from kdforge.data.text import TokenDataset
from kdforge.models.hf import for_inference

BATCHES = (1, 32)
LABELS = {"onnx": "ONNX fp32", "onnx-int8": "ONNX INT8 (dynamic)", "onnx-opt": "ONNX optimized fp32",
          "onnx-opt-int8": "ONNX optimized INT8 (dynamic)", "onnx-opt-int8-static": "ONNX optimized INT8 (static QDQ)"}
FORMATS = {"teacher": ["onnx", "onnx-int8", "onnx-opt", "onnx-opt-int8"],  # static INT8 of the teacher: left out for time
           "student": list(LABELS)}
MAX_DROP = 0.005  # the accuracy budget of the recommendation: 0.5 points
CALIBRATION_BATCHES = 8


def _pad(x: torch.Tensor, length: int, pad_id: int) -> torch.Tensor:
    """(B, L) ids -> (B, length): padding is masked out, so logits do not change."""
    return F.pad(x, (0, length - x.shape[1]), value=pad_id) if x.shape[1] < length else x[:, :length]


def alternating_ms(runners: dict, x: torch.Tensor, reps: int) -> dict[str, dict[str, float]]:
    """{name: {"p50", "p95", "wall_p50", "spread"}} ms of one call per runner; the runners take turns call by
    call so a busy shared CPU slows them alike. p50 / p95 are the process's CPU time per call (every
    runner computes on this one thread: time another job holds the core is not counted), spread their
    median and interquartile range (flagged past SPREAD_LIMIT), wall_p50 the wall clock of the same calls."""
    cpu: dict[str, list[float]] = {n: [] for n in runners}
    wall: dict[str, list[float]] = {n: [] for n in runners}
    for i in range(reps + 2):
        for name, run in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run(x)
            if i >= 2:
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - t0)
    return {n: {"p50": 1000 * float(np.percentile(cpu[n], 50)), "p95": 1000 * float(np.percentile(cpu[n], 95)),
                "wall_p50": 1000 * float(np.percentile(wall[n], 50)), "spread": spread([1000 * c for c in cpu[n]])}
            for n in runners}


def latency_table(teacher, student, student_name: str, test, train, out_dir: Path, *, quick: bool = False,
                  length: int = 128) -> dict:
    """{"rows": {name: {"ms", "p95", "speedup", "accuracy"}}, "summary": deploy summary of the student, "lines": markdown}."""
    pad_id = student.pad_id
    test = TokenDataset(_pad(test.x, length, pad_id), test.y)
    calib = [_pad(train.x[i:i + 32], length, pad_id) for i in range(0, min(32 * CALIBRATION_BATCHES, len(train.x)), 32)]
    runners, accuracy, sizes, manifests = {}, {}, {}, {}
    for role, model in (("teacher", teacher), ("student", student)):
        m = for_inference(model)  # no attention taps: the fused sdpa kernel, as deployed
        torch_variants = {f"{role} PyTorch fp32": m,
                          f"{role} PyTorch INT8 (dynamic)": quantize_(copy.deepcopy(m), Int8Dynamic(per_channel=True))}
        if role == "student":  # bf16 matmuls where the CPU has avx512_bf16 / AMX
            torch_variants[f"{role} PyTorch bf16"] = quantize_(copy.deepcopy(m), Bf16())
        for name, mod in torch_variants.items():
            runners[name] = make_runner("torch", mod)
            sizes[name] = size_bytes("torch", mod)
        manifests[role] = export(m, out_dir / role, Export(FORMATS[role]), example_inputs=test.x[:2], calibration=calib)
        for fmt in FORMATS[role]:
            kind, sess = load_artifact(manifests[role]["files"][fmt], torch.get_num_threads())
            runners[f"{role} {LABELS[fmt]}"] = make_runner(kind, sess)
            sizes[f"{role} {LABELS[fmt]}"] = size_bytes(kind, sess)
    for name, run in runners.items():  # the teacher's fp32 graphs are parity-checked instead (≤ 1e-4)
        if name.startswith("student") or "INT8" in name or "bf16" in name:
            accuracy[name] = task_metrics(run, test, batch_size=64)["accuracy"]
    ms = {b: alternating_ms(runners, test.x[:b], reps=3 if quick else (100 if b == 1 else 16)) for b in BATCHES}
    base = "teacher PyTorch fp32"
    rows = {n: {"ms": {b: ms[b][n]["p50"] for b in BATCHES}, "p95": {b: ms[b][n]["p95"] for b in BATCHES},
                "wall": {b: ms[b][n]["wall_p50"] for b in BATCHES}, "spread": {b: ms[b][n]["spread"] for b in BATCHES},
                "speedup": {b: ms[b][base]["p50"] / ms[b][n]["p50"] for b in BATCHES}, "accuracy": accuracy.get(n)}
            for n in runners}
    ref = "student PyTorch fp32"
    summary = summarize([Artifact(n, r["ms"], r["p95"], sizes[n], r["accuracy"]) for n, r in rows.items()
                         if n.startswith("student")], ref, MAX_DROP)
    lines = _lines(rows, sizes, summary, manifests, student_name, length)
    profiled = manifests["student"]["files"]["onnx-opt-int8"]  # where the time of the INT8 graph goes
    shares = onnx_op_time(profiled, test.x[:32], torch.get_num_threads())
    lines += ["", _profile_line(f"student {LABELS['onnx-opt-int8']}", shares, manifests["student"]["onnx_opt"]["int8"])]
    return {"rows": rows, "summary": summary, "lines": lines}


def _cpu_limits() -> str:
    feats = cpu_features()
    have = [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16") if feats[f]]
    lack = [f for f in ("amx_int8", "amx_bf16") if not feats[f]]
    return (f" This CPU has {', '.join(have) or 'no VNNI / bf16 instructions'} (used by the INT8 / bf16 kernels)"
            + (f" but no {' / '.join(lack)} (AMX matrix tiles)" if lack else "")
            + "; the profile below shows how much of the INT8 graph's time is still in fp32 kernels.")


def _profile_line(name: str, shares: dict[str, float], settings: dict) -> str:
    q = int8_share(shares)
    top = ", ".join(f"{op} {100 * v:.0f}%" for op, v in list(shares.items())[:9])
    fp32 = ("bias and residual Add, GELU, LayerNorm, Softmax, Transpose and the scale Muls of the attention products; "
            "every MatMul is an integer kernel" if settings.get("activations") else
            "MatMul / FusedMatMul here are the attention products QKᵀ and ·V, left in fp32 by the weight-only "
            "quantization, plus bias Add, GELU, LayerNorm, Softmax, Transpose")
    return (f"Where the time goes in {name} at batch 32 (ONNX Runtime profiler, kernel time per op type): {top}. "
            f"Integer kernels and (de)quantization take {100 * q:.0f}%; the other {100 * (1 - q):.0f}% runs in fp32 "
            f"kernels ({fp32}).")


def best_both(summary: dict) -> dict | None:
    """The eligible student artifact with the largest min(speedup at batch 1, at batch 32)."""
    ok = [r for r in summary["rows"] if r["eligible"] and r["name"] != summary["reference"]]
    return max(ok, key=lambda r: min(r["speedup"].values()), default=None)


def _lines(rows, sizes, summary, manifests, student_name, length) -> list[str]:
    opt = manifests["student"]["onnx_opt"]
    fused = ", ".join(f"{k} {v}" for k, v in opt["fp32"]["fused"].items())
    q = opt["int8"]
    lines = [
        f"CPU latency at sequence length {length} (the test queries padded; padding is masked): CPU time of the "
        f"process per call, median (p50) over calls with all {len(rows)} artifacts taking turns call by call (every "
        f"artifact computes on the calling thread, so time other jobs hold the shared cores is not counted; the wall "
        f"clock p50 of the same calls is beside it), with the interquartile range of the calls (⚠: wider than "
        f"{SPREAD_LIMIT:.0%} of the median); speedup (of CPU time) against the PyTorch fp32 "
        f"teacher. {runtime_line(torch.get_num_threads())} PyTorch INT8 = torch.ao dynamic quantization of the "
        f"Linear layers (per-channel); PyTorch bf16 = weights and activations in bfloat16. ONNX INT8 (dynamic) = ONNX Runtime `quantize_dynamic` of the plain (dynamo) "
        f"export. ONNX optimized = TorchScript export with eager attention, then ONNX Runtime's transformer optimizer "
        f"(student graph {opt['fp32']['nodes_before']} → {opt['fp32']['nodes_after']} nodes; fused: {fused}; "
        f"max |Δ| vs PyTorch {manifests['student']['onnx_opt_max_abs_diff']:.1e}); its INT8 graphs keep attention and "
        f"skip+LayerNorm unfused ({opt['int8_graph']['nodes_after']} nodes"
        f"{', GELU as ONNX Runtime’s tanh approximation FastGelu' if opt['int8_graph'].get('gelu_approximation') else ''}) so every MatMul runs in int8 "
        f"(dynamic: per-channel weights, reduce_range {q['reduce_range']}, "
        f"{'the attention products QKᵀ and ·V quantized per batch too' if q.get('activations') else 'weights-only: the attention products stay fp32'}"
        f"; static: QDQ, calibrated on "
        f"{opt['int8_static']['calibration_batches']} training batches of 32). The student is the last seed's "
        f"\"{student_name}\" student; accuracies are measured on the test set from each artifact.",
        "",
        "| artifact | CPU ms, batch 1 | CPU ms, batch 32 | speedup b1 | speedup b32 | wall ms, b1 | wall ms, b32 | MiB | test accuracy % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows.items():
        size = f"{sizes[n] / 2**20:.1f}" if sizes.get(n) else ""
        a = f"{100 * r['accuracy']:.2f}" if r["accuracy"] is not None else ""
        lines.append(f"| {n} | {r['spread'][1].text(1)} | {r['spread'][32].text(1)} | {r['speedup'][1]:.2f}× | {r['speedup'][32]:.2f}× | "
                     f"{r['wall'][1]:.1f} | {r['wall'][32]:.1f} | {size} | {a} |")
    lines += ["", f"**Deployment summary of the student** (same measurements, CPU time per call; speedup against the student in "
                  f"PyTorch fp32, recommendations among artifacts within {100 * MAX_DROP:g} points of its accuracy):", "",
              *render(summary)]
    best = best_both(summary)
    if best is None:
        lines += ["", "Target (an artifact ≥ 2× the PyTorch fp32 student at batch 1 and 32, ≤ 0.5 points drop): "
                      "**not met** — no artifact stays within the accuracy budget."]
    else:
        s1, s32 = best["speedup"][1], best["speedup"][32]
        met = s1 >= 2 and s32 >= 2
        w = {b: rows["student PyTorch fp32"]["wall"][b] / rows[best["name"]]["wall"][b] for b in BATCHES}
        lines += ["", f"Target (an artifact ≥ 2× the PyTorch fp32 student at batch 1 and at batch 32, ≤ 0.5 points "
                      f"drop, 1 thread, interleaved): best on both is **{best['name']}**, {s1:.2f}× at batch 1 and "
                      f"{s32:.2f}× at batch 32 in CPU time ({w[1]:.2f}× and {w[32]:.2f}× in wall clock on the shared cores), "
                      f"drop {100 * best['drop']:+.2f} points — **{'met' if met else 'not met'}**."
                  + ("" if met else _cpu_limits())]
    return lines
