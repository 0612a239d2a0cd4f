"""Beyond teacher -> student: mutual learning, born-again, data-free and multi-teacher, ≥ 5 seeds.

Every arm runs through `kdforge.workflows.run_recipe` (the recipes in recipes/,
shrunk for time), so the numbers are what a user of those recipes gets. Per seed
the data split, initialisations and batch order change; differences are paired
within a seed.

- mutual:        two peers (MLP 32 and MLP 64) trained together by deep mutual
                 learning vs the same two nets trained alone (same code with the
                 KL weight set to 0: same batches, same selection protocol).
- born-again:    generation 1 (labels) vs generation 2 (learns from generation 1), same MLP 32.
- multi-teacher: three MLP teachers (different seeds; a CNN too on digits) — the
                 ensemble vs the best single teacher (chosen on validation), and
                 the student distilled from the ensemble vs from that best teacher.
- data-free:     (digits) CNN teacher with BatchNorm -> CNN student that only sees
                 generated inputs (DAFL + DeepInversion BN matching + DFAD adversarial term);
                 its test accuracy on real images vs the teacher's.

Writes the "methods" section of benchmarks/RESULTS.md.

    python benchmarks/methods.py [--seeds 5] [--datasets digits mnist5k] [--parts ...] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402
from _stats import compare, holm  # noqa: E402

from kdforge.recipe_file import parse_recipe  # noqa: E402
from kdforge.workflows import run_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = {"digits": 20, "mnist5k": 10}
LR, TEACHER_LR = 0.005, 0.003
STUDENT = {"name": "mlp", "hidden": [32]}
PEERS = [STUDENT, {"name": "mlp", "hidden": [64]}]
BORN_KD = {"kind": "kd", "temperature": 4.0, "alpha": 0.5}
MULTI_KD = {"kind": "kd", "temperature": 4.0, "alpha": 0.8}
DF_TEACHER_EPOCHS = 15  # recipes/data-free.yaml's teacher schedule, shrunk for time
SEARCH_TRIALS = 12


def teachers(dataset: str) -> list[dict]:
    """The multi-teacher arm's three teachers (different seeds; a CNN on digits)."""
    t_train = {"epochs": EPOCHS[dataset], "lr": TEACHER_LR}
    third = {"name": "cnn", "channels": [16, 32]} if dataset == "digits" else {"name": "mlp", "hidden": [256]}
    return [{"name": "mlp", "hidden": [256, 256], "train": t_train}, {"name": "mlp", "hidden": [512], "train": t_train},
            {**third, "train": t_train}]


def describe(model: dict) -> str:
    widths = model.get("hidden") or model.get("channels")
    return f"{model['name'].upper()} {'-'.join(map(str, widths))}"


def run(raw: dict, run_dir: Path) -> dict:
    return run_recipe(parse_recipe({**raw, "run_dir": str(run_dir)}), force=True, quiet=True)


def base(dataset: str, seed: int) -> dict:
    return {"seed": seed, "data": {"name": dataset}, "student": STUDENT, "distill": {"epochs": EPOCHS[dataset], "lr": LR}}


def mutual(dataset: str, seed: int, tmp: Path) -> dict:
    peers, out = PEERS, {}
    for arm, w in (("dml", 1.0), ("alone", 0.0)):
        r = run({**base(dataset, seed), "method": "mutual", "mutual": {"peers": peers, "weight": w}}, tmp / f"mutual-{arm}")
        out.update({f"{arm}_peer{k}": r["models"][f"peer{k}"]["accuracy"] for k in range(2)})
    return out


def born_again(dataset: str, seed: int, tmp: Path) -> dict:
    raw = {**base(dataset, seed), "method": "born_again", "born_again": {"generations": 2}}
    raw["distill"]["losses"] = [BORN_KD]
    r = run(raw, tmp / "born-again")
    return {"gen1": r["models"]["gen1"]["accuracy"], "gen2": r["models"]["gen2"]["accuracy"],
            "gen_ensemble": r["models"]["ensemble"]["accuracy"]}


def multi_teacher(dataset: str, seed: int, tmp: Path) -> dict:
    kd, ts = [MULTI_KD], teachers(dataset)
    raw = {**base(dataset, seed), "method": "multi_teacher", "ensemble": {"teachers": ts, "weighting": "mean"}}
    raw["distill"]["losses"] = kd
    r = run(raw, tmp / "multi")
    val = [r["teacher_stages"][f"teacher{k}"]["best_val"]["accuracy"] for k in range(3)]
    best = max(range(3), key=lambda k: val[k])  # chosen on validation, never on test
    single = {**base(dataset, seed), "method": "standard",
              "teacher": {**ts[best], "checkpoint": str(tmp / f"multi/teacher{best}/checkpoints/best/model.safetensors")}}
    single["distill"]["losses"] = kd
    s = run(single, tmp / "single")
    return {"best_teacher": r["models"][f"teacher{best}"]["accuracy"], "ensemble": r["models"]["teacher_ensemble"]["accuracy"],
            "student_from_ensemble": r["models"]["student"]["accuracy"], "student_from_best": s["student"]["accuracy"]}


def data_free(dataset: str, seed: int, tmp: Path) -> dict:
    import yaml

    raw = yaml.safe_load((ROOT / "recipes/data-free.yaml").read_text())
    raw.update(seed=seed, data={"name": dataset})
    raw["teacher"]["train"]["epochs"] = DF_TEACHER_EPOCHS
    r = run(raw, tmp / "data-free")
    return {"df_teacher": r["models"]["teacher"]["accuracy"], "df_student": r["models"]["student"]["accuracy"]}


def search(dataset: str, seed: int, tmp: Path) -> dict:
    """`kdforge search recipes/search.yaml --trials 12` (digits, the demo's recipe): default vs chosen."""
    from kdforge.recipe_file import load_recipe
    from kdforge.search import run_search

    r = run_search(load_recipe(ROOT / "recipes/search.yaml", [f"seed={seed}"]), SEARCH_TRIALS, tmp / "search")
    pruned = sum(t["state"] == "PRUNED" for t in r["trials"])
    return {"search_default_holdout": r["default"]["mean"], "search_default_holdout_std": r["default"]["std"],
            "search_chosen_holdout": r["chosen"]["mean"], "search_chosen_holdout_std": r["chosen"]["std"],
            "search_default_test": r["test"]["default"], "search_chosen_test": r["test"]["chosen"],
            "search_chosen_trial": r["chosen"]["trial"], "search_pruned": pruned, "search_epochs": r["epochs"],
            "search_reruns": len(r["chosen"]["scores"]),
            "search_params": json.dumps({k: round(v, 3) for k, v in r["chosen"]["params"].items()})}


def one_seed(dataset: str, seed: int, parts: list[str], timings: dict, cache: Path | None = None,
             cached_only: bool = False) -> dict:
    """Numbers of every part for one (dataset, seed); with `cache`, a part already measured is read back
    (so parts can run in separate processes and a final call only renders)."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in parts:
            hit = cache / f"{dataset}-{seed}-{name}.json" if cache else None
            if hit is not None and hit.exists():
                got = json.loads(hit.read_text())
            elif cached_only:
                continue
            else:
                t0 = time.perf_counter()
                got = {"numbers": globals()[name](dataset, seed, Path(d)), "seconds": time.perf_counter() - t0}
                if hit is not None:
                    hit.parent.mkdir(parents=True, exist_ok=True)
                    hit.write_text(json.dumps(got))
            out.update(got["numbers"])
            timings[(dataset, name)] = timings.get((dataset, name), 0.0) + got["seconds"]
    return out


def render(results: dict, seeds: int, timings: dict) -> str:
    lines = ["## Beyond teacher → student (`benchmarks/methods.py`)", "", machine_line(), "",
             f"Up to {seeds} seeds per dataset (column n; each seed: its own split, initialisation and batch order); "
             "test accuracy in %, mean ± std; differences are paired within a seed (paired t-test p; Holm = adjusted over "
             "the arms compared with the same other arm; the verdict reads it).", ""]
    s, p1 = describe(STUDENT), describe(PEERS[1])
    comparisons = [
        (f"mutual learning, {s}", "with peer (DML)", "dml_peer0", "alone", "alone_peer0"),
        (f"mutual learning, {p1}", "with peer (DML)", "dml_peer1", "alone", "alone_peer1"),
        (f"born-again, {s}", "generation 2", "gen2", "generation 1", "gen1"),
        (f"born-again, {s}", "ensemble of gen 1 + 2", "gen_ensemble", "generation 1", "gen1"),
        ("teachers", "3-teacher ensemble", "ensemble", "best single teacher (by val)", "best_teacher"),
        (f"student {s}", "KD from the ensemble", "student_from_ensemble", "KD from the best teacher", "student_from_best"),
        ("data-free, CNN → CNN", "student (generated inputs only)", "df_student", "teacher (real data)", "df_teacher"),
    ]
    for ds, all_rows in results.items():
        lines += [f"### {ds}", "", "| comparison | arm | accuracy % | other arm | accuracy % | difference (pp) | p | Holm p | "
                  "verdict | n |", "|---|---|---:|---|---:|---:|---:|---:|---|---:|"]
        tests = {}
        for _, _, a, _, b in comparisons:
            pairs = [(r[a], r[b]) for r in all_rows if a in r and b in r]
            if pairs:
                tests.setdefault(b, {})[a] = (pairs, compare([x for x, _ in pairs], [y for _, y in pairs], 100))
        family = {b: holm({a: c for a, (_, c) in arms.items()}) if len(arms) > 1 else {a: c for a, (_, c) in arms.items()}
                  for b, arms in tests.items()}
        for what, name_a, a, name_b, b in comparisons:
            if a in tests.get(b, {}):
                pairs = tests[b][a][0]
                lines.append(f"| {what} | {name_a} | {mean_std([x for x, _ in pairs], 100)} | {name_b} | "
                             f"{mean_std([y for _, y in pairs], 100)} | {family[b][a].cells()} | {len(pairs)} |")
        for r in all_rows:
            if "search_chosen_holdout" in r:
                lines += ["", f"`kdforge search recipes/search.yaml --trials {SEARCH_TRIALS}` (seed {all_rows.index(r)}, "
                              f"{r['search_epochs']}-epoch trials, {int(r['search_pruned'])} of {SEARCH_TRIALS} pruned): "
                              f"held-out accuracy over {r['search_reruns']} re-run seeds — default "
                              f"{100 * r['search_default_holdout']:.2f} ± {100 * r['search_default_holdout_std']:.2f} %, chosen "
                              f"(trial {int(r['search_chosen_trial'])}: {r['search_params']}) {100 * r['search_chosen_holdout']:.2f} ± "
                              f"{100 * r['search_chosen_holdout_std']:.2f} %; test accuracy, read once after the choice: default "
                              f"{100 * r['search_default_test']:.2f} %, chosen {100 * r['search_chosen_test']:.2f} %."]
        ratio = [r["df_student"] / r["df_teacher"] for r in all_rows if "df_student" in r]
        if ratio:
            lines += ["", f"Data-free student / teacher test accuracy: {mean_std(ratio, 100)} % (target ≥ 80 %); "
                          f"worst seed {100 * min(ratio):.1f} %, best {100 * max(ratio):.1f} %."]
        lines.append("")
    lines.append(f"Wall seconds per part, all seeds ({os.cpu_count()} shared cores, other jobs running): "
                 + ", ".join(f"{ds}/{p} {t:.0f}" for (ds, p), t in timings.items()) + ".")
    return "\n".join(lines + ["", settings()])


def settings() -> str:
    """The settings sentence, read from the configurations the parts ran (and recipes/data-free.yaml)."""
    import yaml

    df = yaml.safe_load((ROOT / "recipes/data-free.yaml").read_text())
    kd = lambda t: f"T = {t['temperature']:g}, α = {t['alpha']:g}"  # noqa: E731
    teacher_sets = [", ".join(describe(t) for t in teachers(ds)) for ds in EPOCHS]
    return (f"Settings: students {describe(STUDENT)} (lr {LR:g}, "
            + ", ".join(f"{e} epochs on {ds}" for ds, e in EPOCHS.items()) + "; best validation epoch); "
            f"mutual peers {' + '.join(describe(p) for p in PEERS)}, T = 1, the alone arm is the same run with the KL weight 0; "
            f"born-again kd {kd(BORN_KD)}; multi-teacher kd {kd(MULTI_KD)}, mean weighting, teachers "
            + "; ".join(f"{t} ({ds})" for t, ds in zip(teacher_sets, EPOCHS)) + ", trained with different seeds; data-free as "
            f"recipes/data-free.yaml (teacher {describe(df['teacher'])} with BatchNorm, {DF_TEACHER_EPOCHS} epochs; student "
            f"{describe(df['student'])}; {df['distill']['epochs']} epochs × {df['data_free']['batches_per_epoch']} generated "
            f"batches of {df['distill']['batch_size']}; DFAD adversarial weight {df['data_free']['adversarial_weight']:g}).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--data-free-on", nargs="*", default=["digits"], help="datasets that also run the data-free arm")
    ap.add_argument("--parts", nargs="+", default=["data_free", "mutual", "born_again", "multi_teacher", "search"])
    ap.add_argument("--search-seeds", type=int, default=1, help="seeds that also run the search part (digits only)")
    ap.add_argument("--cache", type=Path, default=None, help="keep each part's numbers here; reuse them when present")
    ap.add_argument("--no-write", action="store_true", help="measure (into --cache) without writing RESULTS.md")
    ap.add_argument("--cached-only", action="store_true", help="render what --cache holds; measure nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast and does not fight other processes
    results, timings = {}, {}
    for ds in args.datasets:
        parts = [p for p in args.parts if p != "data_free" or ds in args.data_free_on]
        results[ds] = []
        for seed in range(args.seeds):
            here = [p for p in parts if p != "search" or (ds == "digits" and seed < args.search_seeds)]
            results[ds].append(one_seed(ds, seed, here, timings, args.cache, args.cached_only))
            print(ds, seed, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results[ds][-1].items()}), flush=True)
    if args.no_write:
        return
    write_section("methods", render(results, args.seeds, timings))
    print(render(results, args.seeds, timings))


if __name__ == "__main__":
    main()
