"""The student arms of benchmarks/text.py: which student, which data, which loss terms, which phases.

Students (built from the fine-tuned teacher's pretrained weights, sliced):
  small  teacher layers 0, 2, 4, width 128 / 4 heads / FFN 512, full 30,522-row vocabulary
  wide   teacher layers 1, 2, 4, 5, width 256 / 8 heads / FFN 1024, vocabulary trimmed to the
         tokens of the (augmented) training corpus: the rows trimming frees pay for the wider layers

An arm trains one student; every arm of a dataset sees the same number of sample visits:
`epochs` passes of len(train) samples — augmented arms draw each pass's samples (without
replacement, fixed per seed) from the pool of originals and variants, so augmentation is
compared at equal compute. `layerwise` arms first run a phase of
layer-wise distillation alone (TinyBERT's intermediate-layer phase, uniform layer map, live
teacher, original texts), then the prediction phase of `losses`; the phase-1 student is shared
by the arms of a seed that start from it, and saved in the run folder: a later process training
other arms of that seed into the same folder reloads it.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from kdforge.config import TEXT_AUTO, DistillConfig, ModelConfig, recommended_losses
from kdforge.data.text import TokenDataset
from kdforge.methods.standard import StandardKD
from kdforge.methods.supervised import Supervised
from kdforge.models.build import build_model
from kdforge.models.vocab import trim_student
from kdforge.store import CachedTeacher
from kdforge.train.batching import probe_batch
from kdforge.train.checkpoint import load_weights
from kdforge.train.loop import fit
from kdforge.tuning import resolve_auto, split_dataset

STUDENTS = {
    "small": dict(layers=[0, 2, 4], hidden_size=128, num_heads=4, intermediate_size=512),
    "wide": dict(layers=[1, 2, 4, 5], hidden_size=256, num_heads=8, intermediate_size=1024),
}
TRIMMED = {"wide"}
KD = {"kind": "kd", "temperature": 2.0, "alpha": 0.7}
LAYERWISE = [{"kind": "layerwise", "layer_map": "uniform", "hidden_weight": 1.0, "attention_weight": 1.0,
              "embedding_weight": 1.0}]


@dataclass(frozen=True)
class Arm:
    name: str
    losses: list | None = None  # prediction-phase terms; None: cross-entropy on the true labels, no teacher
    student: str = "wide"
    augment: bool = False  # train on the originals + their teacher-labelled variants
    layerwise: bool = False  # phase 1: layer-wise distillation first
    auto: bool = False  # kdforge's recommended default: standardized KD, T and alpha searched (TEXT_AUTO budget)

    @property
    def ingredients(self) -> str:
        parts = [("trimmed vocabulary, 4 × 256" if self.student in TRIMMED else "full vocabulary, 3 × 128")]
        parts += ["augmented" if self.augment else "original texts"] + (["layer-wise phase"] if self.layerwise else [])
        return ", ".join(parts)


ALONE = "student alone (true labels)"
FULL = "full recipe: trim + augment + layer-wise + KD"
DEFAULT = "recommended default (standardized KD, T and α searched)"
SHIPPED = "shipped recipe: the default, or the control if better on val"  # derived per seed, not trained
BANKING77 = [
    Arm(ALONE),
    Arm("hard labels (teacher argmax)", [{"kind": "hard_ce"}]),
    Arm("KD (logits)", [KD]),
    Arm(FULL, [KD], augment=True, layerwise=True),
    Arm("full − augmentation", [KD], layerwise=True),
    Arm("full − layer-wise", [KD], augment=True),
    Arm("full − trimming (3 × 128 student, full vocabulary)", [KD], student="small", augment=True, layerwise=True),
    Arm(DEFAULT, auto=True),
]
BBC_NEWS = [  # the arms of the earlier BBC News section (features from the store)
    Arm("KD (logits + hint + attention)", [KD, {"kind": "hint", "student_layer": "hidden.3", "teacher_layer": "hidden.6", "weight": 0.05},
                                           {"kind": "attention_kl", "student_layer": "attn.2", "teacher_layer": "attn.5", "weight": 0.5}],
        student="small"),
    Arm("KD (logits only)", [KD], student="small"),
    Arm("hard labels (teacher argmax)", [{"kind": "hard_ce"}], student="small"),
    Arm(ALONE, student="small"),
    Arm(DEFAULT, student="small", auto=True),
]


def build_student(key: str, shape, classes: int, seed: int, corpus, tokenizer):
    """A fresh student of STUDENTS[key]; trimmed ones keep the tokens of `corpus` (N, L) ids."""
    student = build_model(ModelConfig(name="hf", hf="minilm-l6", task="classify", attentions=True, **STUDENTS[key]),
                          shape, classes, "student", seed)
    trim = trim_student(student, 1, corpus, tokenizer) if key in TRIMMED else None
    return student, trim


def _cfg(epochs: int, args, losses, auto: dict | None = None) -> DistillConfig:
    return DistillConfig.model_validate({"epochs": epochs, "lr": args.lr, "batch_size": 16, "warmup_fraction": 0.1,
                                         "schedule": "linear", "losses": losses, **({"auto": auto} if auto else {})})


def arm_losses(arm: Arm) -> list:
    """The prediction-phase terms of an arm (the default arm: what a text recipe without `losses` gets)."""
    if arm.auto:
        return [t.model_dump() for t in recommended_losses(standardize=True)]
    return arm.losses or [{"kind": "ce"}]


class RowsOf(CachedTeacher):
    """The store read through a row map: sample i of a drawn subset is store row rows[i]."""

    def __init__(self, cached: CachedTeacher, rows: torch.Tensor):
        super().__init__(cached.store)
        self.rows = rows

    def __call__(self, inputs=None, idx=None):
        return super().__call__(inputs, idx=self.rows[idx.cpu()])


class ArmRunner:
    """Trains arms for one seed: `run(arm)` -> the trained student (eval mode, full-length inputs)."""

    def __init__(self, seed: int, data, augmented, teacher, cached, tokenizer, args, out: Path, *, trim_padding: bool):
        self.seed, self.data, self.augmented, self.teacher, self.cached = seed, data, augmented, teacher, cached
        self.tokenizer, self.args, self.out, self.trim_padding = tokenizer, args, out, trim_padding
        self.phase1: dict[str, object] = {}  # student key -> the student after the layer-wise phase
        self.trims: dict[str, dict] = {}

    def transfer(self, arm: Arm):
        """(training set, teacher) of an arm: the originals, or epochs x len(originals) samples drawn from the
        augmented pool (visited once each) with the store rows they came from."""
        if not arm.augment:
            return self.data.train, self.cached, self.args.epochs
        n = min(self.args.epochs * len(self.data.train), len(self.augmented))
        rows = torch.randperm(len(self.augmented), generator=torch.Generator().manual_seed(self.seed))[:n]
        drawn = TokenDataset(self.augmented.x[rows], self.augmented.y[rows])
        return drawn, RowsOf(self.cached, rows), 1

    def _fresh(self, key: str):
        student, trim = build_student(key, self.data.input_shape, self.data.num_classes, 1 + self.seed,
                                      self.augmented.x, self.tokenizer)
        if trim:
            self.trims[key] = trim
        return student

    def _after_phase1(self, key: str):
        if key not in self.phase1:
            student = self._fresh(key)
            run = self.out / f"s{self.seed}-{key}-layerwise"
            if phase_done(run, self.args.phase1_epochs):  # another process of this folder ran it (--train-seeds / --arms)
                load_weights(run / "checkpoints" / "best", student)
                self.phase1[key] = student
                return copy.deepcopy(student)
            student.trim_padding = self.teacher.trim_padding = self.trim_padding  # teacher and student cut a batch alike
            cfg = _cfg(self.args.phase1_epochs, self.args, LAYERWISE)
            method = StandardKD(student, self.teacher, cfg, probe_batch(self.data.train))  # live teacher, its taps
            fit(method, self.data.train, self.data.val, cfg, run, self.seed,
                desc=f"s{self.seed} layer-wise", quiet=True, select=None)  # the head is untrained: keep the last epoch
            self.teacher.trim_padding = False
            self.phase1[key] = student
        return copy.deepcopy(self.phase1[key])

    def run(self, arm: Arm, index: int):
        student = self._after_phase1(arm.student) if arm.layerwise else self._fresh(arm.student)
        student.trim_padding = self.trim_padding
        train, teacher, epochs = self.transfer(arm)  # the originals are the store's first rows
        cfg = _cfg(epochs, self.args, arm_losses(arm), TEXT_AUTO if arm.auto else None)
        if arm.auto:  # the search of a text recipe without `losses`: its trials read the store through the tune split
            tune, _ = split_dataset(train, cfg.auto.holdout_fraction, self.seed)
            rows = RowsOf(self.cached, torch.as_tensor(tune.indices))
            cfg = resolve_auto(cfg, rows, student, train, self.seed, self.out / f"s{self.seed}-arm{index}-auto")
        method = Supervised(student) if arm.losses is None and not arm.auto else StandardKD(student, teacher, cfg, probe_batch(train))
        fit(method, train, self.data.val, cfg, self.out / f"s{self.seed}-arm{index}", self.seed,
            desc=f"s{self.seed} {arm.name[:14]}", quiet=True)
        student.trim_padding = False
        return student.eval()

    def load(self, arm: Arm, index: int):
        """The student `run(arm, index)` saved in this seed's folder of an earlier run (its best checkpoint)."""
        best = self.out / f"s{self.seed}-arm{index}" / "checkpoints" / "best"
        if not best.is_dir():
            raise SystemExit(f"--reuse: {best} is missing (was that run made with these seeds and arms?)")
        student = self._fresh(arm.student)
        load_weights(best, student)
        return student.eval()

    def record(self, arm: Arm, index: int) -> dict:
        """What the arm's run left in its folders: best validation accuracy, student epochs (search trials
        included, counted in epochs over their share of train), the search's choice."""
        epochs = [json.loads(line) for line in (self.out / f"s{self.seed}-arm{index}/metrics.jsonl").read_text().splitlines()
                  if line.strip()]
        train, _, _ = self.transfer(arm)  # in passes over the original texts (an augmented arm's pass is longer)
        out = {"val": max(e["val/accuracy"] for e in epochs), "student_epochs": len(epochs) * len(train) / len(self.data.train),
               "layerwise_epochs": float(self.args.phase1_epochs if arm.layerwise else 0)}
        auto = self.out / f"s{self.seed}-arm{index}-auto/auto.json"
        if arm.auto and auto.is_file():
            a = json.loads(auto.read_text())
            share = a["tune_size"] / (a["tune_size"] + a["holdout_size"])
            out["search_epochs"] = a["student_epochs_spent"] * share
            out["chosen"] = a["chosen"]["params"]
            out["student_epochs"] += out["search_epochs"]
        out["student_epochs"] += out["layerwise_epochs"]
        return out


def phase_done(run: Path, epochs: int) -> bool:
    """Whether `run` holds a finished layer-wise phase of `epochs` epochs (one metrics line per epoch, its weights saved)."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file() or not (run / "checkpoints" / "best").is_dir():
        return False
    return sum(1 for line in metrics.read_text().splitlines() if line.strip()) == epochs


def visits(runner: ArmRunner, arm: Arm) -> int:
    train, _, epochs = runner.transfer(arm)
    return epochs * len(train)


def trained_seconds(out: Path, seeds: list[int]) -> float:
    """Training wall time an earlier run recorded in the folders of `seeds` (arms, layer-wise phases, search trials)."""
    total = 0.0
    for metrics in (m for seed in seeds for m in out.glob(f"s{seed}-*/**/metrics.jsonl")):
        total += sum(json.loads(line).get("seconds", 0.0) for line in metrics.read_text().splitlines() if line.strip())
    return total


def originals_seen(runner: ArmRunner, arm: Arm) -> int:
    """How many of an arm's sample visits are original (labelled) texts: all, or, drawn from the
    augmented pool, the draws of its first len(originals) rows."""
    train, teacher, epochs = runner.transfer(arm)
    rows = getattr(teacher, "rows", None)
    return epochs * len(train) if rows is None else int((rows < len(runner.data.train)).sum())


__all__ = ["ALONE", "Arm", "ArmRunner", "BANKING77", "BBC_NEWS", "DEFAULT", "FULL", "SHIPPED", "arm_losses", "STUDENTS", "build_student", "originals_seen", "phase_done", "trained_seconds", "visits"]
