"""The run-directory lock: held for a block, released on errors, refuses a second holder."""
import os
import socket
import subprocess
import sys

import pytest

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
