"""Experiment trackers for the loop: accelerate's TensorBoard / W&B trackers, or nothing.

`auto` picks TensorBoard when it is installed, else W&B when it is installed and
logged in (WANDB_API_KEY or a netrc entry), else none. Only rank 0 logs.
"""
from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path

from accelerate import PartialState
from accelerate.tracking import TensorBoardTracker, WandBTracker

from kdforge.errors import KDForgeError


class NoTracker:
    def log(self, values: dict, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class Tracker:
    """Logs only numbers (a tracker rejects other values) through an accelerate tracker."""

    def __init__(self, tracker):
        self.tracker = tracker
        PartialState()  # accelerate's trackers log through its logger, which raises before its state exists
        tracker.start()

    def log(self, values: dict, step: int) -> None:
        self.tracker.log({k: float(v) for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.tracker.finish()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose(kind: str) -> str:
    """auto -> tensorboard | wandb | none by what is installed; an explicit choice must be installed."""
    if kind == "auto":
        if _installed("tensorboard"):
            return "tensorboard"
        return "wandb" if _installed("wandb") and _wandb_logged_in() else "none"
    if kind != "none" and not _installed(kind):
        raise KDForgeError(f"distill.tracker: {kind} is not installed (pip install {kind}, or tracker: none)")
    return kind


def open_tracker(kind: str, out_dir: Path, name: str, *, enabled: bool = True):
    kind = choose(kind) if enabled else "none"
    if kind == "tensorboard":
        return Tracker(TensorBoardTracker(name, Path(out_dir) / "tensorboard"))
    if kind == "wandb":
        return Tracker(WandBTracker(name, dir=str(out_dir)))  # the run's files in the stage folder, not the cwd
    return NoTracker()
