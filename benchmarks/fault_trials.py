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
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _fault_cache import cache_trials  # noqa: E402
from _fault_common import (  # noqa: E402  (_dead, process_tree: re-exported for tests/test_fault_trials.py)
    RECIPE, Trial, _dead, finish, kdforge, kill, process_tree, run_ok, start, table, tail, tally, torchrun, wait_for, yes,
)
from _results import RESULTS, machine_line, write_section  # noqa: E402

KINDS = ("run", "cache", "compress", "ddp")
# compress: prune, then a gated distillation recovery, then a gated INT8 quantization
STAGES = ["{kind: prune, method: structured, amount: 0.5}",
          "{kind: recover, epochs: 2, batch_size: 8, max_accuracy_drop: 0.2, against: student}",
          "{kind: quantize, method: int8_dynamic, max_accuracy_drop: 0.05, against: previous}"]
STABLE_METRICS = ("kind", "params", "size_bytes", "accuracy", "loss")  # a stage's measurements minus timings and memory
MAX_DELAY_S = 0.3  # run / ddp: the kill lands this long at most after the target step is reached


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
