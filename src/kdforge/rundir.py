"""Atomic file writes, the run directory's fixed files (recipe, environment, metrics)
and the run-directory lock that keeps two live runs out of one folder."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from kdforge.errors import KDForgeError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: the recorded pid is checked instead)
    fcntl = None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renamed over it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def lock_path(run_dir: Path) -> Path:
    """The lock sits beside the run directory (RUN -> .RUN.lock), so it never shows up in the
    run's own files and survives `--force` replacing the folder."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.lock"


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `run_dir` for the duration of the block.

    A second live run into the same folder gets a one-line KDForgeError at once (naming the
    pid holding it) instead of sharing, replacing or resuming the folder under the first.
    The lock is an OS file lock (flock), so a run that died leaves at most a stale lock
    file, which the next run takes over; where flock is missing the recorded pid is checked.
    """
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise KDForgeError(f"run_dir {run_dir} is a file; give a folder for the run")
    path = lock_path(run_dir)
    if path.parent.exists() and not path.parent.is_dir():
        raise KDForgeError(f"run_dir {run_dir}: {path.parent} is a file, not a folder")
    made_parent = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, run_dir)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # before releasing: a waiter that opened the old file retries on the new one
        except OSError:
            pass
        os.close(fd)
        if made_parent:
            try:
                path.parent.rmdir()  # only if the run left nothing there (a refused or failed run)
            except OSError:
                pass


def _acquire(path: Path, run_dir: Path) -> int:
    if fcntl is None:  # Windows: the recorded pid is checked instead
        fd = _open_pid_lock(path, run_dir)
    else:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode(errors="replace").strip()
                os.close(fd)
                _refuse(run_dir, holder)
            try:  # the holder may have removed the file between our open and flock: lock the live one
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    return fd


def _open_pid_lock(path: Path, run_dir: Path) -> int:
    """Without flock: the lock file is created exclusively; one that exists names its holder's pid and host,
    and is taken over only when that pid is gone from this host."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            holder = path.read_text(errors="replace").strip()
        except FileNotFoundError:
            holder = ""  # released meanwhile: take it below
    parts = holder.split()  # "pid N on HOST since ..."
    pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    if pid is not None and (len(parts) < 4 or parts[3] != socket.gethostname()):
        _refuse(run_dir, holder)  # another machine's process (a shared folder): not ours to check
    if pid is not None:
        try:
            os.kill(pid, 0)
            _refuse(run_dir, holder)
        except ProcessLookupError:
            pass  # a dead run's lock: take it over
        except PermissionError:
            _refuse(run_dir, holder)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process took it first
        _refuse(run_dir, path.read_text(errors="replace").strip())


def _refuse(run_dir: Path, holder: str) -> None:
    raise KDForgeError(f"run_dir {run_dir} is in use by another kdforge run ({holder or 'unknown pid'}); "
                       "wait for it to finish or choose another run_dir")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    out = []
    for k, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise
            # a process killed mid-append leaves a partial last line: that line was never complete
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict) -> None:
    """One more line (mid-epoch evaluations); a line is one write, so a crash leaves whole lines."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_jsonable) + "\n")


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(seed: int) -> dict[str, Any]:
    """Seed, package versions, git hash and machine: what a reader needs to reproduce a number."""
    versions = {}
    for pkg in ("kdforge", "torch", "transformers", "accelerate", "numpy", "scikit-learn", "onnxruntime"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    import torch

    return {
        "seed": seed,
        "versions": versions,
        "git": git_hash(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": sys.argv,
    }
