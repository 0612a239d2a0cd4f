"""What the training loop shows a person while it runs.

One live bar per stage (all its epochs), with the epoch, the running loss and the
latest validation metric in the postfix. The per-epoch lines are INFO records of the
`kdforge.train` logger: hidden unless asked for (`kdforge run --verbose`), and always
kept in the stage's metrics.jsonl either way.
"""
from __future__ import annotations

import logging

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
