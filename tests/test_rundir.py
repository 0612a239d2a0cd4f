"""The run-directory lock: held for a block, released on errors, refuses a second holder."""
import os
import socket
import subprocess
import sys

import pytest
import yaml

from kdforge.cli import main
from kdforge.errors import KDForgeError
from kdforge.rundir import lock_path, run_dir_lock


def test_lock_is_exclusive_records_the_pid_and_is_released_on_error(tmp_path):
    run = tmp_path / "runs" / "a"
    with pytest.raises(ValueError):
        with run_dir_lock(run):
            assert f"pid {os.getpid()} " in lock_path(run).read_text()
            with pytest.raises(KDForgeError, match=f"run_dir {run} is in use by another kdforge run \\(pid {os.getpid()} "):
                with run_dir_lock(run):
                    pass
            raise ValueError("the run failed")
    assert not lock_path(run).exists()
    assert not (tmp_path / "runs").exists()  # the folder made for the lock goes with it when nothing else is there
    with run_dir_lock(run):  # free again
        with run_dir_lock(tmp_path / "runs" / "b"):  # another run dir is another lock
            pass


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(KDForgeError, match="is a file"):
        with run_dir_lock(tmp_path / "f"):
            pass
    with pytest.raises(KDForgeError, match="is a file, not a folder"):
        with run_dir_lock(tmp_path / "f" / "run"):
            pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    run = tmp_path / "run"
    lock_path(run).write_text(f"pid {dead} on {socket.gethostname()} since yesterday")
    with run_dir_lock(run):
        assert lock_path(run).read_text().startswith(f"pid {os.getpid()} ")
    assert not lock_path(run).exists()


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()


def test_without_flock_the_recorded_pid_takes_refuses_and_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr("kdforge.rundir.fcntl", None)  # as on a system without flock
    run = tmp_path / "run"
    with run_dir_lock(run):
        assert lock_path(run).read_text().startswith(f"pid {os.getpid()} on {socket.gethostname()} ")
        with pytest.raises(KDForgeError, match=f"run_dir {run} is in use by another kdforge run \\(pid {os.getpid()} "):
            with run_dir_lock(run):
                pass
        assert lock_path(run).read_text().startswith(f"pid {os.getpid()} ")  # the refused one left it alone
    assert not lock_path(run).exists()
    lock_path(run).write_text(f"pid {_dead_pid()} on {socket.gethostname()} since yesterday")
    with run_dir_lock(run):  # a dead run's lock is taken over
        assert lock_path(run).read_text().startswith(f"pid {os.getpid()} ")
    assert not lock_path(run).exists()
    lock_path(run).write_text(f"pid {_dead_pid()} on another-host since yesterday")  # not ours to check: refused
    with pytest.raises(KDForgeError, match=r"in use by another kdforge run \(pid \d+ on another-host"):
        with run_dir_lock(run):
            pass


def _refused(args: list[str], capsys) -> str:
    """`kdforge ARGS` exits 2 with one line naming the holder, as `kdforge run` does."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_demo_and_search_refuse_a_held_run_dir(tmp_path, capsys):
    out = tmp_path / "out"
    recipe = tmp_path / "search.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"name": "digits"}, "teacher": {"name": "mlp", "hidden": [16], "train": {"epochs": 1}},
        "student": {"name": "mlp", "hidden": [8]}, "distill": {"epochs": 1, "losses": [{"kind": "kd"}]}}))
    held = f"error: run_dir {out} is in use by another kdforge run (pid {os.getpid()} "
    with run_dir_lock(out):  # a live run, demo or search holds the folder
        assert _refused(["demo", "--quick", "--out", str(out)], capsys).startswith(held)
        assert _refused(["search", str(recipe), "--trials", "1", "--quiet", "--out", str(out)], capsys).startswith(held)
        assert _refused(["search", str(recipe), "--trials", "1", "--quiet", "--force", "--out", str(out)],
                        capsys).startswith(held)
        assert not out.exists()
    with run_dir_lock(out):  # and both released it
        pass
