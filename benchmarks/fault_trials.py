"""Kill-and-resume trials: runs killed with SIGKILL at random moments, then resumed.

Each trial starts the same recipe (deterministic CPU mode, 1 thread), kills it
after a random delay, resumes it with `kdforge run --resume`, and compares the
final student weights with an uninterrupted reference run bit for bit. Writes
the "fault_trials" section of RESULTS.md.

    python benchmarks/fault_trials.py [--trials 20] [--seed 0]
"""
from __future__ import annotations

import argparse
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


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdforge", *args, "--quiet"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_training(p: subprocess.Popen, run_dir: Path) -> float:
    """Block until the run has started training (its teacher stage log exists); returns that time."""
    while not (run_dir / "teacher/metrics.jsonl").exists():
        if p.poll() is not None:
            raise SystemExit(f"run ended before training started: {p.stderr.read()[-1000:]}")
        time.sleep(0.01)
    return time.time()


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

    ref = start("run", str(recipe), "--set", f"run_dir={work / 'ref'}")
    t0 = wait_for_training(ref, work / "ref")
    assert ref.wait() == 0, ref.stderr.read()
    duration = time.time() - t0  # from the first training step to the end
    ref_w = weights(work / "ref")

    rows, equal, killed_mid_run = [], 0, 0
    for trial in range(args.trials):
        run_dir = work / f"t{trial}"
        delay = rng.uniform(0.02, 0.98) * duration
        p = start("run", str(recipe), "--set", f"run_dir={run_dir}")
        wait_for_training(p, run_dir)
        time.sleep(delay)
        was_running = p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_mid_run += was_running
        stage = "student" if (run_dir / "student").exists() else "teacher"
        r = start("run", "--resume", str(run_dir))
        code = r.wait()
        same = code == 0 and all(torch.equal(ref_w[k], v) for k, v in weights(run_dir).items())
        equal += same
        rows.append(f"| {trial} | {delay:.2f} | {'yes' if was_running else 'no (had finished)'} | {stage} | {code} | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)

    body = "\n".join([
        f"## Kill-and-resume trials (`benchmarks/fault_trials.py`, {args.trials} trials)", "",
        machine_line(), "",
        f"Uninterrupted reference run: {duration:.1f} s of training. Each trial is SIGKILLed at a random moment of "
        f"its training (2–98% of that time after its first step), then resumed with `kdforge run --resume`; deterministic CPU mode (1 thread).", "",
        f"**{equal} of {args.trials} resumed runs ended with final student weights bit-identical to the uninterrupted run** "
        f"({killed_mid_run} were killed while running; a run that had already finished counts only if its weights match too).", "",
        "| trial | kill after (s) | killed mid-run | stage reached | resume exit code | weights bit-identical |",
        "|---:|---:|---|---|---:|---|", *rows,
    ])
    write_section("fault_trials", body)
    print(body)


if __name__ == "__main__":
    main()
