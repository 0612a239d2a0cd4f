"""What the training loop shows a person while it runs.

One live bar per stage (all its epochs), with the epoch, the running loss and the
latest validation metric in the postfix. The per-epoch lines are INFO records of the
`kdforge.train` logger: hidden unless asked for (`kdforge run --verbose`), and always
kept in the stage's metrics.jsonl either way.
"""
from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

EPOCH_LOG = logging.getLogger("kdforge.train")


class _AboveBars(logging.Handler):
    """Writes each record above the live bars (tqdm.write) instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:  # logging's contract: a broken handler reports, it never raises into the loop
            self.handleError(record)


def show_epoch_lines(verbose: bool) -> None:
    """For a command line: print the loop's per-epoch lines (verbose) or only its bars. Idempotent."""
    if not any(isinstance(h, _AboveBars) for h in EPOCH_LOG.handlers):
        EPOCH_LOG.addHandler(_AboveBars())
        EPOCH_LOG.propagate = False  # printed once, by this handler
    EPOCH_LOG.setLevel(logging.INFO if verbose else logging.WARNING)


def stage_bar(desc: str, total: int, done: int, disable: bool) -> tqdm:
    """The stage's bar over all its batches; `done` counts batches finished before a resume."""
    return tqdm(total=total, initial=done, desc=desc, unit="batch", disable=disable, dynamic_ncols=True)


class Throughput:
    """Tokens per second and teacher work for the bar's postfix, with no host sync: tokens are
    counted from the batch's tensor shapes, teacher work from the teacher's Python counters
    (forward samples of a live teacher, reads of a store)."""

    def __init__(self, teacher=None):
        self.teacher = teacher
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, batch: dict) -> None:
        ids = batch.get("input_ids") if isinstance(batch, dict) else None
        if ids is not None:
            self.tokens += ids.numel()  # shape metadata only

    def postfix(self) -> dict[str, str]:
        out = {}
        if self.tokens:
            out["tok/s"] = f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):,.0f}"
        t = self.teacher
        if t is not None and getattr(t, "cached", False):
            out["teacher"] = f"{t.calls} store reads"
        elif t is not None:
            out["teacher"] = f"{t.samples} fwd samples"
        return out

