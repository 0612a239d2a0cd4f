"""benchmarks/fault_trials.py, kind `cache`: `kdforge cache-teacher` killed mid-write, then run again; the store it
leaves must open like a training run opens it and equal the uninterrupted reference byte for byte."""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import torch
import yaml

from _fault_common import RECIPE, STORE, ENV, Trial, finish, kdforge, kill, run_ok, start, table, tail, tally, wait_for
from _results import machine_line


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
