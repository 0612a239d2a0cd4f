"""THE training loop. Every method plugs in as an nn.Module: `method(batch)` -> losses.

Per epoch: DataLoader batches in a seeded order -> forward (autocast) -> backward
(DDP syncs buckets, not on accumulating micro-batches) -> clip -> AdamW step ->
schedule -> periodic checkpoint; then evaluate, log a line to metrics.jsonl, keep
the best and the last checkpoint. One host sync per optimizer step (the gradient
norm, which also tells a non-finite step); loss sums stay on the device and are read
every `log_every` steps. A run killed at any moment resumes from its last checkpoint
and finishes exactly as an uninterrupted run would: the batch order depends only on
(seed, epoch), and the RNG, optimizer, schedule, running sums and method counters
are all part of the checkpoint.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from kdforge.errors import NonFiniteLoss
from kdforge.rundir import append_jsonl, read_jsonl, write_jsonl
from kdforge.train.checkpoint import CheckpointWriter, load_checkpoint, load_weights, restore_rng, rng_state, snapshot
from kdforge.train.data import EpochBatchSampler, make_loader, to_device
from kdforge.train.engine import Engine
from kdforge.train.evaluate import classification_metrics
from kdforge.train.progress import EPOCH_LOG, Throughput, stage_bar
from kdforge.train.trackers import open_tracker

MetricFn = Callable[[torch.nn.Module, Dataset, torch.device], dict[str, float]]


class LoopConfig(Protocol):
    """What the loop reads of a training section (`kdforge.config.TrainConfig`, which documents each
    field and holds every default; the loop has none of its own)."""

    epochs: int
    patience: int | None
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    warmup_fraction: float
    grad_accum: int
    max_grad_norm: float | None
    checkpoint_every: int
    checkpoint_interval: float
    on_nonfinite: str
    precision: str
    parallel: str
    num_workers: int
    max_steps: int | None
    log_every: int
    eval_every: int | None
    tracker: str


class LoopMethod(Protocol):
    """What the loop calls on a method (`kdforge.methods.base.Method`): an nn.Module whose forward(batch)
    returns {term: loss}, with its student, frozen teachers and counters."""

    student: nn.Module

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]: ...
    def frozen(self) -> list: ...
    def counter_state(self) -> dict: ...
    def load_counter_state(self, state: dict) -> None: ...
    def epoch_stats(self) -> dict: ...
    def reset_stats(self) -> None: ...


@dataclass
class LoopState:
    """What the loop has counted; saved as `loop` in every checkpoint, so a resumed run continues from it."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch already trained (a mid-epoch checkpoint)
    step: int = 0  # optimizer steps taken
    best: float = -math.inf  # the best epoch's val[select]
    best_epoch: int = -1
    sums: dict = field(default_factory=dict)  # term -> Σ loss · samples this epoch (float64 on the device until saved)
    count: int = 0  # samples behind `sums`
    stopped: bool = False  # early-stopped: a resume trains no more

    def saved(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "best": self.best, "best_epoch": self.best_epoch,
                "sums": _floats(self.sums), "count": int(self.count), "stopped": self.stopped}


@dataclass
class FitResult:
    history: list[dict]
    best: dict
    steps: int
    stats: dict = field(default_factory=dict)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int):
    warmup = int(cfg.warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _floats(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def _total(losses: dict):
    """The terms' sum (no `0 +` for a single term)."""
    values = iter(losses.values())
    total = next(values)
    for v in values:
        total = total + v
    return total


def _keys(pairs: list) -> list[str]:
    return list(dict.fromkeys(k for d, _ in pairs for k in d))


class Loop:
    """One training run of a method: built once (`__init__`: engine, data order, optimizer, schedule, a
    checkpoint resumed), then `run()` trains epoch by epoch. Everything a resume needs is in `self.state`."""

    def __init__(self, method: LoopMethod, train: Dataset, val: Dataset, cfg: LoopConfig, out_dir: Path, seed: int, *,
                 metric_fn: MetricFn, select: str | None, desc: str, resume: bool, quiet: bool,
                 on_epoch_end: Callable[[dict], None] | None, device: str):
        self.method, self.val, self.cfg, self.out_dir = method, val, cfg, out_dir
        self.metric_fn, self.select, self.desc, self.quiet, self.on_epoch_end = metric_fn, select, desc, quiet, on_epoch_end
        self.eng = eng = Engine.from_config(cfg, device)
        self.sampler = EpochBatchSampler(len(train), cfg.batch_size, seed, eng.ctx.rank, eng.ctx.world)
        self.loader = make_loader(train, self.sampler, num_workers=cfg.num_workers, device=eng.device)
        self.batches_per_epoch = len(self.sampler)
        steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        self.total_steps = min(steps_per_epoch * cfg.epochs, cfg.max_steps or math.inf)
        self.ckpt_last, self.ckpt_best = out_dir / "checkpoints/last", out_dir / "checkpoints/best"
        self.log_path = out_dir / "metrics.jsonl"

        torch.manual_seed(seed)
        method.to(eng.device)
        self.state = LoopState()
        restored = load_checkpoint(self.ckpt_last, method) if resume else None
        self.model = eng.prepare(method)  # DDP-wrapped, an FSDP-sharded copy, or the method itself
        self.core = eng.unwrap(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = eng.optimizer(self.params, cfg.lr, cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps)
        if restored is not None:
            eng.load_optimizer_state(self.model, self.optimizer, restored["optimizer"])
            self.scheduler.load_state_dict(restored["scheduler"])
            if eng.scaler is not None and "scaler" in restored:
                eng.scaler.load_state_dict(restored["scaler"])
            self.core.load_counter_state(restored["method"])
            restore_rng(restored["rng"])
            self.state = LoopState(**restored["loop"])
        self.history = [r for r in read_jsonl(self.log_path) if r["epoch"] < self.state.epoch]
        if eng.is_main:
            write_jsonl(self.log_path, self.history)  # drop lines logged after the checkpoint we resume from
        self.tracker = open_tracker(cfg.tracker, out_dir, desc, enabled=eng.is_main)

        self.window: list = []  # the good steps' (detached losses, samples) not yet added to state.sums
        self.best_pending: list = []  # [weights snapshot, meta] of a new best epoch not yet handed to the writer
        self.saved_at = time.monotonic()
        total_batches = min(cfg.epochs * self.batches_per_epoch, self.total_steps * cfg.grad_accum)
        self.bar = stage_bar(desc, total_batches, self.state.epoch * self.batches_per_epoch + self.state.batch,
                             disable=quiet or not eng.is_main)
        self.post: dict = {}  # the bar's postfix: epoch, running loss, latest validation metric, tokens/s, teacher work
        self.throughput = Throughput(next(iter(self.core.frozen()), None))
        self.writer: CheckpointWriter | None = None

    def run(self) -> FitResult:
        self.writer = CheckpointWriter()  # rank 0 writes checkpoints on a worker thread while training goes on
        try:
            for epoch in range(self.state.epoch, self.cfg.epochs):
                if self.state.step >= self.total_steps or self.state.stopped:
                    break
                t0 = time.perf_counter()
                self.train_epoch(epoch)
                if self.end_epoch(epoch, t0):  # early stop: val has not improved for `patience` epochs
                    break
            self.flush_best()
        finally:
            self.writer.close()  # every checkpoint on disk before anything reads it back (or an error propagates)
        self.bar.close()
        self.tracker.finish()

        state, history = self.state, self.history
        self.eng.barrier()
        if state.best_epoch != history[-1]["epoch"]:  # the run's answer is its best epoch on val (when it is the
            load_weights(self.ckpt_best, self.method.student)  # last one, the method already holds those weights)
        best = next(r for r in history if r["epoch"] == state.best_epoch)
        totals = {k: sum(r.get(k, 0) for r in history) for k in ("train/filtered", "train/seen") if any(k in r for r in history)}
        return FitResult(history=history, best=best, steps=state.step, stats=totals)

    def train_epoch(self, epoch: int) -> None:
        """The epoch's batches from state.batch on: forward (autocast), backward, and every `grad_accum`
        micro-batches one optimizer step; logging, mid-epoch validation and checkpoints by step count."""
        cfg, eng, model, state, bar = self.cfg, self.eng, self.model, self.state, self.bar
        self.sampler.set_epoch(epoch, state.batch)
        n_batches = self.sampler.start + len(self.sampler)
        model.train()
        self.post["epoch"] = f"{epoch + 1}/{cfg.epochs}"
        step_losses: list = []  # this optimizer step's (detached losses, samples) until the step is known good
        step_total, count = None, 0
        for b, batch in enumerate(self.loader, start=state.batch):
            batch = to_device(batch, eng.device)
            self.throughput.add(batch)
            n = len(batch["idx"])
            boundary = (b + 1) % cfg.grad_accum == 0 or b + 1 == n_batches
            with eng.no_sync(model, accumulating=not boundary):
                with eng.autocast():
                    losses = model(batch)
                total = _total(losses)
                if total.dtype != torch.float32:
                    total = total.float()
                eng.backward(total if cfg.grad_accum == 1 else total / cfg.grad_accum)
            step_losses.append(({k: v.detach() for k, v in losses.items()}, n))
            step_total = total.detach() if step_total is None else step_total + total.detach()
            count += n
            bar.update(1)  # redraws at most every 0.1 s
            if not boundary:
                continue
            if eng.step(self.optimizer, self.params, cfg.max_grad_norm, step_total):  # the step's one host sync
                self.scheduler.step()
                self.window.extend(step_losses)
                state.count += count
                state.step += 1
            else:
                self.skip_step(step_losses, epoch, b)
            for p in self.params:  # zero_grad(set_to_none=True) without its per-call profiler and dynamo wrappers
                p.grad = None
            step_losses, step_total, count = [], None, 0
            state.batch = b + 1
            self.after_step(epoch, mid_epoch=b + 1 < n_batches)
            if state.step >= self.total_steps:
                break

    def skip_step(self, step_losses: list, epoch: int, b: int) -> None:
        """A non-finite loss or gradient: stop with the last good checkpoint on disk, or skip the step."""
        bad = ", ".join(k for k in _keys(step_losses)
                        if not all(torch.isfinite(d[k]).all() for d, _ in step_losses if k in d)) or "gradient"
        if self.cfg.on_nonfinite == "stop":
            self.flush_best()
            self.writer.wait()  # the last good checkpoint on disk before saying so
            kept = f"last good checkpoint kept in {self.ckpt_last}" if self.ckpt_last.exists() else "no checkpoint written yet"
            raise NonFiniteLoss(f"loss became non-finite ({bad}) at epoch {epoch + 1}, batch {b + 1}; stopped, {kept} "
                                "(lower distill.lr, or set on_nonfinite: skip)")
        warnings.warn(f"non-finite loss ({bad}) at epoch {epoch + 1}, batch {b + 1}: step skipped")
        self.state.sums["skipped"] = self.state.sums.get("skipped", 0.0) + 1

    def after_step(self, epoch: int, mid_epoch: bool) -> None:
        """What falls due at this step count: the running losses, a mid-epoch validation, a checkpoint."""
        cfg, state = self.cfg, self.state
        if state.step % cfg.log_every == 0 and state.count:  # reading the running mean is a host sync
            self.fold()
            running = {k: float(v) / state.count for k, v in state.sums.items() if k != "skipped"}
            self.post.update(loss=f"{sum(running.values()):.4f}", **self.throughput.postfix())
            self.bar.set_postfix(self.post, refresh=False)
            self.tracker.log({f"train/{k}": v for k, v in running.items()}, state.step)
        if cfg.eval_every and state.step % cfg.eval_every == 0 and mid_epoch:
            line = {"epoch": epoch, "step": state.step, **{f"val/{k}": v for k, v in self.validate().items()}}
            self.model.train()
            self.tracker.log(line, state.step)
            if self.eng.is_main:
                append_jsonl(self.out_dir / "evals.jsonl", line)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and mid_epoch:
            self.checkpoint()

    def end_epoch(self, epoch: int, t0: float) -> bool:
        """Validate, log the epoch's line, keep a new best, checkpoint when due. True: stop early."""
        cfg, eng, state, select = self.cfg, self.eng, self.state, self.select
        self.fold()
        sums = eng.sum_dict({**_floats(state.sums), "_count": state.count})
        n_seen = max(sums.pop("_count"), 1)
        record = {"epoch": epoch, "step": state.step, "lr": self.scheduler.get_last_lr()[0]}
        record.update({f"train/{k}": v / n_seen for k, v in sums.items() if k != "skipped"})
        record.update({f"train/{k}": v for k, v in eng.sum_dict(self.core.epoch_stats()).items()})
        if "skipped" in sums:
            record["train/skipped_steps"] = sums["skipped"]
        record.update({f"val/{k}": v for k, v in self.validate().items()})
        record["seconds"] = time.perf_counter() - t0
        self.history.append(record)
        score = record[f"val/{select}"] if select else epoch  # select None: the latest epoch is the best
        if score > state.best:
            state.best, state.best_epoch = score, epoch
        stale = select is not None and cfg.patience is not None and epoch - state.best_epoch >= cfg.patience
        final = epoch + 1 == cfg.epochs or state.step >= self.total_steps or stale  # nothing trains after this epoch
        if state.best_epoch == epoch and eng.is_main:  # kept in memory (a copy unless final); written with the next checkpoint
            self.best_pending[:] = [snapshot(self.method.student, copy=not final), {"epoch": epoch, select or "epoch": score}]
        state.epoch, state.batch, state.sums, state.count, state.stopped = epoch + 1, 0, {}, 0, stale  # stopped: a resume trains no more
        self.core.reset_stats()
        train_loss = sum(v for k, v in record.items() if k.startswith("train/") and k[6:] in sums)
        self.post.update({"epoch": f"{epoch + 1}/{cfg.epochs}", "loss": f"{train_loss:.4f}", **self.throughput.postfix(),
                          **({f"val {select}": f"{record[f'val/{select}']:.4f}"} if select else {})})
        self.bar.set_postfix(self.post)
        self.tracker.log({k: v for k, v in record.items() if k.startswith(("train/", "val/"))}, state.step)
        if eng.is_main:
            append_jsonl(self.log_path, record)  # one line per epoch (the file was cut back to `history` at start)
            if not self.quiet:  # one line per epoch, printed only under --verbose (kdforge.train.progress)
                line = {k: round(v, 4) for k, v in record.items() if k.startswith(("val/", "train/"))}
                EPOCH_LOG.info(f"{self.desc} epoch {epoch + 1}/{cfg.epochs} {line}")
        if final or self.on_epoch_end is not None or self.checkpoint_due():
            self.checkpoint(copy=not final)
        if self.on_epoch_end is not None:
            self.writer.wait()  # the hook sees the epoch with its checkpoint on disk
            self.on_epoch_end(record)
        return stale

    def fold(self) -> None:
        """Add the good steps' losses to the float64 running sums: one stack per term, not one op per step.
        Folds happen at steps fixed by the step count (logging, checkpoints, epoch ends), so a resumed
        run adds its sums up in the same groups as an uninterrupted one."""
        window, sums, device = self.window, self.state.sums, self.eng.device
        if not window:
            return
        ns = torch.tensor([n for _, n in window], dtype=torch.float64, device=device)
        for k in _keys(window):
            vals = torch.stack([d[k] if k in d else torch.zeros((), device=device) for d, _ in window])
            sums[k] = sums.get(k, 0.0) + (vals.double() * ns).sum()
        window.clear()

    def flush_best(self) -> None:
        if self.best_pending:
            self.writer.submit_snapshot(self.ckpt_best, *self.best_pending, keep_previous=False)
            self.best_pending.clear()

    def checkpoint_due(self) -> bool:
        """An epoch's end saves when `checkpoint_interval` seconds have passed since the last save (rank 0's
        clock decides for every rank), so a loop of millisecond epochs does not spend its time on disk."""
        eng = self.eng
        due = time.monotonic() - self.saved_at >= self.cfg.checkpoint_interval
        return eng.sum_dict({"due": float(due and eng.is_main)})["due"] > 0 if eng.ctx.world > 1 else due

    def checkpoint(self, copy: bool = True) -> None:
        eng = self.eng
        self.fold()
        eng.sync_to(self.model, self.method)  # FSDP: gathers full weights on every rank
        opt_state = eng.optimizer_state(self.model, self.optimizer)
        self.saved_at = time.monotonic()
        if eng.is_main:
            self.flush_best()  # the best weights on disk no later than the state that names them
            self.writer.submit(self.ckpt_last, self.method, {
                "loop": self.state.saved(), "optimizer": opt_state, "scheduler": self.scheduler.state_dict(),
                "method": self.core.counter_state(), "rng": rng_state(),
                **({"scaler": eng.scaler.state_dict()} if eng.scaler is not None else {}),
            }, copy=copy)
        eng.barrier()

    def validate(self) -> dict[str, float]:
        self.eng.sync_to(self.model, self.method)
        return self.metric_fn(self.method.student, self.val, self.eng.device)


def fit(
    method: LoopMethod,
    train: Dataset,
    val: Dataset,
    cfg: LoopConfig,
    out_dir: Path,
    seed: int,
    *,
    metric_fn: MetricFn = classification_metrics,
    select: str | None = "accuracy",
    desc: str = "train",
    resume: bool = True,
    quiet: bool = False,
    on_epoch_end: Callable[[dict], None] | None = None,
    device: str = "auto",
) -> FitResult:
    """Train `method` on `train`, select on `val`[select], write into `out_dir`.

    `select=None` keeps the last epoch (a phase whose val metric says nothing yet, e.g. features
    distilled before the head is trained).

    `on_epoch_end(record)` sees each epoch's metrics line after its checkpoint is
    written (hyperparameter search reports to its pruner there; it may raise to stop).
    """
    return Loop(method, train, val, cfg, Path(out_dir), seed, metric_fn=metric_fn, select=select, desc=desc,
                resume=resume, quiet=quiet, on_epoch_end=on_epoch_end, device=device).run()


__all__ = ["FitResult", "Loop", "LoopConfig", "LoopState", "fit", "make_scheduler"]
