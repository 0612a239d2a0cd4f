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

Regimes: the full transfer set; few labels (the student sees N labelled images,
the teacher was trained on the full set); few labels + the rest of the training
split as an unlabelled pool the teacher labels (`data.labelled`). On digits also
Hinton's omitted-3 experiment, raw and with per-class bias calibration.
Writes the section `kd_gain` (digits) or `kd_gain-mnist5k` of RESULTS.md after every seed.

    python benchmarks/kd_gain.py --dataset digits  [--seeds 10] [--few 100] [--threads 1]
    python benchmarks/kd_gain.py --dataset mnist5k
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402

from kdforge.config import (  # noqa: E402
    DataConfig, DistillConfig, DISTTerm, DKDTerm, KDTerm, LabelTerm, ModelConfig, TrainConfig, recommended_losses,
    with_recommended_losses,
)
from kdforge.data import load_data  # noqa: E402
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
    """A fresh model trained by `method`; `auto` fields resolved first, as run_recipe does."""
    model = build_model(model_cfg, shape, classes, "model", seed + 1)
    with tempfile.TemporaryDirectory() as d:
        if teacher is not None:
            cfg = resolve_auto(cfg, teacher, model, data.train, seed, Path(d) / "auto")
        m = METHODS.build(method, model, copy.deepcopy(teacher) if teacher is not None else None, cfg, probe_batch(data.train))
        fit(m, data.train, data.val, cfg, Path(d), seed, quiet=True)
    return model, cfg


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
    few_data = load_data(DataConfig(name=dataset, train_limit=few), seed)
    pool = load_data(DataConfig(name=dataset, labelled=few), seed)
    run = lambda *a: train(*a, seed, shape, classes)  # noqa: E731
    teacher, _ = run(TEACHER, "supervised", None, full, TrainConfig(epochs=30))
    weak_teacher, _ = run(TEACHER, "supervised", None, few_data, TrainConfig(epochs=120))
    out = {"teacher": accuracy(teacher, full.test), "weak_teacher": accuracy(weak_teacher, full.test)}
    for regime, data, epochs in (("full", full, EPOCHS), ("few", few_data, 4 * EPOCHS)):
        for arm, (_, method, losses) in ARMS.items():
            model, cfg = run(STUDENT, method, teacher, data, distill_cfg(losses, epochs))
            out[f"{regime}/{arm}"] = accuracy(model, full.test)
            if arm == "default":
                out[f"{regime}/default_T"], out[f"{regime}/default_alpha"] = cfg.losses[0].temperature, cfg.losses[0].alpha
    model, _ = run(STUDENT, "standard", weak_teacher, few_data, distill_cfg(None, 4 * EPOCHS))
    out["few/negative_control"] = accuracy(model, full.test)
    model, _ = run(STUDENT, "standard", teacher, pool, distill_cfg(None, EPOCHS))
    out["pool/default"] = accuracy(model, full.test)
    if dataset == "digits":
        out.update(omitted(seed, teacher, full, run))
    return out


def omitted(seed, teacher, full, run) -> dict[str, float]:
    """Hinton's §3 on digits: no 3 in the transfer set; the KD student raw and with fitted per-class biases."""
    no3 = load_data(DataConfig(name="digits", omit_classes=[OMITTED]), seed)
    omit = dict(epochs=2 * EPOCHS, lr=1e-2)
    alone, _ = run(STUDENT, "supervised", None, no3, DistillConfig(**omit))
    kd, _ = run(STUDENT, "standard", teacher, no3, DistillConfig(**omit, losses=[KDTerm(temperature=20.0, alpha=1.0)]))
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


def paired(a: list[float], b: list[float]) -> str:
    """Δ = a − b in points (mean ± std), paired t-test and Wilcoxon p (— with one seed)."""
    diff = [x - y for x, y in zip(a, b)]
    if len(a) < 2:
        return f"{mean_std(diff, 100)} | — | —"
    t = stats.ttest_rel(a, b).pvalue if any(d != diff[0] for d in diff) or diff[0] != 0 else 1.0
    w = stats.wilcoxon(a, b).pvalue if any(d != 0 for d in diff) else 1.0
    return f"{mean_std(diff, 100)} | {t:.3g} | {w:.3g}"


def render(dataset: str, rows: list[dict], args, wall: float, full_size: int, teacher_params: int, student_params: int) -> str:
    col = {k: [r[k] for r in rows] for k in rows[0]}
    n = len(rows)
    lines = [
        f"## KD gain on {dataset} (`benchmarks/kd_gain.py --dataset {dataset}`, {n} of {args.seeds} seeds)", "",
        machine_line() + f" Wall time {wall:.0f} s; seeds 0..{n - 1}.", "",
        f"Teacher MLP {TEACHER.hidden} ({teacher_params:,} params): test accuracy {mean_std(col['teacher'], 100)} %. "
        f"Student MLP {STUDENT.hidden} ({student_params:,} params), {EPOCHS} epochs (×4 with few labels), lr {LR}. "
        "Accuracy in %, mean ± std over seeds; Δ is paired per seed (t-test and Wilcoxon signed-rank). "
        f"**kdforge default** = `config.recommended_losses()` ({default_losses()}), its `auto` fields searched on 20 % of "
        "the training split before training, as a recipe without loss settings does.", "",
        "| regime | arm | student test accuracy | Δ vs alone (points) | t-test p | Wilcoxon p | Δ vs vanilla KD | t-test p | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for regime, label in (("full", f"full transfer set ({full_size:,})"), ("few", f"{args.few} labelled images")):
        base, kd = col[f"{regime}/alone"], col[f"{regime}/kd"]
        for arm, (name, _, _) in ARMS.items():
            vals = col[f"{regime}/{arm}"]
            vs_alone = "— | — | —" if arm == "alone" else paired(vals, base)
            vs_kd = "— | — | —" if arm in ("alone", "kd") else paired(vals, kd)
            lines.append(f"| {label} | {name} | {mean_std(vals, 100)} | {vs_alone} | {vs_kd} |")
    lines.append(
        f"| {args.few} labelled images | **negative control**: the default from a teacher trained on the same {args.few} "
        f"labels (teacher {mean_std(col['weak_teacher'], 100)}) | {mean_std(col['few/negative_control'], 100)} | "
        f"{paired(col['few/negative_control'], col['few/alone'])} | — | — | — |")
    lines.append(
        f"| {args.few} labelled + {full_size - args.few:,} unlabelled the teacher labels (`data.labelled`) | kdforge default | "
        f"{mean_std(col['pool/default'], 100)} | {paired(col['pool/default'], col['few/alone'])} | — | — | — |")
    chosen = [f"T={r['full/default_T']:.2g}, α={r['full/default_alpha']:.2f}" for r in rows]
    chosen_few = [f"T={r['few/default_T']:.2g}, α={r['few/default_alpha']:.2f}" for r in rows]
    lines += ["", f"`auto` chose, per seed — full: {'; '.join(chosen)}. Few labels: {'; '.join(chosen_few)}.",
              "", "Δ of the pool row is against the student alone on the same 100 labels."]
    if "omit/kd_on_3" in col:
        ratio = [c / r for c, r in zip(col["omit/cal_on_3"], col["omit/cal_on_rest"])]
        lines += [
            "", f"### Omitted class (Hinton et al. 2015, §3): no {OMITTED} in the transfer set", "",
            f"KD student: T = 20, soft targets only, {2 * EPOCHS} epochs. Calibrated: per-class logit biases fitted "
            f"(`kdforge.train.calibrate`) on the validation split with its {OMITTED}s, to the teacher's probabilities "
            "(no labels used); the student's weights are unchanged.", "",
            f"| arm | accuracy on test {OMITTED}s | accuracy on the other digits | overall |", "|---|---:|---:|---:|",
            f"| student alone | {mean_std(col['omit/alone_on_3'], 100)} | — | — |",
            f"| student KD, raw | {mean_std(col['omit/kd_on_3'], 100)} | {mean_std(col['omit/kd_on_rest'], 100)} | {mean_std(col['omit/kd_overall'], 100)} |",
            f"| student KD, bias-calibrated | {mean_std(col['omit/cal_on_3'], 100)} | {mean_std(col['omit/cal_on_rest'], 100)} | {mean_std(col['omit/cal_overall'], 100)} |",
            "", f"Calibrated accuracy on {OMITTED}s is {mean_std(ratio, 100)} % of the calibrated student's accuracy on the "
            f"other digits (target ≥ 98 %; worst seed {min(ratio) * 100:.1f} %); fitted bias of class {OMITTED}: "
            f"{mean_std(col['omit/bias_3'])} (Hinton et al. added 3.5 by hand).",
        ]
    d_full = [a - b for a, b in zip(col["full/default"], col["full/alone"])]
    d_few = [a - b for a, b in zip(col["few/default"], col["few/kd"])]
    lines += ["", "Reading: " + (
        f"on the full transfer set the kdforge default changes accuracy by {mean_std(d_full, 100)} points against the "
        f"student alone (vanilla KD: {mean_std([a - b for a, b in zip(col['full/kd'], col['full/alone'])], 100)}); "
        f"with {args.few} labels the default differs from vanilla KD by {mean_std(d_few, 100)} points. Where a p-value "
        "is above 0.05 the difference is not distinguishable from seed noise.")]
    return "\n".join(lines)


def default_losses() -> str:
    return ", ".join(f"{t.kind}({', '.join(f'{k}={v}' for k, v in t.model_dump().items() if k not in ('kind', 'weight'))})"
                     for t in recommended_losses())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--few", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="one seed, 2 epochs, print only (checks the script runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global EPOCHS
    if args.smoke:
        EPOCHS, args.seeds = 2, 1
    t0 = time.time()
    full = load_data(DataConfig(name=args.dataset), 0)
    sizes = [count_parameters(build_model(m, full.input_shape, full.num_classes, "m", 0)) for m in (TEACHER, STUDENT)]
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(args.dataset, seed, args.few))
        print(f"seed {seed} ({time.time() - t0:.0f} s): " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()), flush=True)
        text = render(args.dataset, rows, args, time.time() - t0, len(full.train), *sizes)
        if not args.smoke:
            write_section("kd_gain" if args.dataset == "digits" else f"kd_gain-{args.dataset}", text)
    print(text)
    print(f"wall {statistics.mean([time.time() - t0]):.0f} s")


if __name__ == "__main__":
    main()
