"""Does distillation help, and is the gain real? Digits, a small MLP student, ≥10 seeds.

Arms, all with the same student architecture, budget and seeds:
- alone:        cross-entropy on the labels
- hard labels:  cross-entropy on the teacher's argmax (no soft targets)
- KD:           α·T²·KL + (1−α)·CE  (T=4, α=0.8)
- KD+feat:      KD + hint + RKD-distance on the hidden layer (the demo's student)
- negative control: KD from a teacher trained on the SAME few labels as the student
  (it knows nothing the student could not learn; a real effect should vanish).

Two regimes: the full transfer set (1,077 images), and few labels (the student
sees N labelled images; the good teacher was trained on the full set).
Also Hinton's omitted-3 experiment across seeds. Paired t-test and Wilcoxon
signed-rank test on KD − alone. Writes the "kd_gain" section of RESULTS.md.

    python benchmarks/kd_gain.py [--seeds 10] [--few 100]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402

from kdforge.config import DataConfig, DistillConfig, FeatureTerm, KDTerm, LabelTerm, ModelConfig, TrainConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.models.build import build_model  # noqa: E402
from kdforge.pipeline import probe_batch  # noqa: E402
from kdforge.registry import METHODS  # noqa: E402
from kdforge.train.evaluate import classification_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

TEACHER = ModelConfig(name="mlp", hidden=[256, 256], dropout=0.2)
STUDENT = ModelConfig(name="mlp", hidden=[32])
EPOCHS = 40


def train(model_cfg, method, teacher, data, cfg, seed, full):
    model = build_model(model_cfg, full.input_shape, full.num_classes, "model", seed + 1)
    m = METHODS.build(method, model, copy.deepcopy(teacher) if teacher is not None else None, cfg, probe_batch(data.train))
    with tempfile.TemporaryDirectory() as d:
        fit(m, data.train, data.val, cfg, Path(d), seed, quiet=True)
    return model


def acc(model, full, cls=None):
    m = classification_metrics(model, full.test, classes=[cls] if cls is not None else None)
    return m[f"accuracy_class_{cls}"] if cls is not None else m["accuracy"]


def one_seed(seed: int, few: int) -> dict[str, float]:
    full = load_data(DataConfig(name="digits"), seed)
    few_data = load_data(DataConfig(name="digits", train_limit=few), seed)
    no3 = load_data(DataConfig(name="digits", omit_classes=[3]), seed)
    teacher = train(TEACHER, "supervised", None, full, TrainConfig(epochs=30), seed, full)
    weak_teacher = train(TEACHER, "supervised", None, few_data, TrainConfig(epochs=60), seed, full)
    arms = {
        "alone": ("supervised", [LabelTerm(kind="ce")]),
        "hard": ("standard", [LabelTerm(kind="hard_ce")]),
        "kd": ("standard", [KDTerm(temperature=4.0, alpha=0.8)]),
        "kd_feat": ("standard", [KDTerm(temperature=4.0, alpha=0.8),
                                 FeatureTerm(kind="hint", student_layer="layers.0", teacher_layer="layers.1", weight=0.1),
                                 FeatureTerm(kind="rkd_distance", student_layer="layers.0", teacher_layer="layers.1", weight=0.5)]),
    }
    out = {"teacher": acc(teacher, full), "weak_teacher": acc(weak_teacher, full)}
    for regime, data, epochs in (("full", full, EPOCHS), ("few", few_data, 4 * EPOCHS)):
        for name, (method, losses) in arms.items():
            cfg = DistillConfig(epochs=epochs, lr=5e-3, losses=losses)
            out[f"{regime}/{name}"] = acc(train(STUDENT, method, teacher, data, cfg, seed, full), full)
    cfg = DistillConfig(epochs=4 * EPOCHS, lr=5e-3, losses=[KDTerm(temperature=4.0, alpha=0.8)])
    out["few/kd_weak_teacher"] = acc(train(STUDENT, "standard", weak_teacher, few_data, cfg, seed, full), full)
    omit = dict(epochs=2 * EPOCHS, lr=1e-2)  # the demo's omitted-class settings
    omit_alone = train(STUDENT, "supervised", None, no3, DistillConfig(**omit), seed, full)
    omit_kd = train(STUDENT, "standard", teacher, no3, DistillConfig(**omit, losses=[KDTerm(temperature=20.0, alpha=1.0)]), seed, full)
    out["omit3/alone_on_3"], out["omit3/kd_on_3"] = acc(omit_alone, full, 3), acc(omit_kd, full, 3)
    out["omit3/kd_overall"] = acc(omit_kd, full)
    return out


def paired(a: list[float], b: list[float]) -> str:
    diff = [x - y for x, y in zip(a, b)]
    t = stats.ttest_rel(a, b).pvalue
    w = stats.wilcoxon(a, b).pvalue if any(d != 0 for d in diff) else 1.0
    return f"{mean_std(diff, 100)} | {t:.3g} | {w:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--few", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.few))
        print(f"seed {seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()), flush=True)
    col = {k: [r[k] for r in rows] for k in rows[0]}

    lines = [
        f"## KD gain on digits (`benchmarks/kd_gain.py`, {args.seeds} seeds)", "",
        machine_line() + f" Wall time {time.time() - t0:.0f} s.", "",
        f"Teacher MLP {TEACHER.hidden} (85k params): test accuracy {mean_std(col['teacher'], 100)} %. "
        f"Student MLP {STUDENT.hidden} (2.4k params). Accuracy in %, mean ± std over seeds; "
        "Δ is paired per seed, with a paired t-test and a Wilcoxon signed-rank test.", "",
        "| regime | arm | student test accuracy | Δ vs alone (points) | t-test p | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for regime, label in (("full", "full transfer set (1,077)"), ("few", f"{args.few} labelled images")):
        base = col[f"{regime}/alone"]
        lines.append(f"| {label} | alone | {mean_std(base, 100)} | — | — | — |")
        for arm, name in (("hard", "teacher's hard labels"), ("kd", "KD (T=4, α=0.8)"), ("kd_feat", "KD + hint + RKD")):
            lines.append(f"| {label} | {name} | {mean_std(col[f'{regime}/{arm}'], 100)} | {paired(col[f'{regime}/{arm}'], base)} |")
    lines.append(
        f"| {args.few} labelled images | **negative control**: KD from a teacher trained on the same {args.few} labels "
        f"(teacher acc {mean_std(col['weak_teacher'], 100)}) | {mean_std(col['few/kd_weak_teacher'], 100)} | "
        f"{paired(col['few/kd_weak_teacher'], col['few/alone'])} |"
    )
    lines += [
        "", "### Omitted class (Hinton et al. 2015, §3): no 3 in the transfer set", "",
        "| arm | accuracy on test 3s | overall test accuracy |", "|---|---:|---:|",
        f"| student alone | {mean_std(col['omit3/alone_on_3'], 100)} | — |",
        f"| student KD (T=20, soft targets only) | {mean_std(col['omit3/kd_on_3'], 100)} | {mean_std(col['omit3/kd_overall'], 100)} |",
    ]
    kd_gain = [a - b for a, b in zip(col["full/kd"], col["full/alone"])]
    few_gain = [a - b for a, b in zip(col["few/kd"], col["few/alone"])]
    neg_gain = [a - b for a, b in zip(col["few/kd_weak_teacher"], col["few/alone"])]
    lines += ["", "Reading: " + (
        f"on the full transfer set KD changes accuracy by {mean_std(kd_gain, 100)} points; "
        f"with {args.few} labels by {mean_std(few_gain, 100)} points; the negative control by "
        f"{mean_std(neg_gain, 100)} points. Where a p-value is above 0.05 the difference is not distinguishable from seed noise."
    )]
    write_section("kd_gain", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
