"""KD through the Python API on a user's own small convnet, as a new user would try it.

A plain torch CNN (not a kdforge model) on mnist5k: a wide teacher and a 4-channel
student, 15 epochs each, every arm one `kdforge.distill(...)` call with the settings
a user would type: the student alone, vanilla KD at two T/α settings, KD + a hint on
the last conv layer, and kdforge's default (no `losses` given: KD on standardized
logits with T and α searched on held-out training data). Paired over seeds.
Writes the `kd_api_cnn` section of RESULTS.md after every seed.

    python benchmarks/kd_api.py [--seeds 3] [--epochs 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, mean_std, write_section  # noqa: E402
from _stats import compare, holm  # noqa: E402

import kdforge  # noqa: E402
from kdforge.config import DataConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.train.evaluate import classification_metrics  # noqa: E402

ARMS = {  # name -> (label, config fields besides epochs); None: no losses given (the default)
    "alone": ("student alone (cross-entropy)", {"losses": [{"kind": "ce"}]}),
    "kd4": ("vanilla KD (T=4, α=0.8)", {"losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]}),
    "kd2": ("vanilla KD (T=2, α=0.5)", {"losses": [{"kind": "kd", "temperature": 2.0, "alpha": 0.5}]}),
    "kd_hint": ("vanilla KD (T=4, α=0.8) + hint on conv2", {"losses": [
        {"kind": "kd", "temperature": 4.0, "alpha": 0.8},
        {"kind": "hint", "student_layer": "conv2", "teacher_layer": "conv2", "weight": 0.1}]}),
    "default": ("**kdforge default** (no `losses` given)", None),
}


class SmallCNN(nn.Module):
    """What a user might write: two conv blocks and a linear head, (B, 1, 28, 28) -> (B, 10)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)).flatten(1))


def one_seed(seed: int, epochs: int, widths: tuple[int, int]) -> dict[str, float]:
    data = load_data(DataConfig(name="mnist5k"), seed)
    torch.manual_seed(seed)
    teacher = SmallCNN(widths[0])
    kdforge.distill(None, teacher, data.train, data.val, {"epochs": epochs}, method="supervised", seed=seed)
    out = {"teacher": classification_metrics(teacher, data.test)["accuracy"]}
    for arm, (_, fields) in ARMS.items():
        torch.manual_seed(seed + 1)
        student = SmallCNN(widths[1])
        config = {"epochs": epochs, "control": False, **(fields or {})}  # each arm measured as itself (no control swap)
        method = "supervised" if arm == "alone" else "standard"
        res = kdforge.distill(teacher if method == "standard" else None, student, data.train, data.val, config,
                              test=data.test, method=method, seed=seed)
        out[arm] = res.metrics["test"]["accuracy"]
    return out


def render(rows: list[dict], args, wall: float, params: tuple[int, int]) -> str:
    col = {k: [r[k] for r in rows] for k in rows[0]}
    family = holm({arm: compare(col[arm], col["alone"], 100) for arm in ARMS if arm != "alone"})
    lines = [
        f"## KD through the Python API on a user's small CNN (`benchmarks/kd_api.py`, {len(rows)} of {args.seeds} seeds)", "",
        machine_line() + f" Wall time {wall:.0f} s; seeds 0..{len(rows) - 1}.", "",
        f"mnist5k; a plain torch CNN (two conv blocks + linear head), teacher width {args.widths[0]} ({params[0]:,} params, "
        f"test accuracy {mean_std(col['teacher'], 100)} %), student width {args.widths[1]} ({params[1]:,} params); "
        f"{args.epochs} epochs for every model, each arm one `kdforge.distill` call. Accuracy in %, mean ± std; "
        "Δ paired per seed with a paired t-test; Holm = adjusted over the arms compared with the student alone "
        "(the verdict reads it).", "",
        "| arm | student test accuracy | Δ vs alone (points) | p | Holm p | verdict |", "|---|---:|---:|---:|---:|---|",
    ]
    for arm, (label, _) in ARMS.items():
        cells = "— | — | — | —" if arm == "alone" else family[arm].cells()
        lines.append(f"| {label} | {mean_std(col[arm], 100)} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--widths", type=int, nargs=2, default=[32, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="one seed, 1 epoch, print only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.seeds, args.epochs = 1, 1
    params = (count_parameters(SmallCNN(args.widths[0])), count_parameters(SmallCNN(args.widths[1])))
    t0, rows = time.time(), []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.epochs, tuple(args.widths)))
        print(f"seed {seed} ({time.time() - t0:.0f} s): " + ", ".join(f"{k}={v:.4f}" for k, v in rows[-1].items()), flush=True)
        text = render(rows, args, time.time() - t0, params)
        if not args.smoke:
            write_section("kd_api_cnn", text)
    print(text)


if __name__ == "__main__":
    main()
