"""benchmarks/fault_trials.py's pure helpers (the trials themselves run for minutes: not a test)."""
import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ft():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its `_results` import
    spec = importlib.util.spec_from_file_location("bench_fault_trials", ROOT / "benchmarks/fault_trials.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(ROOT / "benchmarks"))


def test_kinds_are_parsed_in_a_fixed_order_and_unknown_ones_refused(ft):
    assert ft.parse_kinds("ddp, cache,compress") == ["cache", "compress", "ddp"]
    for bad in ("cache,nope", "", " , "):
        with pytest.raises(argparse.ArgumentTypeError, match="--kinds"):
            ft.parse_kinds(bad)


def test_a_kind_not_run_keeps_its_block_and_a_kind_run_replaces_its_own(ft):
    old = ft.compose("## old header", {"run": "run block 1", "ddp": "ddp block 1"}, "")
    assert set(ft.blocks_of(old)) == {"run", "ddp"}
    new = ft.compose("## new header", {"cache": "cache block", "ddp": "ddp block 2"}, old)
    assert new.startswith("## new header") and "old header" not in new
    assert "run block 1" in new and "ddp block 2" in new and "ddp block 1" not in new
    assert [k for k in ft.KINDS if k in ft.blocks_of(new)] == ["run", "cache", "ddp"]
    assert new.index("run block 1") < new.index("cache block") < new.index("ddp block 2")  # KINDS order
    assert ft.compose("## h", {}, "text without blocks") == "## h"


def test_stage_records_are_compared_without_timings(ft):
    rec = {"name": "00-prune", "gate": None, "metrics": {"accuracy": 0.9, "params": 10, "latency_ms": {"1": 0.3},
                                                         "peak_memory_mb": 5.0}}
    other = json.loads(json.dumps(rec))
    other["metrics"].update(latency_ms={"1": 0.4}, peak_memory_mb=6.0)
    assert ft.stage_view(rec) == ft.stage_view(other)
    other["metrics"]["accuracy"] = 0.8
    assert ft.stage_view(rec) != ft.stage_view(other)


def test_what_a_killed_compression_was_doing(ft, tmp_path):
    names = ["00-prune", "01-recover", "02-quantize"]
    assert ft.running_at(tmp_path, names) == "baseline measurement"
    (tmp_path / "baseline.json").write_text("{}")
    assert ft.running_at(tmp_path, names) == "00-prune"
    (tmp_path / "00-prune").mkdir()
    (tmp_path / "00-prune/stage.json").write_text("{}")
    assert ft.running_at(tmp_path, names) == "01-recover setup"
    (tmp_path / "01-recover").mkdir()
    assert ft.running_at(tmp_path, names) == "01-recover training"
    (tmp_path / "01-recover/result.json").write_text("{}")
    assert ft.running_at(tmp_path, names) == "01-recover measuring"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_kill_takes_down_children_in_sessions_of_their_own(ft):
    """torchrun starts each worker with start_new_session: a process-group kill would leave them running."""
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            "start_new_session=True); print('up', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    tree = ft.process_tree(p.pid)
    assert len(tree) == 2 and tree[0] == p.pid
    assert ft.kill(p) is True
    assert all(ft._dead(q) for q in tree)
