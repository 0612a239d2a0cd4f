"""kdforge's loop vs the leanest plain-PyTorch KD loop on the same job, in one process.

Both sides: the same teacher and student (same initial weights), the same data and
batch size, AdamW, the KD loss α·T²·KL + (1−α)·CE (T 4, α 0.8), and one validation
pass per epoch. The plain loop is 15 lines: shuffled index slices of in-memory
tensors, teacher under no_grad, no schedule, no clipping, no checkpoints, no logging.
kdforge runs `fit` with its defaults (cosine schedule, clipping, a resumable
checkpoint at an epoch's end at most every `checkpoint_interval` seconds (10) and always
after the last epoch, the best epoch's weights, metrics.jsonl, validation accuracy and loss). Rounds alternate
(which side runs first alternates by round), with the garbage collector off inside each timed run
(as timeit does), so machine noise hits both; the figure is the ratio of
training throughputs per round, median and spread over rounds.

Jobs:
  (a) digits, MLP 256-256 teacher -> MLP 32 student (per-step overhead dominates)
  (b) MNIST-5k, MLP 2048-2048 teacher -> MLP 512 student (compute-bound)
  (c) job (b): kdforge KD from the teacher-output store vs kdforge training the
      student alone (what reading the store costs on top of student-only training)
Targets (issue 10): (a) >= 0.85x, (b) >= 0.97x, (c) >= 0.9x.

    python benchmarks/loop.py [--rounds 20] [--epochs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

from kdforge.config import DataConfig, DistillConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.methods.standard import StandardKD  # noqa: E402
from kdforge.methods.supervised import Supervised  # noqa: E402
from kdforge.models import MLP  # noqa: E402
from kdforge.store import CachedTeacher, TeacherStore, write_store  # noqa: E402
from kdforge.teacher import Teacher  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

T, ALPHA, LR, BATCH = 4.0, 0.8, 3e-3, 64
JOBS = {"a": ("digits", [256, 256], [32]), "b": ("mnist5k", [2048, 2048], [512])}
EPOCH_SCALE = {"a": 4, "b": 1}  # job (a) takes ~0.05 s per epoch: more epochs per round, or noise decides


def plain_kd(teacher, student, train, val, epochs: int) -> None:
    """The leanest KD loop: what a user writes by hand."""
    x, y, xv, yv = train.x, train.y, val.x, val.y
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=1e-4)
    for _ in range(epochs):
        student.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), BATCH):
            xb, yb = x[perm[i:i + BATCH]], y[perm[i:i + BATCH]]
            with torch.no_grad():
                t = teacher(xb)
            s = student(xb)
            kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True)
            loss = ALPHA * T * T * kl + (1 - ALPHA) * F.cross_entropy(s, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        student.eval()
        with torch.no_grad():
            (student(xv).argmax(-1) == yv).float().mean().item()


def cfg(epochs: int, kd: bool) -> DistillConfig:
    losses = [{"kind": "kd", "temperature": T, "alpha": ALPHA}] if kd else [{"kind": "ce"}]
    return DistillConfig.model_validate({"epochs": epochs, "batch_size": BATCH, "lr": LR, "precision": "fp32",
                                         "tracker": "none", "losses": losses})


def timed(fn) -> float:
    """CPU seconds of this process (all its threads): on a machine shared with other jobs, wall time
    swings by 5x between identical rounds, CPU time by a few percent (1 torch thread, no workers).
    As timeit does, the garbage left by earlier rounds is collected first and the collector is off
    while `fn` runs, so neither side pays for a collection the other caused."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


def pair(r: int, first, second) -> tuple[float, float]:
    """CPU seconds of both sides of a comparison; which runs first alternates by round."""
    if r % 2:
        b = timed(second)
        return timed(first), b
    a = timed(first)
    return a, timed(second)


def run_job(name: str, rounds: int, epochs: int, work: Path) -> dict[str, list[float]]:
    dataset, t_hidden, s_hidden = JOBS[name]
    data = load_data(DataConfig(name=dataset), seed=0)
    shape, n = data.input_shape, len(data.train)
    torch.manual_seed(0)
    teacher = MLP(shape, data.num_classes, hidden=t_hidden).eval().requires_grad_(False)
    student0 = MLP(shape, data.num_classes, hidden=s_hidden)
    probe = probe_batch(data.train)
    ratios: dict[str, list[float]] = {"kdforge / plain": []}
    store = None
    if name == "b":
        ratios["store KD / student alone"] = []
        store = work / "store"
        write_store(store, Teacher(teacher), data.train, k="all", dtype="float32")
    epochs *= EPOCH_SCALE[name]
    for r in range(-1, rounds):  # round -1 warms up caches and allocators and is not counted
        torch.manual_seed(r)
        students = [copy.deepcopy(student0) for _ in range(2)]
        method = StandardKD(students[1], copy.deepcopy(teacher), cfg(epochs, True), probe)
        plain, ours = pair(r, lambda: plain_kd(teacher, students[0], data.train, data.val, epochs),
                           lambda: fit(method, data.train, data.val, cfg(epochs, True), work / f"{name}{r}", r,
                                       quiet=True, resume=False, device="cpu"))
        if r >= 0:
            ratios["kdforge / plain"].append(plain / ours)  # throughput ratio: > 1 means kdforge is faster
        print(f"job {name} round {r}: plain {n * epochs / plain:,.0f} samples/CPU-s, kdforge {n * epochs / ours:,.0f}", flush=True)
        if store is not None:
            cached = StandardKD(copy.deepcopy(student0), CachedTeacher(TeacherStore(store)), cfg(epochs, True), probe)
            alone = Supervised(copy.deepcopy(student0))
            kd_store, solo = pair(r, lambda: fit(cached, data.train, data.val, cfg(epochs, True), work / f"s{r}", r,
                                                 quiet=True, resume=False, device="cpu"),
                                  lambda: fit(alone, data.train, data.val, cfg(epochs, False), work / f"a{r}", r,
                                              quiet=True, resume=False, device="cpu"))
            if r >= 0:
                ratios["store KD / student alone"].append(solo / kd_store)
            print(f"job {name} round {r}: store KD {n * epochs / kd_store:,.0f} samples/CPU-s, alone {n * epochs / solo:,.0f}", flush=True)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    targets = {("a", "kdforge / plain"): 0.85, ("b", "kdforge / plain"): 0.97, ("b", "store KD / student alone"): 0.9}
    labels = {("a", "kdforge / plain"): "(a) digits MLP 256-256 → 32: kdforge ÷ plain loop",
              ("b", "kdforge / plain"): "(b) MNIST-5k MLP 2048-2048 → 512: kdforge ÷ plain loop",
              ("b", "store KD / student alone"): "(c) job (b), KD from the teacher store ÷ student alone (both kdforge)"}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for job in ("a", "b"):
            for key, xs in run_job(job, args.rounds, args.epochs, Path(d)).items():
                med = statistics.median(xs)
                target = targets[(job, key)]
                rows.append(f"| {labels[(job, key)]} | {med:.3f}× | {min(xs):.3f}–{max(xs):.3f} | ≥ {target}× | "
                            f"{'met' if med >= target else '**not met**'} |")
    body = "\n".join([
        "## Training loop overhead: kdforge's loop against a plain PyTorch loop (`benchmarks/loop.py`)", "",
        "Training throughput ratios (samples per CPU-second ÷ samples per CPU-second, > 1 = kdforge faster; CPU time of the "
        "process, all threads, because wall time on this shared machine swings by several times between identical rounds), "
        "same job, one process, "
        f"rounds after one uncounted warm-up round, which side runs first alternating by round, the garbage collector "
        f"off inside each timed run (as timeit does); {args.rounds} rounds × {args.epochs} epochs "
        f"(job (a) {args.epochs * EPOCH_SCALE['a']}), batch {BATCH}, {args.threads} thread(s), "
        f"wall {time.time() - t0:.0f} s. Written by `benchmarks/loop.py`.", "",
        "| job | median ratio | range over rounds | target | |", "|---|---:|---:|---:|---|", *rows, "",
        "kdforge's side includes what the plain loop does not do: a cosine schedule, gradient clipping, a finiteness check "
        "of every step, a resumable checkpoint (per epoch at most every `checkpoint_interval` = "
        f"{DistillConfig.model_fields['checkpoint_interval'].default:g} s, and after the last "
        "epoch) and the best epoch's weights on disk, validation loss beside accuracy, and metrics.jsonl.", "", machine_line(),
    ])
    write_section("loop", body)
    print(body)


if __name__ == "__main__":
    main()
