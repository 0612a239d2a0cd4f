"""Shared by every benchmark script: machine/version header and a named section of RESULTS.md.

Each script owns one section (between `<!-- section:NAME -->` markers) and
rewrites only that, so scripts can run in any order.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_line() -> str:
    import torch

    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, torch {v('torch')}, transformers {v('transformers')}, "
        f"onnxruntime {v('onnxruntime')}, kdforge {v('kdforge')}."
    )


def mean_std(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    xs = [x * scale for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}"


def unique_runs(key, *lists: list[dict]) -> list[dict]:
    """Every run of the lists once, the first of those with the same key(run): runs that processes working
    side by side appended to one results file."""
    seen: dict = {}
    for r in (r for runs in lists for r in runs):
        seen.setdefault(key(r), r)
    return list(seen.values())


def write_section(name: str, body: str) -> None:
    """Replace (or append) section `name` of benchmarks/RESULTS.md with `body`.

    Holds an exclusive lock while it reads, edits and renames, so benchmarks run
    side by side never lose each other's sections."""
    import fcntl

    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _replace_section(name, body)


def _replace_section(name: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# kdforge benchmark results\n\nEvery number here is written by a script in `benchmarks/`; rerun it to refresh its section.\n"
    block = f"<!-- section:{name} -->\n{body.strip()}\n<!-- /section:{name} -->"
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- /section:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(f".md.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)
