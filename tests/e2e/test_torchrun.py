"""The same recipe under `torchrun --nproc_per_node 2` (gloo, CPU): rank 0 writes, the store is written once."""
import json
import os
import subprocess
import sys

import yaml

RECIPE = {
    "data": {"name": "digits", "train_limit": 256},
    "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": 2}},
    "student": {"name": "mlp", "hidden": [8]},
    "distill": {"epochs": 2, "batch_size": 32},
}


def test_two_processes_one_teacher_pass_and_one_writer(tmp_path):
    run_dir, store = tmp_path / "run", tmp_path / "store"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**RECIPE, "run_dir": str(run_dir), "store": {"path": str(store)}}))
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kdforge", "run",
         str(tmp_path / "r.yaml"), "--quiet"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("student test accuracy") == 1  # one summary line for the job
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "work.json").read_text())["teacher_forward_samples"] == 256  # the store: one pass over the data, not one per rank
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    log = [json.loads(x) for x in (run_dir / "student/metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [4, 8]  # 256 samples / 2 ranks / batch 32 = 4 steps per epoch


def _pid_of_rank(rank: int, marker: str) -> int | None:
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and marker.encode() in cmd and b"torch.distributed.run" not in cmd:
            return int(d)
    return None


def test_killing_one_rank_ends_the_job_and_it_resumes(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    recipe = {**RECIPE, "run_dir": str(run_dir), "distill": {"epochs": 8, "batch_size": 8, "checkpoint_every": 4}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kdforge"]
    job = subprocess.Popen([*launch, "run", str(tmp_path / "r.yaml"), "--quiet"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "student/checkpoints/last").exists():
        assert job.poll() is None and time.time() < deadline
        time.sleep(0.02)
    os.kill(_pid_of_rank(1, str(tmp_path)), signal.SIGKILL)
    assert job.wait(timeout=120) != 0  # torchrun tears the whole job down
    assert not (run_dir / "metrics.json").exists()
    r = subprocess.run([*launch, "run", "--resume", str(run_dir), "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [row["epoch"] for row in map(json.loads, (run_dir / "student/metrics.jsonl").read_text().splitlines())] == list(range(8))


def test_multi_stage_method_opens_a_fresh_run_dir_once_and_force_replaces_it(tmp_path):
    """Rank 0 opens the folder and the others wait (before: rank 1 found rank 0's folder and refused)."""
    run_dir = tmp_path / "run"
    recipe = {"method": "mutual", "data": RECIPE["data"], "student": RECIPE["student"],
              "distill": {"epochs": 1, "batch_size": 32}, "run_dir": str(run_dir)}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(recipe))
    for extra in ([], ["--force"]):
        if extra:
            (run_dir / "stale.txt").write_text("from an earlier run")
        r = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kdforge", "run",
             str(tmp_path / "m.yaml"), "--quiet", *extra],
            capture_output=True, text=True, timeout=600, env={**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
        assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["student"]["accuracy"] <= 1.0
        assert not (run_dir / "stale.txt").exists()  # --force replaced the folder once, before anyone wrote
