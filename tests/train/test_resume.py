"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

RECIPE = {
    "seed": 3,
    "data": {"name": "digits"},
    "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 2, "batch_size": 32}},
    "student": {"name": "mlp", "hidden": [16], "dropout": 0.1},
    "distill": {
        "epochs": 3, "batch_size": 4, "checkpoint_every": 5, "grad_accum": 2,
        "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.7},
                   {"kind": "hint", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.1}],
        "filter": {"mode": "drop", "min_confidence": 0.6},
    },
}


def _run(args, **kw):
    env = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdforge", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _mid_epoch_checkpoint(run_dir: Path) -> bool:
    try:
        state = torch.load(run_dir / "student/checkpoints/last/state.pt", weights_only=True)
        return state["loop"]["batch"] > 0 and state["loop"]["epoch"] >= 1
    except Exception:  # not written yet, or being renamed right now
        return False


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"

    ref = _run(["run", str(recipe), "--set", f"run_dir={ref_dir}"])
    victim = _run(["run", str(recipe), "--set", f"run_dir={killed_dir}"])
    deadline = time.time() + 240
    while not _mid_epoch_checkpoint(killed_dir):
        assert victim.poll() is None, f"run ended before it could be killed: {victim.communicate()[1][-500:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "metrics.json").exists()
    assert ref.wait(timeout=300) == 0, ref.communicate()[1][-800:]

    resumed = _run(["run", "--resume", str(killed_dir)])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-800:]

    assert json.loads((killed_dir / "metrics.json").read_text()) == json.loads((ref_dir / "metrics.json").read_text())
    w_ref = load_file(ref_dir / "student/checkpoints/best/model.safetensors")
    w_res = load_file(killed_dir / "student/checkpoints/best/model.safetensors")
    assert w_ref.keys() == w_res.keys()
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    log_ref = [json.loads(x) for x in (ref_dir / "student/metrics.jsonl").read_text().splitlines()]
    log_res = [json.loads(x) for x in (killed_dir / "student/metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(log_ref) == strip(log_res)
