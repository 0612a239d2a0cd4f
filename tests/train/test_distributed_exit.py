"""A process that joined a process group leaves it before interpreter teardown: left to
teardown, gloo aborts a rank now and then (SIGABRT, "terminate called without an active
exception") after a run that succeeded, and torchrun reports the whole job failed."""
import socket
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import atexit, os, sys
    import torch.distributed as tdist
    from kdforge.train import distributed as dist

    # registered first, so it runs last: what is left once kdforge's own exit handlers ran
    atexit.register(lambda: print("initialized at exit:", tdist.is_initialized(), flush=True))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    tdist.init_process_group("gloo")
    ctx = dist.context()
    assert ctx.world == 1 and tdist.is_initialized()
    print(ctx.sum_dict({"a": 2.0}), flush=True)
""")


def test_the_process_group_is_destroyed_before_interpreter_teardown(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "exit.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True, timeout=120,
                       env={"PATH": "", "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": ":".join(sys.path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "{'a': 2.0}" in r.stdout
    assert "initialized at exit: False" in r.stdout, r.stdout
