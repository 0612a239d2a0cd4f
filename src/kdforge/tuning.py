"""The one search engine: Optuna trials that distil a fresh student on part of the
training split and score it on the rest. `kdforge search` (search.py) tunes a
whole recipe with it; `temperature: auto` / `alpha: auto` (resolve_auto) tunes the
kd terms of one distillation just before it trains.

What `auto` does, and what it costs:
1. A stratified, seeded `distill.auto.holdout_fraction` of the training split is
   held out (the test split is never read; the teacher may have seen the held-out
   samples, the student has not).
2. Trial 0 is the plain default (T = 4, α = 0.8 for the fields set to auto); trial 1 is
   α = 0, the labels alone (plain training: the search can always fall back to it); then
   quasi-random (Sobol) points of the ranges (T log-scale; α log-spaced near 0), each a full
   student trained for `distill.auto.epochs` (default: distill.epochs), pruned early
   when its held-out accuracy falls below the median of earlier trials.
   Cost: at most `trials × epochs` student epochs on (1 − holdout) of the data.
3. The best trial replaces the default only if its held-out accuracy is strictly
   higher. The choice, every trial and the cost are written to RUN/auto/.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import Dataset, Subset

from kdforge.data.base import UNLABELLED
from kdforge.errors import KDForgeError
from kdforge.registry import METHODS
from kdforge.rundir import write_json, write_text
from kdforge.train import distributed as dist
from kdforge.train.batching import probe_batch
from kdforge.train.loop import fit

DEFAULTS = {"temperature": 4.0, "alpha": 0.8}  # what an auto field means when nothing beats it


def split_dataset(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Stratified (when every class has two samples), seeded split of a training set into (tune, holdout)."""
    from sklearn.model_selection import train_test_split

    y = train.y.numpy() if hasattr(train, "y") else np.array([int(_label(train[i])) for i in range(len(train))])
    labelled = np.flatnonzero(y != UNLABELLED)  # only labelled samples can score a trial; the pool stays in tune
    stratify = y[labelled] if np.unique(y[labelled], return_counts=True)[1].min() >= 2 else None
    try:
        tune, hold = train_test_split(labelled, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError as e:
        raise KDForgeError(f"cannot hold out {fraction:.0%} of {len(labelled)} labelled training samples for tuning: {e}") from None
    tune = np.concatenate([tune, np.flatnonzero(y == UNLABELLED)])
    pick = train.subset if hasattr(train, "subset") else lambda i: Subset(train, i.tolist())
    return pick(np.sort(tune)), pick(np.sort(hold))


def _label(sample) -> int:
    return sample["y"] if isinstance(sample, dict) else sample[1]


def fit_trial(method: str, student: nn.Module, teacher, cfg, tune: Dataset, holdout: Dataset, out: Path, seed: int,
              on_epoch_end=None, work: dict | None = None) -> float:
    """Distil `student` (fresh) on `tune` with `cfg`; returns its best held-out accuracy. Keeps metrics.jsonl only.
    `work["teacher_forward_samples"]` (when given) counts the teacher's work, pruned trials included."""
    teacher = copy.deepcopy(teacher) if isinstance(teacher, nn.Module) else teacher  # each method hooks its own copy
    m = METHODS.build(method, student, teacher, cfg, probe_batch(tune))
    ctx = dist.context()
    try:
        res = fit(m, tune, holdout, cfg, out, seed, resume=False, quiet=True, on_epoch_end=on_epoch_end)
    finally:  # every rank has read its best weights (a pruned trial stops on every rank at the same epoch)
        if work is not None and getattr(m.teacher, "samples", None) is not None:
            work["teacher_forward_samples"] = work.get("teacher_forward_samples", 0) + m.teacher.samples
        ctx.barrier()
        if ctx.is_main:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return res.best["val/accuracy"]


def make_study(seed: int, epochs: int, sampler=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial re-raises; its logged traceback buries the error line
    return optuna.create_study(direction="maximize", sampler=sampler or optuna.samplers.TPESampler(seed=seed),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3)))


def pruned_score(trial, score_fn) -> float:
    """score_fn(on_epoch_end) -> score, the trial reporting each epoch's held-out accuracy to its pruner."""
    import optuna

    def report(record: dict) -> None:
        trial.report(record["val/accuracy"], record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    return score_fn(report)


def last_value(trial) -> float | None:
    """A finished trial's score; a pruned trial's last reported held-out accuracy."""
    if trial.value is not None:
        return trial.value
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


# ---------------------------------------------------------------- temperature: auto / alpha: auto


def auto_fields(cfg) -> dict[int, list[str]]:
    """{term index: [fields set to "auto"]} over the kd terms of a DistillConfig."""
    out = {}
    for i, t in enumerate(cfg.losses):
        fields = [f for f in ("temperature", "alpha") if getattr(t, f, None) == "auto"]
        if fields:
            out[i] = fields
    return out


def alpha_of(u: float, a) -> float:
    """The search coordinate u in [0, 1] -> alpha in a.alpha, log-spaced near its low end: half the trials
    land below lo + 3 % of the range (mostly the labels, as the best published intent-classification KD chose)."""
    lo, hi = a.alpha
    return lo + (hi - lo) * (1000.0 ** u - 1.0) / 999.0


def to_search(params: dict, a) -> dict:
    """Fixed values -> the coordinates the search samples (the inverse of alpha_of for alpha fields)."""
    lo, hi = a.alpha
    return {(k + ":u" if k.endswith("alpha") else k):
            (math.log(1.0 + 999.0 * (v - lo) / (hi - lo), 1000.0) if k.endswith("alpha") else v) for k, v in params.items()}


def with_params(cfg, params: dict):
    """A copy of `cfg` with `{"<i>.<field>": value}` filled into its loss terms."""
    losses = [t.model_copy() for t in cfg.losses]
    for key, v in params.items():
        i, field = key.split(".")
        setattr(losses[int(i)], field, float(v))
    return cfg.model_copy(update={"losses": losses})


def resolve_auto(cfg, teacher, student: nn.Module, train: Dataset, seed: int, out_dir: Path, *,
                 method: str = "standard", quiet: bool = True):
    """`cfg` with every auto field replaced by the searched (or default) value.

    `student` is the untrained student (each trial trains a copy of it, so every trial
    starts from the same weights). A finished search in `out_dir` (auto.json) is
    reused, so a resumed run does not search again.
    """
    fields = auto_fields(cfg)
    if not fields:
        return cfg
    out_dir = Path(out_dir)
    done = out_dir / "auto.json"
    if done.exists():
        return with_params(cfg, json.loads(done.read_text())["chosen"]["params"])
    import optuna

    a = cfg.auto
    epochs = a.epochs or cfg.epochs
    trial_cfg = cfg.model_copy(update={"epochs": epochs})
    tune, holdout = split_dataset(train, a.holdout_fraction, seed)
    defaults = {f"{i}.{f}": DEFAULTS[f] for i, fs in fields.items() for f in fs}
    with warnings.catch_warnings():  # QMCSampler is marked experimental; its interface is all we use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    study = make_study(seed, epochs, sampler)
    study.enqueue_trial(to_search(defaults, a), user_attrs={"exact": defaults})
    labels_only = {k: 0.0 for k in defaults if k.endswith("alpha")}
    if labels_only and a.alpha[0] == 0 and a.trials > 1:  # trial 1: α = 0, the labels alone (plain training)
        study.enqueue_trial(to_search({**defaults, **labels_only}, a), user_attrs={"exact": {**defaults, **labels_only}})
    if not quiet and dist.context().is_main:
        print(f"auto: searching {', '.join(defaults)} — {a.trials} trials × {epochs} epochs on {len(tune)} training samples, "
              f"scored on {len(holdout)} held out (at most {a.trials}× this distillation; see distill.auto)")

    def objective(trial) -> float:
        params = {}
        for key in defaults:
            if key.endswith("temperature"):
                params[key] = trial.suggest_float(key, *a.temperature, log=True)
            else:  # searched as u in [0, 1]: alpha = lo + (hi - lo)(1000^u - 1)/999, log-spaced near lo
                params[key] = alpha_of(trial.suggest_float(key + ":u", 0.0, 1.0), a)
        params.update(trial.user_attrs.get("exact", {}))  # an enqueued trial's values, without the round trip
        trial.set_user_attr("params", params)
        return pruned_score(trial, lambda report: fit_trial(
            method, copy.deepcopy(student), teacher, with_params(trial_cfg, params), tune, holdout,
            out_dir / f"trials/{trial.number}", seed, report, work))

    work: dict = {}
    study.optimize(objective, n_trials=a.trials, catch=())
    rows = [{"trial": t.number, "state": t.state.name, "holdout": last_value(t), **t.user_attrs.get("params", {})}
            for t in study.trials]
    default = study.trials[0]
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value, default=default)
    chosen = best if best.value is not None and default.value is not None and best.value > default.value else default
    result = {
        "chosen": {"trial": chosen.number, "params": {**defaults, **chosen.user_attrs.get("params", {})},
                   "holdout": chosen.value},
        "default": {"params": defaults, "holdout": default.value},
        "trials": rows, "epochs_per_trial": epochs, "tune_size": len(tune), "holdout_size": len(holdout),
        "student_epochs_spent": sum(len(t.intermediate_values) for t in study.trials),
        "teacher_forward_samples": int(dist.context().sum_dict({"n": work.get("teacher_forward_samples", 0)})["n"]),
    }
    if dist.context().is_main:
        write_json(done, result)
        write_text(out_dir / "auto.md", render_auto(result))
    if not quiet and dist.context().is_main:
        print(f"auto: chose {result['chosen']['params']} (held-out {chosen.value:.4f}; default {default.value:.4f})")
    return with_params(cfg, result["chosen"]["params"])


def render_auto(result: dict) -> str:
    keys = list(result["default"]["params"])
    lines = ["# temperature / alpha: auto", "",
             f"{len(result['trials'])} trials, each a student trained for {result['epochs_per_trial']} epochs on "
             f"{result['tune_size']} training samples and scored on {result['holdout_size']} held-out training samples "
             f"({result['student_epochs_spent']} student epochs in all, pruned trials stopped early; the live teacher ran on "
             f"{result['teacher_forward_samples']:,} samples). Trial 0 is the default.",
             "", "| trial | state | held-out acc | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    for r in result["trials"]:
        v = "-" if r["holdout"] is None else f"{r['holdout']:.4f}"
        lines.append(f"| {r['trial']} | {r['state'].lower()} | {v} | " + " | ".join(
            f"{r[k]:.4g}" if r.get(k) is not None else "-" for k in keys) + " |")
    c = result["chosen"]
    lines += ["", f"Chosen: trial {c['trial']} ({', '.join(f'{k}={v:.4g}' for k, v in c['params'].items())}); "
                  + ("the default was kept (nothing beat it on held-out)." if c["trial"] == 0 else
                     f"held-out {c['holdout']:.4f} vs the default's {result['default']['holdout']:.4f}.")]
    return "\n".join(lines) + "\n"
