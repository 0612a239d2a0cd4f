"""The same recipe under `torchrun --nproc_per_node 2` (gloo, CPU): rank 0 writes, the store is written once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.hf_tiny import tiny_bert_dir, tiny_llama_dir  # noqa: F401  (fixtures)

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
    control = [json.loads(x) for x in (run_dir / "control/metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in control] == [4, 8]  # the control stage ran once for the job, on both ranks' halves
    assert metrics["selection"]["kept"] in ("distilled", "control")


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


# ---- every method under 2 processes: fresh run_dir, then --force; results as 1 process ----
# Each rank takes half of every global batch (train.batching.epoch_batches), so 2 processes at
# batch B train on the same samples per step as 1 process at batch 2B: the recipes below give the
# per-rank batch. Their losses are means over samples (or tokens of equal-length rows), so the
# gradients agree up to float summation order (the MLPs and the tiny Llama have no dropout or BatchNorm).
# Tolerances: test loss and perplexity 0.1 % relative, accuracy 1 point (measured: equal to 1e-6).
# Two exceptions, with looser bounds: `embedding` (the tiny BERT's dropout draws differ between 1 and
# 2 processes; measured |Δ cosine| 0.014) and the `data_free` student (the ranks draw the same global
# noise batch as 1 process and keep their halves, but the generator's BatchNorm normalises per-rank batches).
B = 8  # per-rank batch under torchrun; 1 process runs 2 * B
TEXT = "to be or not to be, that is the question: whether tis nobler in the mind to suffer. " * 12
TOL = {"accuracy": 0.01, "loss": 1e-3, "perplexity": 1e-3, "cosine": 0.03}  # abs (accuracy, cosine) / relative
LOOSE = {("data_free", "student"): {"accuracy": 0.05, "loss": 0.01}}


def _method_recipes(tmp_path, world: int, llama, bert) -> dict[str, dict]:
    b = B * 2 // world
    digits = {"name": "digits", "train_limit": 128}
    mlp_t = {"name": "mlp", "hidden": [32], "train": {"epochs": 1, "batch_size": b, "lr": 2e-2}}
    mlp_s = {"name": "mlp", "hidden": [16]}
    kd = {"epochs": 1, "batch_size": b, "lr": 2e-2, "losses": [{"kind": "kd", "temperature": 2.0, "alpha": 0.5}]}
    (tmp_path / "t.txt").write_text(TEXT)
    rows = "\n".join(f"{'cats purr softly' if i % 2 else 'dogs bark loudly'} number {i},{'a' if i % 2 else 'b'}" for i in range(48))
    (tmp_path / "d.csv").write_text("text,label\n" + rows)
    lm = {"name": "hf", "hf": str(llama), "task": "causal_lm"}
    emb = {"name": "hf", "hf": str(bert), "task": "embed"}
    out = {
        "standard": {"teacher": mlp_t, "student": mlp_s, "distill": kd},
        "born_again": {"student": mlp_s, "born_again": {"generations": 2}, "distill": kd},
        "mutual": {"student": mlp_s, "distill": {"epochs": 1, "batch_size": b, "lr": 2e-2}},
        "data_free": {"teacher": mlp_t, "student": mlp_s, "distill": {"epochs": 1, "batch_size": b, "lr": 2e-2},
                      "data_free": {"batches_per_epoch": 4}},
        "multi_teacher": {"student": mlp_s, "distill": kd,
                          "ensemble": {"teachers": [mlp_t, {**mlp_t, "hidden": [24]}]}},
        "token_kd": {"data": {"name": "text-lm", "path": str(tmp_path / "t.txt"), "tokenizer": str(llama), "max_length": 24,
                              "val_fraction": 0.1, "test_fraction": 0.1},
                     "teacher": lm, "student": {**lm, "layers": [1]},
                     "distill": {"epochs": 1, "batch_size": b, "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}]}},
        "embedding": {"data": {"name": "text", "path": str(tmp_path / "d.csv"), "tokenizer": str(bert), "max_length": 16},
                      "teacher": emb, "student": {**emb, "layers": [0, 2]},
                      "distill": {"epochs": 1, "batch_size": b, "losses": [
                          {"kind": "hint", "student_layer": "embedding", "teacher_layer": "embedding"}, {"kind": "kd"}]}},
    }
    for method, raw in out.items():
        raw.update(method=method, seed=0, run_dir=str(tmp_path / f"w{world}" / method))
        raw.setdefault("data", digits)
    out["standard"]["compress"] = [{"kind": "prune", "amount": 0.5}, {"kind": "recover", "epochs": 1, "batch_size": b},
                                   {"kind": "quantize"}] if world > 1 else []
    return out


def _close(a: float, b: float, key: str, tol: dict) -> bool:
    return abs(a - b) <= tol[key] * (abs(b) if key in ("loss", "perplexity") else 1.0)


def test_every_method_runs_under_two_processes_fresh_and_forced_and_matches_one(tmp_path, tiny_llama_dir, tiny_bert_dir):  # noqa: F811
    from kdforge.recipe_file import parse_recipe
    from kdforge.workflows import run_recipe

    files = []
    for method, raw in _method_recipes(tmp_path, 2, tiny_llama_dir, tiny_bert_dir).items():
        files.append(tmp_path / f"{method}.yaml")
        files[-1].write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(Path(__file__).parent / "torchrun_methods.py"),
         str(tmp_path / "out.json"), *map(str, files)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    for method, raw in _method_recipes(tmp_path, 1, tiny_llama_dir, tiny_bert_dir).items():
        one = run_recipe(parse_recipe(raw), quiet=True)
        for attempt in ("fresh", "force"):
            got = two[method][attempt]
            assert got["code"] == 0 and got["world"] == 2 and not got["stale"], (method, attempt, got)
            assert {"metrics.json", "report.md", "recipe.yaml", "env.json"} <= set(got["files"]), (method, got["files"])
            for role in ("teacher", "student"):
                if role not in one:
                    continue
                tol = {**TOL, **LOOSE.get((method, role), {})}
                for key in set(tol) & set(one[role]):
                    a, b = got["metrics"][role][key], one[role][key]
                    assert _close(a, b, key, tol), (method, attempt, role, key, a, b)
    compressed = two["standard"]["force"]["metrics"]["compress"]  # measured, gated and written by rank 0 only
    assert [s["name"] for s in compressed["stages"]] == ["00-prune", "01-recover", "02-quantize"]


def test_a_bad_recipe_under_torchrun_is_one_error_line_from_rank_0_and_exit_2(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**RECIPE, "run_dir": str(tmp_path / "run"), "distill": {"epochs": -1}}))
    env = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "kdforge", "run", str(tmp_path / "r.yaml")], env=env,
                            capture_output=True, text=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kdforge", "run",
                        str(tmp_path / "r.yaml")], env=env, capture_output=True, text=True, timeout=300)
    lines = (r.stdout + r.stderr).splitlines()
    ours = [x for x in lines if x.startswith("error:")]
    assert ours == single.stderr.splitlines() and len(ours) == 1 and "distill.epochs" in ours[0]
    assert single.returncode == 2
    assert not any(x.startswith("[rank") for x in lines)  # no rank printed a traceback
    assert "exitcode  : 2" in r.stderr  # torchrun's own summary of the failed rank: kdforge's exit code 2
    assert r.returncode != 0
