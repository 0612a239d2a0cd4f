"""What compression buys on CPU, measured side by side in one run (ratios, not absolute times).

Two models, each over several seeds:
- digits student: the demo's MLP [32] distilled (KD, T=4, α=0.8) from an MLP [256, 256] teacher;
- mnist5k MLP-1024: MLP [1024, 1024] on 5,000 real MNIST digits (trained on labels).

Variants of each: fp32 PyTorch; torch INT8 dynamic; 50% structured pruning +
recovery distillation (digits: from the teacher; MLP-1024: from the unpruned
model); 50% unstructured (global magnitude) pruning; ONNX Runtime fp32 and
dynamic INT8. Latency is single-threaded (torch and ORT alike): with 2 threads on
a 2-core machine shared with other jobs, a descheduled worker stalls every call.
Timing is interleaved: in each round every variant runs `repeats` timed calls,
and a speedup is fp32 p50 / variant p50 *within the round*; reported as the median
over rounds × seeds with its interquartile range. A seed's block of rounds whose
spread exceeds SPREAD_LIMIT of its median (benchmarks/_stats.py) is measured again
(`--retries`); what is still that spread out is flagged in the table.
Accuracy drops are over seeds (test split).

    python benchmarks/compress.py [--seeds 3] [--rounds 7] [--retries 2]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402
from _stats import SPREAD_LIMIT, spread  # noqa: E402

from kdforge.bench.measure import make_runner, size_bytes, stack_inputs, task_metrics, time_calls  # noqa: E402
from kdforge.compress import Export, Int8Dynamic, Structured, Unstructured, export, prune_, quantize_  # noqa: E402
from kdforge.compress.config import RecoverStage  # noqa: E402
from kdforge.recipe_file import parse_recipe  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.workflows import run_recipe  # noqa: E402
from kdforge.workflows.compress import recover  # noqa: E402

VARIANTS = ["fp32", "int8", "struct50+rec", "unstruct50", "onnx fp32", "onnx int8"]


def train_models(kind: str, seed: int, tmp: Path):
    """(recipe, data, model, teacher_for_recovery) for one seed; teacher None means 'recover from the unpruned model'."""
    if kind == "digits student":
        raw = {"seed": seed, "run_dir": str(tmp / f"d{seed}"), "data": {"name": "digits"},
               "teacher": {"name": "mlp", "hidden": [256, 256], "dropout": 0.2, "train": {"epochs": 30}},
               "student": {"name": "mlp", "hidden": [32]},
               "distill": {"epochs": 40, "lr": 5e-3, "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]}}
    else:
        raw = {"seed": seed, "run_dir": str(tmp / f"m{seed}"), "method": "supervised", "data": {"name": "mnist5k"},
               "student": {"name": "mlp", "hidden": [1024, 1024]}, "distill": {"epochs": 12, "lr": 1e-3, "losses": [{"kind": "ce"}]}}
    recipe = parse_recipe(raw)
    captured = {}
    import kdforge.workflows.standard as pl

    real = pl.train_stage

    def spy(name, run_dir, method, data, cfg, s, quiet=False):  # keep the trained modules
        captured[name] = method.student
        if getattr(method, "teacher", None) is not None:
            captured["teacher_model"] = method.teacher.model
        return real(name, run_dir, method, data, cfg, s, quiet=quiet)

    pl.train_stage = spy
    try:
        run_recipe(recipe, force=True, quiet=True)
    finally:
        pl.train_stage = real
    data = load_data(recipe.data, seed)
    return data, captured["student"].eval(), captured.get("teacher_model")


def variants(model, teacher, data, seed: int, tmp: Path, recover_epochs: int, recover_lr: float) -> dict:
    example = stack_inputs(data.val, 8)
    out = {"fp32": model, "int8": quantize_(copy.deepcopy(model), Int8Dynamic())}
    pruned = prune_(copy.deepcopy(model), Structured(0.5), example_inputs=example)
    out["struct50 (no rec)"] = copy.deepcopy(pruned).eval()
    stage = RecoverStage(epochs=recover_epochs, source="teacher" if teacher is not None else "previous", lr=recover_lr)
    recover(stage, "recover", tmp / f"rec{seed}-{id(model)}", pruned, teacher, model, data, seed, quiet=True)
    out["struct50+rec"] = pruned.eval()
    out["unstruct50"] = prune_(copy.deepcopy(model), Unstructured(0.5, scope="global"))
    man = export(model, tmp / f"onnx{seed}-{id(model)}", Export(["onnx", "onnx-int8"]), example_inputs=example)
    out["onnx fp32"], out["onnx int8"] = man["files"]["onnx"], man["files"]["onnx-int8"]
    return out


def torchao_timings(model, x: torch.Tensor, rounds: int, repeats: int) -> dict | str:
    """p50 ms per round of fp32, torch.ao INT8 and torchao INT8 on `model` at this batch, interleaved;
    a sentence instead when torchao (optional, not a dependency) is not installed or fails here."""
    try:
        import torchao
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig
        from torchao.quantization import quantize_ as ao_quantize_
    except ImportError:
        return "torchao is not installed in this run, so it was not measured"
    try:
        ao = copy.deepcopy(model)
        ao_quantize_(ao, Int8DynamicActivationInt8WeightConfig())
        runners = {"fp32": make_runner("torch", model), "torch.ao INT8": make_runner("torch", quantize_(copy.deepcopy(model), Int8Dynamic())),
                   f"torchao {torchao.__version__} INT8": make_runner("torch", ao.eval())}
        return {k: [t * 1e3 for t in ts] for k, ts in timed_rounds(runners, x, rounds, repeats).items()}
    except Exception as e:  # an optional comparison: report why it could not run instead of failing the benchmark
        return f"torchao {torchao.__version__} could not quantize/run this model here ({type(e).__name__}: {str(e).splitlines()[0][:120]})"


def timed_rounds(runners: dict, x: torch.Tensor, rounds: int, repeats: int) -> dict[str, list[float]]:
    """p50 seconds per round of every runner, the runners taking turns within each round."""
    p50 = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            p50[k].append(statistics.median(time_calls(run, x, warmup=3, repeats=repeats)))
    return p50


def worst_spread(block: dict[str, list[float]]) -> float:
    """The largest interquartile range ÷ median among the runners of one block of rounds."""
    return max((s.hi - s.lo) / s.median for s in map(spread, block.values()))


def stable_rounds(runners: dict, x: torch.Tensor, rounds: int, repeats: int, retries: int) -> tuple[dict, int]:
    """A block of interleaved rounds, measured again (at most `retries` times) while a runner's spread exceeds
    SPREAD_LIMIT of its median; the least spread block is kept. Returns (block, re-measurements made)."""
    best = timed_rounds(runners, x, rounds, repeats)
    for k in range(retries):
        if worst_spread(best) <= SPREAD_LIMIT:
            return best, k
        again = timed_rounds(runners, x, rounds, repeats)
        best = min(best, again, key=worst_spread)
    return best, retries


def bench_model(kind: str, seeds: int, rounds: int, repeats: int, tmp: Path, retries: int = 2) -> dict:
    from kdforge.bench.measure import count_params, load_artifact

    acc = {v: [] for v in VARIANTS + ["struct50 (no rec)"]}
    speed = {b: {v: [] for v in VARIANTS} for b in (1, 32)}
    sizes, params, torchao, remeasured = {}, {}, None, 0
    for seed in range(seeds):
        t0 = time.time()
        data, model, teacher = train_models(kind, seed, tmp)
        # recovery: the tiny digits student (32 -> 16 units) needs the distillation schedule's lr; the wide MLP little
        epochs, lr = (20, 5e-3) if teacher is not None else (4, 1e-3)
        rec = RecoverStage(epochs=epochs, lr=lr)
        recovery = (f"{epochs} epochs of KD from {'the teacher' if teacher is not None else 'the unpruned model'} "
                    f"(T={rec.temperature:g}, α={rec.alpha:g}, lr {lr:g})")
        vs = variants(model, teacher, data, seed, tmp, recover_epochs=epochs, recover_lr=lr)
        runners = {}
        for name, obj in vs.items():
            k, o = load_artifact(obj, threads=1)
            runners[name] = make_runner(k, o)
            acc[name].append(task_metrics(runners[name], data.test)["accuracy"])
            if seed == 0 and name in VARIANTS:
                sizes[name] = size_bytes(k, o) if k == "torch" else Path(obj).stat().st_size
                params[name] = count_params(k, o)
        for b in (1, 32):
            x = stack_inputs(data.test, b)
            block, again = stable_rounds({v: runners[v] for v in VARIANTS}, x, rounds, repeats, retries)
            remeasured += again
            for v in VARIANTS:
                speed[b][v] += [f / t for f, t in zip(block["fp32"], block[v])]
            speed[b].setdefault("_fp32_ms", []).extend(t * 1e3 for t in block["fp32"])
        if seed == 0:
            torchao = torchao_timings(model, stack_inputs(data.test, 32), rounds, repeats)
        print(f"{kind} seed {seed}: {time.time() - t0:.0f}s  acc " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in acc.items()), flush=True)
    return {"acc": acc, "speed": speed, "sizes": sizes, "params": params, "torchao": torchao, "recovery": recovery,
            "remeasured": remeasured}


def render(results: dict, args) -> str:
    lines = [
        "## Compression on CPU (`benchmarks/compress.py`)", "",
        machine_line(),
        f"Seeds {args.seeds}; latency single-threaded (torch.set_num_threads(1), ORT intra_op_num_threads=1), "
        f"{args.rounds} interleaved rounds × {args.repeats} timed calls per variant and batch size; "
        "speedup = fp32 PyTorch p50 / variant p50 in the same round; every timing is the median over rounds × seeds with "
        f"its interquartile range (IQR). A seed's block of rounds whose IQR exceeded {SPREAD_LIMIT:.0%} of its median was "
        f"measured again (at most {args.retries} times, the least spread block kept); ⚠ marks a timing still spread more "
        "than that: not a stable figure. "
        "Accuracy on the test split, mean ± std over seeds; drop = fp32 − variant, in points.", "",
    ]
    for kind, r in results.items():
        fp = r["acc"]["fp32"]
        lines += [f"### {kind}", "",
                  f"fp32 PyTorch: test accuracy {mean_std(fp, 100)} %, p50 {spread(r['speed'][32]['_fp32_ms']).text(3, ' ms')} at "
                  f"batch 32, {spread(r['speed'][1]['_fp32_ms']).text(3, ' ms')} at batch 1; blocks of rounds measured again: "
                  f"{r['remeasured']}.", "",
                  "| variant | speedup batch 32 | speedup batch 1 | accuracy drop (points) | size reduction | params |",
                  "|---|---:|---:|---:|---:|---:|"]
        for v in VARIANTS:
            drop = [(a - b) * 100 for a, b in zip(fp, r["acc"][v])]
            size = r["sizes"]["fp32"] / r["sizes"][v]
            p = r["params"][v]
            lines.append(f"| {v} | {spread(r['speed'][32][v]).text(2, '×')} | {spread(r['speed'][1][v]).text(2, '×')} | {mean_std(drop)} | "
                         f"{size:.2f}× | {p:,} |")
        nr = [(a - b) * 100 for a, b in zip(fp, r["acc"]["struct50 (no rec)"])]
        lines += ["", f"Structured 50% before recovery: drop {mean_std(nr)} points; recovery: {r['recovery']}.", ""]
    lines += [
        "Notes:",
        "- *int8* is torch.ao dynamic quantization (fbgemm/x86 kernels), not torchao (`Int8DynamicActivationInt8WeightConfig`; "
        "optional, not a dependency). Measured in this run, seed 0, batch 32, one thread, eager mode, "
        f"p50 ms, median (IQR) over {args.rounds} interleaved rounds: "
        + "; ".join(f"{kind}: {_torchao_text(r['torchao'])}" for kind, r in results.items()) + ". "
        "INT8 pays a per-call quantize/dequantize overhead, so on a tiny model (the 32-unit digits student) "
        "it can be slower than fp32; it pays off on wide layers.",
        "- *unstruct50* zeroes half the weights but keeps dense shapes: no CPU speedup is expected and none is claimed; "
        "it saves space only once the zeros are stored sparse or compressed (its size here is the dense size).",
        "- *size reduction*: fp32 bytes / variant bytes; bytes are the serialized state dict (torch) or .onnx file bytes, relative to the fp32 PyTorch state dict.",
        "- ONNX Runtime fp32 vs PyTorch fp32 is mostly per-call framework overhead on these small models.",
    ]
    return "\n".join(lines)


def _torchao_text(t: dict | str | None) -> str:
    if not isinstance(t, dict):
        return t or "not measured"
    return ", ".join(f"{k} {spread(v).text(3)}" for k, v in t.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--retries", type=int, default=2, help="re-measurements of a block of rounds spread too much")
    ap.add_argument("--models", default="digits student,mnist5k MLP-1024")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for kind in args.models.split(","):
            results[kind] = bench_model(kind, args.seeds, args.rounds, args.repeats, Path(d), args.retries)
    body = render(results, args)
    print(body)
    write_section("compress", body)


if __name__ == "__main__":
    main()
