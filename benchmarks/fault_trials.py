"""Kill-and-resume trials: runs killed with SIGKILL at random moments, then resumed.

Each trial starts the same recipe (deterministic CPU mode, 1 thread), kills it
after a random delay, resumes it with `kdforge run --resume`, and compares the
final student weights with an uninterrupted reference run bit for bit. Writes
the "fault_trials" section of RESULTS.md.

    python benchmarks/fault_trials.py [--trials 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

RECIPE = {
    "seed": 7,
    "data": {"name": "digits"},
    "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 2, "batch_size": 16, "checkpoint_every": 7}},
    "student": {"name": "mlp", "hidden": [16], "dropout": 0.1},
    "distill": {"epochs": 3, "batch_size": 8, "checkpoint_every": 5,
                "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.7},
                           {"kind": "rkd_distance", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.5}]},
}
ENV = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
MAX_DELAY_S = 0.3  # the kill lands this long at most after the target step is reached


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdforge", *args, "--quiet"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def reached(run_dir: Path, stage: str, step: int) -> bool:
    """Has `stage` written a checkpoint at optimizer step >= `step`? (it may be mid-rename: then no)."""
    try:
        state = torch.load(run_dir / stage / "checkpoints/last/state.pt", weights_only=True)
        return state["loop"]["step"] >= step
    except Exception:
        return (run_dir / stage / "result.json").exists()


def wait_until(p: subprocess.Popen, run_dir: Path, stage: str, step: int) -> None:
    while not reached(run_dir, stage, step):
        if p.poll() is not None:
            return
        time.sleep(0.005)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "student/checkpoints/best/model.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kdforge-faults-"))
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))

    t0 = time.time()
    ref = start("run", str(recipe), "--set", f"run_dir={work / 'ref'}")
    assert ref.wait() == 0, ref.stderr.read()
    duration = time.time() - t0
    ref_w = weights(work / "ref")
    steps = {stage: json.loads((work / "ref" / stage / "result.json").read_text())["steps"] for stage in ("teacher", "student")}

    rows, equal, killed_mid_run = [], 0, 0
    for trial in range(args.trials):
        run_dir = work / f"t{trial}"
        # a random optimizer step of the whole job, then a random extra moment so the kill lands between checkpoints
        target = rng.randint(1, steps["teacher"] + steps["student"] - 1)
        stage, step = ("teacher", target) if target <= steps["teacher"] else ("student", target - steps["teacher"])
        delay = rng.uniform(0.0, MAX_DELAY_S)
        p = start("run", str(recipe), "--set", f"run_dir={run_dir}")
        wait_until(p, run_dir, stage, step)
        time.sleep(delay)
        was_running = p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_mid_run += was_running
        r = start("run", "--resume", str(run_dir))
        code = r.wait()
        same = code == 0 and all(torch.equal(ref_w[k], v) for k, v in weights(run_dir).items())
        equal += same
        rows.append(f"| {trial} | {stage} step ≥ {step} + {delay:.2f} s | {'yes' if was_running else 'no (had finished)'} | {code} | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)

    body = "\n".join([
        f"## Kill-and-resume trials (`benchmarks/fault_trials.py`, {args.trials} trials)", "",
        machine_line(), "",
        f"Uninterrupted reference run: {duration:.1f} s, {steps['teacher']} teacher + {steps['student']} student optimizer steps. "
        f"Each trial is SIGKILLed at a random step of the job plus a random 0–{MAX_DELAY_S:g} s (so between checkpoints), then resumed with `kdforge run --resume`; deterministic CPU mode (1 thread).", "",
        f"**{equal} of {args.trials} resumed runs ended with final student weights bit-identical to the uninterrupted run** "
        f"({killed_mid_run} were killed while running; a run that had already finished counts only if its weights match too).", "",
        "| trial | killed at | killed mid-run | resume exit code | weights bit-identical |",
        "|---:|---|---|---:|---|", *rows,
    ])
    write_section("fault_trials", body)
    print(body)


if __name__ == "__main__":
    main()
