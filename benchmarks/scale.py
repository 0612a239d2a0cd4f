"""1 process vs 2 processes (torchrun, gloo on CPU): DDP vs FSDP2, fp32 vs bf16, live teacher vs store.

Every arm runs the same recipe through the CLI with one trained teacher per seed
(loaded from safetensors): final student test accuracy, training throughput
(samples/s over the student stage, evaluation included), and how many samples
went through the teacher in the whole job (the store should make it one pass
over the training set, whatever the number of ranks and epochs). Writes the
"scale" section of RESULTS.md.

    python benchmarks/scale.py [--seeds 2] [--epochs 40]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402

from kdforge.config import DataConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402

ENV = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
TEACHER, STUDENT, TEACHER_EPOCHS = [256, 256], [32], 20  # MLP hidden widths
BATCH, LR, KD = 32, 5e-3, {"kind": "kd", "temperature": 4.0, "alpha": 0.8}  # global batch: split over the processes
TOLERANCE = 0.01  # stated: every arm's test accuracy within this of 1 process fp32, on each seed
# label -> (processes, teacher source, distill overrides)
ARMS = {
    "1 process, fp32": (1, "live", {"precision": "fp32"}),
    "1 process, bf16 autocast": (1, "live", {"precision": "bf16"}),
    "2 processes, DDP, fp32": (2, "live", {"precision": "fp32", "parallel": "ddp"}),
    "2 processes, FSDP2, fp32": (2, "live", {"precision": "fp32", "parallel": "fsdp"}),
    "2 processes, DDP, bf16 autocast": (2, "live", {"precision": "bf16", "parallel": "ddp"}),
    "2 processes, FSDP2, bf16 params": (2, "live", {"precision": "bf16", "parallel": "fsdp"}),
    "1 process, fp32, teacher store": (1, "store", {"precision": "fp32"}),
    "2 processes, DDP, fp32, teacher store": (2, "store", {"precision": "fp32", "parallel": "ddp"}),
}


def kdforge(nproc: int, *args: str) -> None:
    launcher = [sys.executable, "-m", "kdforge"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "kdforge"]
    r = subprocess.run([*launcher, *args, "--quiet"], env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    t_start = time.time()
    n_train = len(load_data(DataConfig(name="digits"), 0).train)  # the same size for every seed (stratified split)
    work = Path(tempfile.mkdtemp(prefix="kdforge-scale-"))
    results: dict = {}
    for seed in range(args.seeds):
        distill = {"epochs": args.epochs, "batch_size": BATCH, "lr": LR, "tracker": "none", "losses": [KD]}
        base = {"seed": seed, "data": {"name": "digits"},
                "teacher": {"name": "mlp", "hidden": TEACHER, "train": {"epochs": TEACHER_EPOCHS}},
                "student": {"name": "mlp", "hidden": STUDENT}, "distill": distill}
        (work / "teacher.yaml").write_text(yaml.safe_dump({**base, "distill": {**distill, "epochs": 1}}))
        kdforge(1, "run", str(work / "teacher.yaml"), "--set", f"run_dir={work}/teacher{seed}", "--force")
        ckpt = f"{work}/teacher{seed}/teacher/checkpoints/best/model.safetensors"  # one teacher for every arm
        for k, (label, (nproc, mode, over)) in enumerate(ARMS.items()):
            run_dir = work / f"arm{k}-{seed}"
            recipe = {**base, "teacher": {"name": "mlp", "hidden": TEACHER, "checkpoint": ckpt},
                      "distill": {**distill, **over, "batch_size": BATCH // nproc}}  # the same global batch
            if mode == "store":
                recipe["store"] = {"path": str(run_dir) + "-store", "k": "all", "dtype": "float32"}
            (work / "r.yaml").write_text(yaml.safe_dump(recipe))
            kdforge(nproc, "run", str(work / "r.yaml"), "--set", f"run_dir={run_dir}", "--force")
            m = json.loads((run_dir / "metrics.json").read_text())
            log = [json.loads(x) for x in (run_dir / "student/metrics.jsonl").read_text().splitlines()]
            seconds = sum(r["seconds"] for r in log)
            row = results.setdefault(label, {"acc": [], "sps": [], "teacher": []})
            row["acc"].append(m["student"]["accuracy"])
            row["sps"].append(n_train * args.epochs / seconds)
            row["teacher"].append(json.loads((run_dir / "work.json").read_text())["teacher_forward_samples"])
            print(label, seed, m["student"]["accuracy"], row["teacher"][-1], f"{seconds:.1f}s", flush=True)

    lines = [f"## 1 vs 2 processes, DDP vs FSDP2, fp32 vs bf16 (`benchmarks/scale.py`, {args.seeds} seeds, "
             f"wall {(time.time() - t_start) / 60:.0f} min)", "", machine_line(), "",
             f"Digits, teacher MLP {TEACHER} ({TEACHER_EPOCHS} epochs, trained once per seed, loaded from safetensors), "
             f"student MLP {STUDENT}, {args.epochs} epochs, global batch {BATCH} ({BATCH // 2} per process under 2 processes, "
             f"so every arm takes the same steps on the same samples), plain KD (T {KD['temperature']:g}, "
             f"α {KD['alpha']:g}); 2 processes = `torchrun --nproc_per_node 2` (gloo, CPU). DDP = torch's DistributedDataParallel "
             "(bucketed all-reduce); FSDP2 = `fully_shard` (parameters, gradients and optimizer state sharded; with bf16 "
             "the sharded parameters are all-gathered in bf16 and gradients reduced in fp32). bf16 autocast on a CPU "
             "without native bf16 matrix units is emulated and slower; it is here to show it trains to the same accuracy. "
             "Throughput = training samples per second over the student stage (includes per-epoch evaluation). "
             "'teacher samples' counts samples forwarded through the teacher in the whole job, all ranks "
             f"({n_train:,} = one pass over the training set).", "",
             "| arm | student test accuracy (%) | throughput (samples/s) | teacher samples |", "|---|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(f"| {label} | {mean_std(r['acc'], 100)} | {mean_std(r['sps'], 1, 0)} | {mean_std(r['teacher'], 1, 0)} |")
    ref = results["1 process, fp32"]["acc"]
    worst = max(abs(a - b) for label, r in results.items() for a, b in zip(r["acc"], ref))
    lines += ["", f"Tolerance stated: every arm within {TOLERANCE * 100:g} point of 1 process fp32 on each seed (same global "
              "batch and steps; "
              f"float summation order, bf16 rounding and per-rank batch statistics differ). Largest measured difference: "
              f"{worst * 100:.2f} points{'' if worst <= TOLERANCE else ' (**outside the stated tolerance**)'}. This machine has "
              f"{os.cpu_count()} cores shared with other work, so 2 processes cannot show a real speedup here; the point is equal results, "
              "one teacher pass with the store, and that each engine runs."]
    write_section("scale", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
