"""Does distillation help, and is the gain real? A small MLP student, 10 seeds, paired tests.

Arms, all with the same student architecture, budget and seeds:
- alone:            cross-entropy on the labels
- hard labels:      cross-entropy on the teacher's argmax (no soft targets)
- vanilla KD:       α·T²·KL + (1−α)·CE  (T=4, α=0.8; Hinton et al. 2015)
- DKD:              decoupled KD (Zhao et al. 2022; α=1, β=8, T=4) + CE
- KD + LS:          KD on z-scored logits (Sun et al. 2024; T=4, α=0.9)
- DIST:             Pearson relations (Huang et al. 2022; β=γ=2, T=1) + CE
- kdforge default:  what a recipe without loss settings does (config.recommended_losses(),
                    `auto` fields searched on held-out training data, exactly as
                    `kdforge run` and `kdforge.distill` do)
- negative control: the default from a teacher trained on the SAME few labels as the
                    student (it knows nothing the student could not learn).

Regimes: the full transfer set; few labels (N labels in all, the teacher was trained on
the full set); few labels + the rest of the training split as an unlabelled pool the
teacher labels (`data.labelled`). The few labels are the whole label budget of every
few-label arm, student alone and negative control included: they are split into the
student's training labels and the validation labels that choose its best epoch
(VAL_SHARE of them). On digits also Hinton's omitted-3 experiment, raw and with per-class
bias calibration. Every arm's Δ is a paired t-test over seeds (benchmarks/_stats.py), with
Holm-adjusted p-values over the arms compared to the same baseline in one regime; compute
per arm counts student epochs (search trials included) and teacher forward passes.
Writes the section `kd_gain` (digits) or `kd_gain-mnist5k` of RESULTS.md after every seed;
each seed's row is also kept in runs/benchmarks/ so `--resume` continues a stopped run.

    python benchmarks/kd_gain.py --dataset digits  [--seeds 10] [--few 100] [--threads 1] [--resume]
    python benchmarks/kd_gain.py --dataset mnist5k
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402
from _stats import compare, holm  # noqa: E402

from kdforge.control import choose  # noqa: E402
from kdforge.config import (  # noqa: E402
    DataConfig, DistillConfig, DISTTerm, DKDTerm, KDTerm, LabelTerm, ModelConfig, TrainConfig,
    recommended_losses, with_recommended_losses,
)
from kdforge.data import load_data  # noqa: E402
from kdforge.data.builtin import keep_labels  # noqa: E402
from kdforge.data.checks import stratified_split  # noqa: E402
from kdforge.models.build import build_model  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.registry import METHODS  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
from kdforge.train.calibrate import calibrate_bias  # noqa: E402
from kdforge.train.evaluate import predict  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402
from kdforge.tuning import resolve_auto  # noqa: E402

TEACHER = ModelConfig(name="mlp", hidden=[256, 256], dropout=0.2)
STUDENT = ModelConfig(name="mlp", hidden=[32])
EPOCHS, LR = 40, 5e-3
OMITTED = 3
OMIT_T = 20.0  # Hinton's omitted-class experiment: soft targets only, at this temperature
VAL_SHARE = 0.2  # of the few labels: the validation labels that choose each few-label arm's best epoch
ROWS = Path(__file__).resolve().parents[1] / "runs/benchmarks"  # one JSON line per finished seed (--resume)
CE = LabelTerm(kind="ce")
ARMS = {  # name -> (label, method, losses); None = the recommended default (config.recommended_losses)
    "alone": ("alone", "supervised", [CE]),
    "hard": ("teacher's hard labels", "standard", [LabelTerm(kind="hard_ce")]),
    "kd": ("vanilla KD (T=4, α=0.8)", "standard", [KDTerm(temperature=4.0, alpha=0.8)]),
    "dkd": ("DKD (α=1, β=8, T=4) + CE", "standard", [DKDTerm(), CE]),
    "ls": ("KD + LS (T=4, α=0.9)", "standard", [KDTerm(temperature=4.0, alpha=0.9, standardize=True)]),
    "dist": ("DIST (β=γ=2) + CE", "standard", [DISTTerm(beta=2.0, gamma=2.0), CE]),
    "default": ("**kdforge default**", "standard", None),
}


def train(model_cfg, method, teacher, data, cfg, seed, shape, classes):
    """A fresh model trained by `method`; `auto` fields resolved first, as run_recipe does.
    Returns (model, resolved cfg, work): work = student epochs and teacher forward samples, search included, and
    the best epoch's validation accuracy (val; what kdforge.control.choose reads)."""
    model = build_model(model_cfg, shape, classes, "model", seed + 1)
    with tempfile.TemporaryDirectory() as d:
        work = {"epochs": 0, "teacher": 0}
        if teacher is not None:
            cfg = resolve_auto(cfg, teacher, model, data.train, seed, Path(d) / "auto")
            if (Path(d) / "auto/auto.json").is_file():  # the search ran: its trainings are this arm's compute too
                spent = json.loads((Path(d) / "auto/auto.json").read_text())
                work = {"epochs": spent["student_epochs_spent"], "teacher": spent["teacher_forward_samples"]}
        m = METHODS.build(method, model, copy.deepcopy(teacher) if teacher is not None else None, cfg, probe_batch(data.train))
        res = fit(m, data.train, data.val, cfg, Path(d), seed, quiet=True)
        work["epochs"] += len(res.history)
        work["teacher"] += getattr(getattr(m, "teacher", None), "samples", 0) or 0
        work["val"] = res.best["val/accuracy"]
    return model, cfg, work


def counted(full, few: int, seed: int, pool: bool = False):
    """`few` labels in all: the first `few` training samples (those data.train_limit / data.labelled keep), split
    stratified into the student's training labels and VAL_SHARE validation labels (the only labels that choose its
    best epoch). pool: the rest of the training split follows, unlabelled, for the teacher to label."""
    tr, va = stratified_split(full.train.y[:few].numpy(), np.arange(few), VAL_SHARE, seed, "the few labels")
    train = full.train.subset(tr)
    if pool:
        train = keep_labels(full.train.subset(np.concatenate([tr, np.arange(few, len(full.train))])), len(tr))
    return dataclasses.replace(full, train=train, val=full.train.subset(va))


def accuracy(model, dataset, keep=None) -> float:
    logits, y = predict(model, dataset)
    hit = logits.argmax(-1) == y
    return hit[keep(y)].float().mean().item() if keep is not None else hit.float().mean().item()


def distill_cfg(losses, epochs) -> DistillConfig:
    """losses None: the recommended default a recipe without loss settings gets."""
    if losses is None:
        return with_recommended_losses(DistillConfig(epochs=epochs, lr=LR), "standard")
    return DistillConfig(epochs=epochs, lr=LR, losses=losses)


def one_seed(dataset: str, seed: int, few: int) -> dict[str, float]:
    full = load_data(DataConfig(name=dataset), seed)
    shape, classes = full.input_shape, full.num_classes
    few_data, pool = counted(full, few, seed), counted(full, few, seed, pool=True)
    out = {"seed": seed, "few_train": len(few_data.train), "few_val": len(few_data.val), "train_size": len(full.train)}

    def run(name, *a):  # a trained model; its test accuracy and compute are read by the caller
        model, cfg, work = train(*a, seed, shape, classes)
        out[f"{name}:epochs"], out[f"{name}:teacher"], out[f"{name}:val"] = work["epochs"], work["teacher"], work["val"]
        return model, cfg

    teacher, _ = run("teacher", TEACHER, "supervised", None, full, TrainConfig(epochs=30))
    weak_teacher, _ = run("weak_teacher", TEACHER, "supervised", None, few_data, TrainConfig(epochs=120))
    out.update(teacher=accuracy(teacher, full.test), weak_teacher=accuracy(weak_teacher, full.test))
    for regime, data, epochs in (("full", full, EPOCHS), ("few", few_data, 4 * EPOCHS)):
        for arm, (_, method, losses) in ARMS.items():
            model, cfg = run(f"{regime}/{arm}", STUDENT, method, teacher, data, distill_cfg(losses, epochs))
            out[f"{regime}/{arm}"] = accuracy(model, full.test)
            if arm == "default":
                out[f"{regime}/default_T"], out[f"{regime}/default_alpha"] = cfg.losses[0].temperature, cfg.losses[0].alpha
    model, _ = run("few/negative_control", STUDENT, "standard", weak_teacher, few_data, distill_cfg(None, 4 * EPOCHS))
    out["few/negative_control"] = accuracy(model, full.test)
    model, _ = run("pool/default", STUDENT, "standard", teacher, pool, distill_cfg(None, EPOCHS))
    out["pool/default"] = accuracy(model, full.test)
    if dataset == "digits":
        out.update(omitted(seed, teacher, full, lambda *a: train(*a, seed, shape, classes)[:2]))
    return out


def omitted(seed, teacher, full, run) -> dict[str, float]:
    """Hinton's §3 on digits: no 3 in the transfer set; the KD student raw and with fitted per-class biases."""
    no3 = load_data(DataConfig(name="digits", omit_classes=[OMITTED]), seed)
    omit = dict(epochs=2 * EPOCHS, lr=1e-2)
    alone, _ = run(STUDENT, "supervised", None, no3, DistillConfig(**omit))
    kd, _ = run(STUDENT, "standard", teacher, no3, DistillConfig(**omit, losses=[KDTerm(temperature=OMIT_T, alpha=1.0)]))
    # calibration set: the validation split WITH its 3s (same seed, same split), labelled by the teacher
    bias = calibrate_bias(kd, full.val, teacher)
    z, y = predict(kd, full.test)  # the KD student's test logits, once; calibration only adds the bias
    is3 = y == OMITTED
    rate = lambda hit, keep: hit[keep].float().mean().item()  # noqa: E731
    raw, cal = z.argmax(-1) == y, (z + bias).argmax(-1) == y
    return {
        "omit/alone_on_3": accuracy(alone, full.test, keep=lambda t: t == OMITTED),
        "omit/kd_on_3": rate(raw, is3), "omit/kd_on_rest": rate(raw, ~is3),
        "omit/cal_on_3": rate(cal, is3), "omit/cal_on_rest": rate(cal, ~is3),
        "omit/cal_overall": cal.float().mean().item(), "omit/kd_overall": raw.float().mean().item(),
        "omit/bias_3": bias[OMITTED].item(),
    }


CONTROLLED = {"full/with_control": ("full/default", "full/alone"), "few/with_control": ("few/default", "few/alone"),
              "pool/with_control": ("pool/default", "few/alone")}  # what a run keeps: (distilled arm, its control)


def add_controlled(col: dict) -> dict[str, int]:
    """Per seed, what a run with `distill.control` keeps: the default arm, or the student alone (same data, same
    labels, same schedule) when it is strictly better on validation, as kdforge.control.choose decides; both trained,
    so their compute adds up. Adds the rows to `col`; returns how many seeds kept the control, per row."""
    kept = {}
    for key, (kd, alone) in CONTROLLED.items():
        picks = [choose({"best_val": {"accuracy": v}}, {"best_val": {"accuracy": c}})["kept"]
                 for v, c in zip(col[f"{kd}:val"], col[f"{alone}:val"])]
        col[key] = [col[alone][i] if p == "control" else col[kd][i] for i, p in enumerate(picks)]
        for part in ("epochs", "teacher"):
            col[f"{key}:{part}"] = [a + b for a, b in zip(col[f"{kd}:{part}"], col[f"{alone}:{part}"])]
        kept[key] = picks.count("control")
    return kept


def families(col: dict, regime: str) -> tuple[dict, dict]:
    """The paired comparisons of one regime (points), each family Holm-adjusted: every arm against the student alone
    (in the few-label regime also the negative control and the pool row), every other KD arm against vanilla KD."""
    others = [f"{regime}/{a}" for a in ARMS if a != "alone"]
    extra = [f"{regime}/with_control"] + (["few/negative_control", "pool/default", "pool/with_control"]
                                          if regime == "few" else [])
    vs_alone = holm({k: compare(col[k], col[f"{regime}/alone"], 100) for k in others + extra})
    vs_kd = holm({k: compare(col[k], col[f"{regime}/kd"], 100) for k in others if k != f"{regime}/kd"})
    return vs_alone, vs_kd


def compute(col: dict, key: str) -> str:
    """Per-arm compute, mean over seeds: student epochs (search trials included) | teacher forward samples."""
    return f"{statistics.mean(col[key + ':epochs']):,.0f} | {statistics.mean(col[key + ':teacher']):,.0f}"


def render(dataset: str, rows: list[dict], args, teacher_params: int, student_params: int) -> str:
    col = {k: [r[k] for r in rows] for k in rows[0]}
    n, few, r0 = len(rows), args.few, rows[0]
    kept = add_controlled(col)
    auto = distill_cfg(None, EPOCHS).auto
    none = "— | — | — | —"
    lines = [
        f"## KD gain on {dataset} (`benchmarks/kd_gain.py --dataset {dataset} --seeds {args.seeds} --few {few}`, "
        f"{n} of {args.seeds} seeds)", "",
        machine_line() + f" Wall time {sum(col['seconds']):.0f} s; seeds {', '.join(str(s) for s in col['seed'])}.", "",
        f"Teacher MLP {TEACHER.hidden} ({teacher_params:,} params, {mean_std(col['teacher:epochs'], digits=0)} epochs, "
        f"shared by every arm and not counted in an arm's compute): test accuracy {mean_std(col['teacher'], 100)} %. "
        f"Student MLP {STUDENT.hidden} ({student_params:,} params), {EPOCHS} epochs (×4 with few labels), lr {LR}, best "
        "epoch chosen on the validation split. Accuracy in %, mean ± std over seeds; Δ = arm − baseline in points, "
        "paired per seed (t-test); Holm = Holm-adjusted p over the arms compared to the same baseline in the same regime "
        "(the verdict reads it). "
        f"**kdforge default** = `config.recommended_losses()` ({default_losses()}), its `auto` fields searched "
        f"({auto.trials} trials) on {auto.holdout_fraction:.0%} of the training split held out, before training, as a "
        "recipe without loss settings does. Compute per arm, mean over seeds: student epochs (search trials included) "
        "and samples forwarded through the teacher (search included).", "",
        f"**Few labels, counted**: {few} labels in all for every few-label arm, the student alone and the negative "
        f"control included: {r0['few_train']} train the student and {r0['few_val']} (stratified) choose its best epoch; "
        "the default's search holds out part of the same training labels. No other label is read before the test.", "",
        "| regime | arm | student test accuracy | Δ vs alone | p | Holm p | verdict | Δ vs vanilla KD | p | Holm p | verdict "
        "| student epochs | teacher forwards |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    regimes = (("full", f"full transfer set ({r0['train_size']:,})"),
               ("few", f"{few} labels ({r0['few_train']} train + {r0['few_val']} validation)"))
    fam = {}
    for regime, label in regimes:
        vs_alone, vs_kd = fam[regime] = families(col, regime)
        for arm, (name, _, _) in ARMS.items():
            key = f"{regime}/{arm}"
            lines.append(f"| {label} | {name} | {mean_std(col[key], 100)} | {vs_alone[key].cells() if key in vs_alone else none} | "
                         f"{vs_kd[key].cells() if key in vs_kd else none} | {compute(col, key)} |")
        key = f"{regime}/with_control"
        lines.append(f"| {label} | {controlled_label(kept[key], n)} | {mean_std(col[key], 100)} | "
                     f"{vs_alone[key].cells()} | {none} | {compute(col, key)} |")
    vs_alone = fam["few"][0]
    lines.append(
        f"| {regimes[1][1]} | **negative control**: the default from a teacher trained on the same {few} labels "
        f"(teacher {mean_std(col['weak_teacher'], 100)}) | {mean_std(col['few/negative_control'], 100)} | "
        f"{vs_alone['few/negative_control'].cells()} | {none} | {compute(col, 'few/negative_control')} |")
    lines.append(
        f"| {few} labels ({r0['few_train']} + {r0['few_val']}) + {r0['train_size'] - few:,} unlabelled the teacher labels "
        f"(`data.labelled`) | kdforge default | {mean_std(col['pool/default'], 100)} | {vs_alone['pool/default'].cells()} | "
        f"{none} | {compute(col, 'pool/default')} |")
    lines.append(
        f"| {few} labels ({r0['few_train']} + {r0['few_val']}) + {r0['train_size'] - few:,} unlabelled the teacher labels "
        f"(`data.labelled`) | {controlled_label(kept['pool/with_control'], n)} | {mean_std(col['pool/with_control'], 100)} | "
        f"{vs_alone['pool/with_control'].cells()} | {none} | {compute(col, 'pool/with_control')} |")
    chosen = [f"T={r['full/default_T']:.2g}, α={r['full/default_alpha']:.2f}" for r in rows]
    chosen_few = [f"T={r['few/default_T']:.2g}, α={r['few/default_alpha']:.2f}" for r in rows]
    lines += ["", f"`auto` chose, per seed — full: {'; '.join(chosen)}. Few labels: {'; '.join(chosen_few)}.",
              "", f"Δ of the negative control and the pool rows is against the student alone on the same {few} labels (the pool row's control is that student: a control trains on the labelled part only)."]
    if "omit/kd_on_3" in col:
        lines += omitted_lines(col)
    (fa, fk), (ga, gk) = fam["full"], fam["few"]
    lines += ["", "Reading (paired t-test over seeds, Holm-adjusted within each family): on the full transfer set the "
              f"kdforge default against the student alone: {fa['full/default'].text()}; vanilla KD against the student "
              f"alone: {fa['full/kd'].text()}. With {few} labels in all: the default against the student alone: "
              f"{ga['few/default'].text()}; against vanilla KD: {gk['few/default'].text()}; the negative control against "
              f"the student alone: {ga['few/negative_control'].text()}; the default with the unlabelled pool against "
              f"the student alone: {ga['pool/default'].text()}. What a run keeps with its control arm "
              "(`distill.control`, the default or the student alone, chosen on validation) against the student alone: "
              f"full transfer set {fa['full/with_control'].text()}; {few} labels {ga['few/with_control'].text()}; "
              f"with the unlabelled pool {ga['pool/with_control'].text()}."]
    return "\n".join(lines)


def controlled_label(kept: int, n: int) -> str:
    return (f"**default with its control** (kept on validation: the default {n - kept}×, the student alone {kept}×; "
            "both trained)")


def omitted_lines(col: dict) -> list[str]:
    ratio = [c / r for c, r in zip(col["omit/cal_on_3"], col["omit/cal_on_rest"])]
    return [
        "", f"### Omitted class (Hinton et al. 2015, §3): no {OMITTED} in the transfer set", "",
        f"KD student: T = {OMIT_T:g}, soft targets only, {2 * EPOCHS} epochs. Calibrated: per-class logit biases fitted "
        f"(`kdforge.train.calibrate`) on the validation split with its {OMITTED}s, to the teacher's probabilities "
        "(no labels used); the student's weights are unchanged.", "",
        f"| arm | accuracy on test {OMITTED}s | accuracy on the other digits | overall |", "|---|---:|---:|---:|",
        f"| student alone | {mean_std(col['omit/alone_on_3'], 100)} | — | — |",
        f"| student KD, raw | {mean_std(col['omit/kd_on_3'], 100)} | {mean_std(col['omit/kd_on_rest'], 100)} | {mean_std(col['omit/kd_overall'], 100)} |",
        f"| student KD, bias-calibrated | {mean_std(col['omit/cal_on_3'], 100)} | {mean_std(col['omit/cal_on_rest'], 100)} | {mean_std(col['omit/cal_overall'], 100)} |",
        "", f"Calibrated accuracy on {OMITTED}s is {mean_std(ratio, 100)} % of the calibrated student's accuracy on the "
        f"other digits (target ≥ 98 %; worst seed {min(ratio) * 100:.1f} %); fitted bias of class {OMITTED}: "
        f"{mean_std(col['omit/bias_3'])} (Hinton et al. added a bias by hand).",
    ]


def default_losses() -> str:
    return ", ".join(f"{t.kind}({', '.join(f'{k}={v}' for k, v in t.model_dump().items() if k not in ('kind', 'weight'))})"
                     for t in recommended_losses())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--few", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="reuse the seeds a stopped run finished (runs/benchmarks/)")
    ap.add_argument("--smoke", action="store_true", help="one seed, 2 epochs, print only (checks the script runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global EPOCHS
    if args.smoke:
        EPOCHS, args.seeds = 2, 1
    full = load_data(DataConfig(name=args.dataset), 0)
    sizes = [count_parameters(build_model(m, full.input_shape, full.num_classes, "m", 0)) for m in (TEACHER, STUDENT)]
    kept = ROWS / f"kd_gain-{args.dataset}-few{args.few}.jsonl"
    done = {}
    if args.resume and kept.is_file():
        done = {r["seed"]: r for r in map(json.loads, kept.read_text().splitlines())}
    elif not args.smoke:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("")
    rows = []
    for seed in range(args.seeds):
        if seed not in done:
            t0 = time.time()
            done[seed] = {**one_seed(args.dataset, seed, args.few), "seconds": 0.0}
            done[seed]["seconds"] = time.time() - t0
            if not args.smoke:
                with kept.open("a") as f:
                    f.write(json.dumps(done[seed]) + "\n")
        rows.append(done[seed])
        print(f"seed {seed} ({rows[-1]['seconds']:.0f} s): " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()), flush=True)
        text = render(args.dataset, rows, args, *sizes)
        if not args.smoke:
            write_section("kd_gain" if args.dataset == "digits" else f"kd_gain-{args.dataset}", text)
    print(text)


if __name__ == "__main__":
    main()
