"""Kill-and-rerun trials: kdforge processes killed with SIGKILL at random moments, then run again.

Four kinds of trial, each compared with an uninterrupted reference run of the same thing
(deterministic CPU mode, 1 thread per process):

  run       `kdforge run RECIPE` killed at a random optimizer step of the job plus a random
            delay (up to MAX_DELAY_S), then `kdforge run --resume RUN`
  cache     `kdforge cache-teacher RECIPE` (a digits teacher, a sharded `store:`) killed at a random
            moment of its store write (while the shards are written, or while the finished store
            replaces the old one), then run again
  compress  `kdforge compress RUN --stage prune --stage recover --stage quantize` (gated) on a
            trained run, killed at a random moment of the compression, then run again
  ddp       `torchrun --nproc_per_node 2 -m kdforge run RECIPE` (gloo on CPU): torchrun and both
            workers killed together at a random optimizer step plus a random delay, then `--resume`d
            under torchrun again

Writes the "fault_trials" section of RESULTS.md: one block per kind; a kind not run this time
keeps its block from the last run that did.

    python benchmarks/fault_trials.py [--trials 20] [--seed 0] [--kinds run,cache,compress,ddp]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _results import RESULTS, machine_line, write_section  # noqa: E402

KINDS = ("run", "cache", "compress", "ddp")
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
# compress: prune, then a gated distillation recovery, then a gated INT8 quantization
STAGES = ["{kind: prune, method: structured, amount: 0.5}",
          "{kind: recover, epochs: 2, batch_size: 8, max_accuracy_drop: 0.2, against: student}",
          "{kind: quantize, method: int8_dynamic, max_accuracy_drop: 0.05, against: previous}"]
STABLE_METRICS = ("kind", "params", "size_bytes", "accuracy", "loss")  # a stage's measurements minus timings and memory
ENV = {**os.environ, "KDFORGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
MAX_DELAY_S = 0.3  # run / ddp: the kill lands this long at most after the target step is reached
TIMEOUT_S = 900


# ---- pure helpers ----

def parse_kinds(text: str) -> list[str]:
    """'cache,compress' -> ['cache', 'compress'] in KINDS order; an unknown kind is an error."""
    asked = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in asked if k not in KINDS]
    if unknown or not asked:
        raise argparse.ArgumentTypeError(f"--kinds: {', '.join(unknown) or 'nothing'} not among {', '.join(KINDS)}")
    return [k for k in KINDS if k in asked]


def _marker(kind: str) -> tuple[str, str]:
    return f"<!-- trials:{kind} -->", f"<!-- /trials:{kind} -->"


def blocks_of(section: str) -> dict[str, str]:
    """The per-kind blocks (markers included) of a fault_trials section's text."""
    out = {}
    for kind in KINDS:
        start, end = _marker(kind)
        m = re.search(re.escape(start) + ".*?" + re.escape(end), section, re.S)
        if m:
            out[kind] = m.group(0)
    return out


def compose(header: str, new: dict[str, str], old_section: str) -> str:
    """The section: `header`, then one block per kind in KINDS order: this run's (`new`, bodies
    without markers), else the block kept from `old_section`."""
    kept = blocks_of(old_section)
    parts = [header.strip()]
    for kind in KINDS:
        start, end = _marker(kind)
        if kind in new:
            parts.append(f"{start}\n{new[kind].strip()}\n{end}")
        elif kind in kept:
            parts.append(kept[kind])
    return "\n\n".join(parts)


def current_section(name: str = "fault_trials") -> str:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.S)
    return m.group(1) if m else ""


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


# ---- kind: run / ddp (training killed at a random step, then --resume) ----

def reached(run_dir: Path, stage: str, step: int) -> bool:
    """Has `stage` written a checkpoint at optimizer step >= `step`? (it may be mid-rename: then no)."""
    try:
        state = torch.load(run_dir / stage / "checkpoints/last/state.pt", weights_only=True)
        return state["loop"]["step"] >= step
    except Exception:
        return (run_dir / stage / "result.json").exists()


def resume_point(run_dir: Path) -> str:
    """Where a resume of a killed run starts: the newest stage's last checkpoint on disk (or its .prev)."""
    for stage in ("student", "teacher"):
        if (run_dir / stage / "result.json").exists():
            return f"{stage} done"
        for ckpt in ("last", "last.prev"):
            try:
                step = torch.load(run_dir / stage / "checkpoints" / ckpt / "state.pt", weights_only=True)["loop"]["step"]
                return f"{stage} step {step}"
            except Exception:
                continue
    return "the start"


def student_weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The student's best-epoch checkpoint (the weights the run reports) and its last checkpoint."""
    return {which: load_file(run_dir / f"student/checkpoints/{which}/model.safetensors") for which in ("best", "last")}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def training_trials(kind: str, work: Path, trials: int, rng: random.Random) -> str:
    launch = torchrun if kind == "ddp" else kdforge
    work.mkdir(parents=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    duration = run_ok(launch("run", str(recipe), "--set", f"run_dir={work / 'ref'}", "--quiet"), work / "ref.log")
    ref = student_weights(work / "ref")
    steps = {stage: json.loads((work / "ref" / stage / "result.json").read_text())["steps"] for stage in ("teacher", "student")}
    world = json.loads((work / "ref/env.json").read_text()).get("world_size", 1)
    rows = []
    for trial in range(trials):
        run_dir, log = work / f"t{trial}", work / f"t{trial}.log"
        # a random optimizer step of the whole job, then a random extra moment so the kill lands between checkpoints
        target = rng.randint(1, steps["teacher"] + steps["student"] - 1)
        stage, step = ("teacher", target) if target <= steps["teacher"] else ("student", target - steps["teacher"])
        delay = rng.uniform(0.0, MAX_DELAY_S)
        p = start(launch("run", str(recipe), "--set", f"run_dir={run_dir}", "--quiet"), log)
        wait_for(p, lambda: reached(run_dir, stage, step), 0.005)
        time.sleep(delay)
        mid_run = kill(p)
        point = resume_point(run_dir)
        code = finish(start(launch("run", "--resume", str(run_dir), "--quiet"), log))
        got = student_weights(run_dir) if code == 0 else {}
        best, last = (same_weights(ref[w], got[w]) if got else False for w in ("best", "last"))
        rows.append(Trial([str(trial), f"{stage} step ≥ {step} + {delay:.2f} s", "yes" if mid_run else "no (had finished)",
                           point, str(code), yes(best), yes(last)], best and last, mid_run))
        print(kind, rows[-1].cells, flush=True)
        if code != 0:
            print(log.read_text()[-2000:], flush=True)
    ok, mid = tally(rows)
    how = ("`torchrun --standalone --nproc_per_node 2 -m kdforge run RECIPE` (gloo on CPU, "
           f"world size {world}); the whole job (torchrun and both workers, each in a session of its own: all stopped, then all "
           "killed) is SIGKILLed"
           if kind == "ddp" else "`kdforge run RECIPE` (one process) is SIGKILLed")
    resume = "`torchrun ... run --resume RUN`" if kind == "ddp" else "`kdforge run --resume RUN`"
    title = "Two-process DDP run killed, then resumed" if kind == "ddp" else "Training run killed, then resumed"
    return "\n".join([
        f"### {title} (`--kinds {kind}`, {trials} trials)", "", machine_line(), "",
        f"Uninterrupted reference: {duration:.1f} s, {steps['teacher']} teacher + {steps['student']} student optimizer steps"
        f"{' per rank' if kind == 'ddp' else ''}. {how} at a random optimizer step of the job (a teacher or student step, "
        f"seen in its last checkpoint) plus a random 0–{MAX_DELAY_S:g} s (so between checkpoints), then resumed with {resume}. "
        "Compared bit for bit with the reference: the student's best-epoch checkpoint "
        "(`student/checkpoints/best/model.safetensors`, the weights the run reports and compresses) and its last "
        "checkpoint (`student/checkpoints/last/model.safetensors`, the weights after the final optimizer step).", "",
        f"**{kind}: {ok}/{trials} resumed runs ended with best-epoch and last-checkpoint student weights bit-identical to "
        f"the uninterrupted run** ({mid} were killed while running; a run that had already finished counts only if its "
        "weights match too).", "",
        *table(["trial", "killed at", "killed mid-run", "checkpoint resumed from", "resume exit code", "best checkpoint bit-identical",
                "last checkpoint bit-identical"], rows),
    ])


# ---- kind: cache (cache-teacher killed mid-write, then run again) ----

def store_files(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def siblings(path: Path) -> list[str]:
    """Folders beside the store named after it (temporary or replaced copies)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


class StoreCheck:
    """Opens a store the way a training run does (meta.json, every shard's shape, the fingerprint of the
    recipe's teacher, training set, k, temperature, sampling), reads every row, and compares every file
    with the reference store."""

    def __init__(self, recipe_path: Path):
        from kdforge.data import load_data
        from kdforge.workflows.teacher_store import recipe_fingerprint
        from kdforge.models.build import build_model
        from kdforge.recipe_file import load_recipe

        recipe = load_recipe(recipe_path, [])
        data = load_data(recipe.data, recipe.seed)
        teacher = build_model(recipe.teacher, data.input_shape, data.num_classes, "teacher", recipe.seed)
        self.fp = recipe_fingerprint(recipe, teacher, data.train)
        self.ref: dict[str, bytes] = {}

    def state(self, path: Path) -> str:
        """'complete' (opens, fingerprint verified, every row read, every file equal to the reference),
        'absent', or 'BROKEN: why'."""
        from kdforge.errors import KDForgeError
        from kdforge.store import TeacherStore

        if not path.exists():
            return "absent"
        try:
            store = TeacherStore(path, self.fp)
            ids = torch.arange(store.n)
            for name in ("values", "indices", "entropy", *(f"feat-{f}" for f in store.meta.get("features", {}))):
                store.rows(name, ids)
        except KDForgeError as e:
            return f"BROKEN: {str(e)[:140]}"
        if self.ref and store_files(path) != self.ref:
            return "BROKEN: opens, but its files differ from the uninterrupted store"
        return "complete"


def cache_trials(work: Path, trials: int, rng: random.Random) -> str:
    work.mkdir(parents=True)
    os.environ["KDFORGE_CACHE"] = ENV["KDFORGE_CACHE"] = str(work / "cache")  # fingerprint hashes: this run's own cache
    (work / "train.yaml").write_text(yaml.safe_dump({**RECIPE, "distill": {**RECIPE["distill"], "epochs": 1}}))
    run_ok(kdforge("run", str(work / "train.yaml"), "--set", f"run_dir={work / 'trained'}", "--quiet"), work / "trained.log")
    teacher = work / "trained/teacher/checkpoints/best/model.safetensors"

    def recipe_for(store: Path) -> Path:
        path = store.parent / "recipe.yaml"
        path.write_text(yaml.safe_dump({**RECIPE, "teacher": {**{k: v for k, v in RECIPE["teacher"].items() if k != "train"},
                                                               "checkpoint": str(teacher)},
                                        "store": {**STORE, "path": str(store)}}))
        return path

    def moment(store: Path, which: str):
        """When the kill's random delay starts: once the writer's temporary folder appears ("tmp"), once its
        meta.json is written ("meta": the last file; what follows is the finished store replacing the old one),
        or once the old store is set aside ("old": renamed away, until it is deleted)."""
        seen: list[str] = []

        def cond() -> bool:
            beside = siblings(store)
            tmps = [s for s in beside if ".tmp" in s]
            seen.extend(tmps)
            if which == "tmp":
                return bool(tmps)
            if which == "old":
                return any(".old" in s for s in beside)
            return bool(seen) and (not tmps or any((store.parent / s / "meta.json").exists() for s in tmps))
        return cond

    # the reference: written (timed from its temporary folder's appearance to the exit), then rewritten over
    # itself (timed from its meta.json, and from the old store set aside, until nothing is left beside the
    # store): the two must be byte-identical (the store is seeded)
    ref_store = work / "ref" / "store"
    ref_store.parent.mkdir()
    check = StoreCheck(recipe_for(ref_store))
    t0 = time.time()
    p = start(kdforge("cache-teacher", str(recipe_for(ref_store))), work / "ref.log")
    wait_for(p, moment(ref_store, "tmp"), 0.001)
    t_tmp = time.time()
    if finish(p) != 0:
        raise SystemExit(f"reference cache-teacher failed:\n{(work / 'ref.log').read_text()[-3000:]}")
    ref_s, write_s = time.time() - t0, time.time() - t_tmp
    first = store_files(ref_store)
    p = start(kdforge("cache-teacher", str(recipe_for(ref_store))), work / "ref2.log")
    wait_for(p, moment(ref_store, "meta"), 0.001)
    t_meta = time.time()
    wait_for(p, lambda: moment(ref_store, "old")() or not siblings(ref_store), 0.001)
    t_old = time.time()
    wait_for(p, lambda: not siblings(ref_store), 0.001)
    t_placed = time.time()
    if finish(p) != 0:
        raise SystemExit(f"reference cache-teacher rewrite failed:\n{(work / 'ref2.log').read_text()[-3000:]}")
    replace_s, old_s = t_placed - t_meta, t_placed - t_old
    window = {"tmp": write_s, "meta": 2 * replace_s, "old": 2 * old_s}
    check.ref = store_files(ref_store)
    verified = check.state(ref_store)
    if verified != "complete" or check.ref != first:
        raise SystemExit(f"the reference store does not verify ({verified}) or its rewrite differs from it")
    n_files = len(check.ref)

    plan = [(False, "tmp"), (False, "meta"), (True, "tmp"), (True, "meta"), (True, "old")]  # (a store there already, moment)
    label = {"tmp": "temporary folder made", "meta": "meta.json written", "old": "old store set aside"}
    rows = []
    for trial in range(trials):
        store = work / f"t{trial}" / "store"
        store.parent.mkdir()
        recipe, log = recipe_for(store), work / f"t{trial}.log"
        existing, which = plan[trial % len(plan)]
        if existing:  # a rewrite (cache-teacher always rewrites)
            shutil.copytree(ref_store, store)
        delay = rng.uniform(0.0, window[which])
        p = start(kdforge("cache-teacher", str(recipe)), log)
        wait_for(p, moment(store, which), 0.001)
        time.sleep(delay)
        mid_run = kill(p)
        after_kill, beside = check.state(store), siblings(store)
        code = finish(start(kdforge("cache-teacher", str(recipe)), log))
        after = check.state(store) if code == 0 else f"exit {code}: {tail(log)}"
        left = siblings(store)
        ok = code == 0 and after == "complete" and not after_kill.startswith("BROKEN") and not left
        rows.append(Trial([str(trial), "yes" if existing else "no",
                           f"{label[which]} + {delay:.3f} s",
                           "yes" if mid_run else "no (had finished)", ", ".join(beside) or "none", after_kill, str(code), after,
                           ", ".join(left) or "none"], ok, mid_run))
        print("cache", rows[-1].cells, flush=True)
    ok, mid = tally(rows)
    return "\n".join([
        f"### Teacher store written by `kdforge cache-teacher`, killed, then run again (`--kinds cache`, {trials} trials)", "",
        machine_line(), "",
        f"The store: a trained digits MLP teacher, priority-sampled k={STORE['k']} ids of 10 with a feature, "
        f"{STORE['shard_size']} samples per shard ({n_files} files). Uninterrupted reference: {ref_s:.1f} s, of which "
        f"{write_s:.2f} s from its temporary folder's appearance to the exit. Rewritten over itself (byte-identical): "
        f"{replace_s:.3f} s from its meta.json (the last file written) until nothing was left beside the store, of which "
        f"the old store was set aside (renamed away, then deleted) for the last {old_s:.3f} s. Trials cycle through five "
        "cases: no store yet or a complete store already at store.path (a rewrite), killed a random time after the "
        f"temporary folder appears (0–{window['tmp']:.2f} s), after its meta.json is written (0–{window['meta']:.3f} s, "
        f"twice the replacement), or (rewrites) after the old store is set aside (0–{window['old']:.3f} s, twice that). "
        "Right after the kill the "
        "store path is opened as a training run opens it: it must be absent or complete, never a partial store. "
        "Then `kdforge cache-teacher` runs again: it must exit 0 and leave a complete store (every shard's shape as meta.json "
        "says, the fingerprint of the recipe's teacher, data, k, temperature and sampling verified, every row read) whose "
        "files are byte-identical to the uninterrupted store's (ids, weights, entropy, features, meta.json), with no "
        "temporary folder left beside it. Beside the store at the kill: the writer's temporary folder (.tmpPID) "
        "while it writes; its set-aside old store (.oldPID) from the moment the old store is renamed away until it "
        "is deleted.", "",
        f"**cache: {ok}/{trials} killed-then-rerun stores were complete, verified their fingerprint and equal the "
        f"uninterrupted store byte for byte, with no partial store readable after the kill and no temporary folder left** "
        f"({mid} were killed while running: {sum('.tmp' in r.cells[4] for r in rows)} while the temporary folder was there, "
        f"{sum('.old' in r.cells[4] for r in rows)} while the old store was set aside).", "",
        *table(["trial", "store existed", "killed at", "killed mid-run", "folders beside it at the kill",
                "store after the kill", "rerun exit code",
                "store after the rerun", "folders left beside it"], rows),
    ])


# ---- kind: compress (stages killed, then run again) ----

def stage_view(record: dict) -> dict:
    """A stage.json record without its timings and memory (which differ between any two runs)."""
    return {**{k: v for k, v in record.items() if k != "metrics"},
            "metrics": {k: record["metrics"].get(k) for k in STABLE_METRICS}}


def compress_state(run_dir: Path) -> dict:
    root = run_dir / "compress"
    stages = {d.name: stage_view(json.loads((d / "stage.json").read_text()))
              for d in sorted(root.glob("[0-9][0-9]-*")) if (d / "stage.json").exists()}
    weights = {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*.safetensors"))}
    summary = json.loads((run_dir / "metrics.json").read_text()).get("compress", {})
    gates = [s.get("gate") for s in summary.get("stages", [])]
    return {"stages": stages, "weights": weights, "gates": gates,
            "last_passing": Path(summary.get("last_passing", "?")).name}


def running_at(root: Path, names: list[str]) -> str:
    """What a compression killed now was doing, from the files it had written."""
    if not (root / "baseline.json").exists():
        return "baseline measurement"
    for name in names:
        if not (root / name / "stage.json").exists():
            if name.endswith("recover"):  # its folder appears when training starts, result.json when it ends
                return f"{name} {'measuring' if (root / name / 'result.json').exists() else 'training' if (root / name).exists() else 'setup'}"
            return name
    return "summary / report"


def compress_trials(work: Path, trials: int, rng: random.Random) -> str:
    work.mkdir(parents=True)
    (work / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    train_s = run_ok(kdforge("run", str(work / "recipe.yaml"), "--set", f"run_dir={work / 'trained'}", "--quiet"), work / "trained.log")
    args = [a for s in STAGES for a in ("--stage", s)]

    def fresh(run_dir: Path) -> None:
        shutil.copytree(work / "trained", run_dir)

    fresh(work / "ref")
    names = [f"{i:02d}-{yaml.safe_load(st)['kind']}" for i, st in enumerate(STAGES)]
    t0 = time.time()
    p = start(kdforge("compress", str(work / "ref"), *args, "--quiet"), work / "ref.log")
    wait_for(p, lambda: (work / "ref/compress").exists(), 0.002)
    t_dir, done_s = time.time(), {}
    for name in names:  # when each stage's record appears
        wait_for(p, lambda: (work / "ref/compress" / name / "stage.json").exists(), 0.002)
        done_s[name] = time.time() - t_dir
    if finish(p) != 0:
        raise SystemExit(f"reference compress failed:\n{(work / 'ref.log').read_text()[-3000:]}")
    total_s, after_s = time.time() - t0, time.time() - t_dir
    window = 1.25 * done_s[names[-1]]  # the stages, and a quarter as long again: the summary and report after them
    ref = compress_state(work / "ref")
    ref_gates = [g for g in ref["gates"] if g]
    if len(ref["stages"]) != len(STAGES) or len(ref_gates) != 2 or not all(g["passed"] for g in ref_gates):
        raise SystemExit(f"the reference compression is not the one described: {ref['stages'].keys()}, gates {ref['gates']}")

    rows = []
    for trial in range(trials):
        run_dir, log = work / f"t{trial}", work / f"t{trial}.log"
        fresh(run_dir)
        delay = rng.uniform(0.0, window)
        p = start(kdforge("compress", str(run_dir), *args, "--quiet"), log)
        wait_for(p, lambda: (run_dir / "compress").exists(), 0.002)
        time.sleep(delay)
        mid_run = kill(p)
        killed_in = running_at(run_dir / "compress", names) if mid_run else "-"
        code = finish(start(kdforge("compress", str(run_dir), *args, "--quiet"), log))
        got = compress_state(run_dir) if code == 0 else None
        stages_ok = got is not None and got["stages"] == ref["stages"] and got["last_passing"] == ref["last_passing"]
        weights_ok = got is not None and got["weights"] == ref["weights"]
        gates_ok = got is not None and got["gates"] == ref["gates"]
        rows.append(Trial([str(trial), f"+ {delay:.2f} s", "yes" if mid_run else "no (had finished)",
                           killed_in, str(code) if code == 0 else f"{code}: {tail(log)}",
                           yes(stages_ok), yes(weights_ok), yes(gates_ok)], stages_ok and weights_ok and gates_ok, mid_run))
        print("compress", rows[-1].cells, flush=True)
    ok, mid = tally(rows)
    gates = "; ".join(f"{name}: {g['against']} {g['reference']:.4f} → {g['accuracy']:.4f}, drop {g['drop'] * 100:.2f} points "
                      f"≤ {g['max_accuracy_drop'] * 100:g} allowed" for name, g in
                      ((n, r["gate"]) for n, r in ref["stages"].items() if r.get("gate")))
    return "\n".join([
        f"### Compression stages killed, then run again (`--kinds compress`, {trials} trials)", "", machine_line(), "",
        f"A digits run trained once ({train_s:.1f} s, not killed), copied for each trial; then `kdforge compress RUN` with the "
        f"stages {', '.join(f'`{s}`' for s in STAGES)}. Uninterrupted reference: {total_s:.1f} s; after RUN/compress/ "
        f"appears (the run loaded), each stage's stage.json was written at "
        f"{', '.join(f'{n} {t:.1f} s' for n, t in done_s.items())} (00-prune's time includes the baseline measurement) and the "
        f"process ended at {after_s:.1f} s (summary, metrics.json, report); its gates: {gates}. Each trial SIGKILLs the "
        f"compression a random 0–{window:.1f} s after RUN/compress/ appears (the stages and a quarter as long again), then runs the "
        "same `kdforge compress` again (it skips the stages with a stage.json and redoes the others from their start: "
        "an unfinished recovery's folder, checkpoints included, is removed, so a killed recovery retrains from step 0). "
        "Compared with the reference: every stage's stage.json (config, notes, accuracy, "
        "loss, parameters, size, gate verdict; not its latencies), the last passing artifact, every weight file under "
        "RUN/compress/ byte for byte (the pruned model, the recovered model and its best and last checkpoints), and the "
        "gate verdicts recorded in metrics.json.", "",
        f"**compress: {ok}/{trials} killed-then-rerun compressions finished with stage records, weight files and gate "
        f"verdicts equal to the uninterrupted run's** ({mid} were killed while running).", "",
        *table(["trial", "killed after RUN/compress/ appeared", "killed mid-run", "killed in",
                "rerun exit code", "stage records equal", "weight files byte-identical", "gates recorded, equal"], rows),
    ])


TRIALS = {"run": lambda w, n, r: training_trials("run", w, n, r), "cache": cache_trials,
          "compress": compress_trials, "ddp": lambda w, n, r: training_trials("ddp", w, n, r)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", type=parse_kinds, default=list(KINDS), help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a new temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md as it is")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="kdforge-faults-"))
    print(f"work folder {work}", flush=True)
    new = {}
    for kind in args.kinds:
        rng = random.Random(f"{args.seed}-{kind}")  # each kind's kill moments independent of which others run
        t0 = time.time()
        block = TRIALS[kind](work / kind, args.trials, rng)
        new[kind] = (f"{block}\n\nMeasured by `python benchmarks/fault_trials.py --kinds {kind} --trials {args.trials} "
                     f"--seed {args.seed}` (or a run of several kinds) in {(time.time() - t0) / 60:.1f} min.")
        print(new[kind], flush=True)
    header = "\n".join([
        "## Kill-and-rerun trials (`benchmarks/fault_trials.py`)", "",
        "Each kind below: kdforge processes SIGKILLed at random moments, then run again (or resumed), and compared "
        "with an uninterrupted run of the same thing; deterministic CPU mode, 1 thread per process. Each block is "
        "written by the run that measured it (`--kinds` reruns only some).",
    ])
    body = compose(header, new, current_section())
    if not args.no_write:
        write_section("fault_trials", body)
    print(body)


if __name__ == "__main__":
    main()
