"""A training stage: one call of the loop inside its own folder of the run directory.

A finished stage leaves `result.json`; running the recipe again (or --resume)
skips it and loads its best weights, so a killed multi-stage run never redoes work.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from kdforge.methods.supervised import Supervised
from kdforge.rundir import write_json
from kdforge.train import distributed as dist
from kdforge.train.checkpoint import load_weights
from kdforge.train.evaluate import classification_metrics
from kdforge.train.loop import fit


def train_stage(name: str, run_dir: Path, method, data, cfg, seed: int, *, quiet: bool = False, train=None,
                metric_fn=None, select: str | None = "accuracy", on_done: Callable[[Path], None] | None = None) -> dict:
    """Fit `method` on `train` (default `data.train`), select on `data.val`, in RUN/name.

    `metric_fn`/`select` as in `fit`; `on_done(stage_dir)` reloads extra state
    (beyond the student's best weights) when the stage is skipped because it finished earlier.
    """
    stage = Path(run_dir) / name
    done = stage / "result.json"
    if done.exists():
        if on_done is not None:
            on_done(stage)
        load_weights(stage / "checkpoints/best", method.student)
        return json.loads(done.read_text())
    res = fit(method, data.train if train is None else train, data.val, cfg, stage, seed, desc=name, quiet=quiet,
              metric_fn=metric_fn or classification_metrics, select=select)
    out = {
        "best_epoch": res.best["epoch"],
        "best_val": {k[4:]: v for k, v in res.best.items() if k.startswith("val/")},
        "steps": res.steps,
        **{k.split("/")[1]: v for k, v in res.stats.items()},
    }
    if dist.context().is_main:
        write_json(done, out)
    return out


def train_supervised(name: str, run_dir: Path, model, data, cfg, seed: int, *, quiet: bool = False) -> dict:
    """Train `model` on the labels (cross-entropy) as stage `name`: teachers, generation 1, search trials."""
    return train_stage(name, run_dir, Supervised(model), data, cfg, seed, quiet=quiet)
