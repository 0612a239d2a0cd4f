"""benchmarks/fault_trials.py's shared parts: the trial recipe and store settings, the processes it starts and
kills (whole process trees, SIGKILL), and the trial rows. Used by fault_trials.py and _fault_cache.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RECIPE = {
    "seed": 7,
    "data": {"name": "digits"},
    "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 2, "batch_size": 16, "checkpoint_every": 7}},
    "student": {"name": "mlp", "hidden": [16], "dropout": 0.1},
    "distill": {"epochs": 3, "batch_size": 8, "checkpoint_every": 5,
                "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.7},
                           {"kind": "rkd_distance", "student_layer": "layers.0", "teacher_layer": "layers.0", "weight": 0.5}]},
}
# cache: k=4 priority-sampled ids of 10 plus one feature, 16 samples per shard (many small files: a longer write)
STORE = {"k": 4, "sampling": "priority", "shard_size": 16, "features": ["layers.0"]}
ENV = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 900


def tally(rows: list["Trial"]) -> tuple[int, int]:
    """(trials that passed, trials killed while the process was still running)."""
    return sum(r.ok for r in rows), sum(r.mid_run for r in rows)



# ---- processes ----

def kdforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdforge", *args]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kdforge", *args]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """A process with stderr to `log`."""
    with open(log, "w") as err:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=err)


def finish(p: subprocess.Popen) -> int:
    try:
        return p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(p)
        return -9


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (torchrun starts each worker in a session of its own, so a
    process group is not the whole job)."""
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def _signal(pids, sig: int) -> None:
    for q in pids:
        try:
            os.kill(q, sig)
        except ProcessLookupError:
            pass


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill(p: subprocess.Popen) -> bool:
    """SIGKILL the process and everything it started (torchrun and both workers) at once, as a machine
    failure would: all stopped first, then all killed; returns once every one is dead. Was it still running?"""
    running = p.poll() is None
    pids = process_tree(p.pid)
    _signal(pids, signal.SIGSTOP)  # frozen: nothing more is written or started
    pids = sorted(set(pids) | set(process_tree(p.pid)))
    _signal(pids, signal.SIGKILL)
    p.wait()
    while not all(_dead(q) for q in pids):
        time.sleep(0.01)
    return running


def run_ok(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    code = finish(start(cmd, log))
    if code != 0:
        raise SystemExit(f"reference {' '.join(cmd[2:])} failed ({code}):\n{log.read_text()[-3000:]}")
    return time.time() - t0


def tail(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()] if log.exists() else []
    return (lines[-1][:160] if lines else "").replace("|", "/")


def wait_for(p: subprocess.Popen, cond, poll: float = 0.002) -> None:
    while not cond():
        if p.poll() is not None:
            return
        time.sleep(poll)


@dataclass
class Trial:
    cells: list[str]
    ok: bool
    mid_run: bool


def table(header: list[str], rows: list[Trial]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r.cells) + " |" for r in rows)]


def yes(b: bool) -> str:
    return "yes" if b else "NO"
