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
from typing import Callable

import torch
from torch.utils.data import Dataset

from kdforge.errors import NonFiniteLoss
from kdforge.methods.base import Method
from kdforge.rundir import append_jsonl, read_jsonl, write_jsonl
from kdforge.train.checkpoint import CheckpointWriter, load_checkpoint, load_weights, restore_rng, rng_state, snapshot
from kdforge.train.data import EpochBatchSampler, make_loader, to_device
from kdforge.train.engine import Engine
from kdforge.train.evaluate import classification_metrics
from kdforge.train.progress import EPOCH_LOG, Throughput, stage_bar
from kdforge.train.trackers import open_tracker

MetricFn = Callable[[torch.nn.Module, Dataset, torch.device], dict[str, float]]


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


def fit(
    method: Method,
    train: Dataset,
    val: Dataset,
    cfg,
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
    out_dir = Path(out_dir)
    eng = Engine.from_config(cfg, device)
    sampler = EpochBatchSampler(len(train), cfg.batch_size, seed, eng.ctx.rank, eng.ctx.world)
    loader = make_loader(train, sampler, num_workers=getattr(cfg, "num_workers", 0), device=eng.device)
    batches_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    max_steps = getattr(cfg, "max_steps", None)
    total_steps = min(steps_per_epoch * cfg.epochs, max_steps or math.inf)
    log_every, eval_every = getattr(cfg, "log_every", 50), getattr(cfg, "eval_every", None)
    patience = getattr(cfg, "patience", None)  # early stop on val (the teacher stage's schedule)

    ckpt_last, ckpt_best, log_path = out_dir / "checkpoints/last", out_dir / "checkpoints/best", out_dir / "metrics.jsonl"
    torch.manual_seed(seed)
    method.to(eng.device)
    state = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "sums": {}, "count": 0}
    restored = load_checkpoint(ckpt_last, method) if resume else None
    model = eng.prepare(method)  # DDP-wrapped, an FSDP-sharded copy, or the method itself
    core = eng.unwrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = eng.optimizer(params, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    if restored is not None:
        eng.load_optimizer_state(model, optimizer, restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        if eng.scaler is not None and "scaler" in restored:
            eng.scaler.load_state_dict(restored["scaler"])
        core.load_counter_state(restored["method"])
        restore_rng(restored["rng"])
        state = restored["loop"]
    history = [r for r in read_jsonl(log_path) if r["epoch"] < state["epoch"]]
    if eng.is_main:
        write_jsonl(log_path, history)  # drop lines logged after the checkpoint we resume from
    tracker = open_tracker(getattr(cfg, "tracker", "none"), out_dir, desc, enabled=eng.is_main)

    window: list = []  # the good steps' (detached losses, samples) not yet added to state["sums"]
    best_pending: list = []  # [weights snapshot, state] of a new best epoch not yet handed to the writer
    saved_at = [time.monotonic()]

    def fold() -> None:
        """Add the good steps' losses to the float64 running sums: one stack per term, not one op per step.
        Folds happen at steps fixed by the step count (logging, checkpoints, epoch ends), so a resumed
        run adds its sums up in the same groups as an uninterrupted one."""
        if not window:
            return
        ns = torch.tensor([n for _, n in window], dtype=torch.float64, device=eng.device)
        for k in _keys(window):
            vals = torch.stack([d[k] if k in d else torch.zeros((), device=eng.device) for d, _ in window])
            state["sums"][k] = state["sums"].get(k, 0.0) + (vals.double() * ns).sum()
        window.clear()

    def flush_best() -> None:
        if best_pending:
            writer.submit_snapshot(ckpt_best, *best_pending, keep_previous=False)
            best_pending.clear()

    def checkpoint_due() -> bool:
        """An epoch's end saves when `checkpoint_interval` seconds have passed since the last save (rank 0's
        clock decides for every rank), so a loop of millisecond epochs does not spend its time on disk."""
        due = time.monotonic() - saved_at[0] >= getattr(cfg, "checkpoint_interval", 0.0)
        return eng.sum_dict({"due": float(due and eng.is_main)})["due"] > 0 if eng.ctx.world > 1 else due

    def checkpoint(copy: bool = True) -> None:
        fold()
        eng.sync_to(model, method)  # FSDP: gathers full weights on every rank
        opt_state = eng.optimizer_state(model, optimizer)
        saved_at[0] = time.monotonic()
        if eng.is_main:
            flush_best()  # the best weights on disk no later than the state that names them
            writer.submit(ckpt_last, method, {
                "loop": {**state, "sums": _floats(state["sums"]), "count": int(state["count"])},
                "optimizer": opt_state, "scheduler": scheduler.state_dict(), "method": core.counter_state(),
                "rng": rng_state(), **({"scaler": eng.scaler.state_dict()} if eng.scaler is not None else {}),
            }, copy=copy)
        eng.barrier()

    def validate() -> dict[str, float]:
        eng.sync_to(model, method)
        return metric_fn(method.student, val, eng.device)

    total_batches = min(cfg.epochs * batches_per_epoch, total_steps * cfg.grad_accum)
    bar = stage_bar(desc, total_batches, state["epoch"] * batches_per_epoch + state["batch"],
                    disable=quiet or not eng.is_main)
    post: dict = {}  # the bar's postfix: epoch, running loss, latest validation metric, tokens/s, teacher work
    throughput = Throughput(next(iter(core.frozen()), None))

    def run_epochs() -> None:
        for epoch in range(state["epoch"], cfg.epochs):
            if state["step"] >= total_steps or state.get("stopped"):
                break
            sampler.set_epoch(epoch, state["batch"])
            n_batches = sampler.start + len(sampler)
            model.train()
            post["epoch"] = f"{epoch + 1}/{cfg.epochs}"
            t0 = time.perf_counter()
            step_losses: list = []  # this optimizer step's (detached losses, samples) until the step is known good
            step_total, count = None, 0
            for b, batch in enumerate(loader, start=state["batch"]):
                batch = to_device(batch, eng.device)
                throughput.add(batch)
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
                if eng.step(optimizer, params, cfg.max_grad_norm, step_total):  # the step's one host sync
                    scheduler.step()
                    window.extend(step_losses)
                    state["count"] += count
                    state["step"] += 1
                else:
                    bad = ", ".join(k for k in _keys(step_losses)
                                    if not all(torch.isfinite(d[k]).all() for d, _ in step_losses if k in d)) or "gradient"
                    if cfg.on_nonfinite == "stop":
                        flush_best()
                        writer.wait()  # the last good checkpoint on disk before saying so
                        kept = f"last good checkpoint kept in {ckpt_last}" if ckpt_last.exists() else "no checkpoint written yet"
                        raise NonFiniteLoss(
                            f"loss became non-finite ({bad}) at epoch {epoch + 1}, batch {b + 1}; stopped, {kept} "
                            "(lower distill.lr, or set on_nonfinite: skip)"
                        )
                    warnings.warn(f"non-finite loss ({bad}) at epoch {epoch + 1}, batch {b + 1}: step skipped")
                    state["sums"]["skipped"] = state["sums"].get("skipped", 0.0) + 1
                for p in params:  # zero_grad(set_to_none=True) without its per-call profiler and dynamo wrappers
                    p.grad = None
                step_losses, step_total, count = [], None, 0
                state["batch"] = b + 1
                if state["step"] % log_every == 0 and state["count"]:  # reading the running mean is a host sync
                    fold()
                    running = {k: float(v) / state["count"] for k, v in state["sums"].items() if k != "skipped"}
                    post.update(loss=f"{sum(running.values()):.4f}", **throughput.postfix())
                    bar.set_postfix(post, refresh=False)
                    tracker.log({f"train/{k}": v for k, v in running.items()}, state["step"])
                if eval_every and state["step"] % eval_every == 0 and b + 1 < n_batches:
                    line = {"epoch": epoch, "step": state["step"], **{f"val/{k}": v for k, v in validate().items()}}
                    model.train()
                    tracker.log(line, state["step"])
                    if eng.is_main:
                        append_jsonl(out_dir / "evals.jsonl", line)
                if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and b + 1 < n_batches:
                    checkpoint()
                if state["step"] >= total_steps:
                    break

            fold()
            sums = eng.sum_dict({**_floats(state["sums"]), "_count": state["count"]})
            n_seen = max(sums.pop("_count"), 1)
            record = {"epoch": epoch, "step": state["step"], "lr": scheduler.get_last_lr()[0]}
            record.update({f"train/{k}": v / n_seen for k, v in sums.items() if k != "skipped"})
            record.update({f"train/{k}": v for k, v in eng.sum_dict(core.epoch_stats()).items()})
            if "skipped" in sums:
                record["train/skipped_steps"] = sums["skipped"]
            record.update({f"val/{k}": v for k, v in validate().items()})
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            score = record[f"val/{select}"] if select else epoch  # select None: the latest epoch is the best
            if score > state["best"]:
                state["best"], state["best_epoch"] = score, epoch
            stale = select is not None and patience is not None and epoch - state["best_epoch"] >= patience
            final = epoch + 1 == cfg.epochs or state["step"] >= total_steps or stale  # nothing trains after this epoch
            if state["best_epoch"] == epoch:
                if eng.is_main:  # kept in memory (a copy unless final); written with the next resumable checkpoint
                    best_pending[:] = [snapshot(method.student, copy=not final), {"epoch": epoch, select or "epoch": score}]
            state.update(epoch=epoch + 1, batch=0, sums={}, count=0, stopped=stale)  # stopped: a resume trains no more
            core.reset_stats()
            train_loss = sum(v for k, v in record.items() if k.startswith("train/") and k[6:] in sums)
            post.update({"epoch": f"{epoch + 1}/{cfg.epochs}", "loss": f"{train_loss:.4f}", **throughput.postfix(),
                         **({f"val {select}": f"{record[f'val/{select}']:.4f}"} if select else {})})
            bar.set_postfix(post)
            tracker.log({k: v for k, v in record.items() if k.startswith(("train/", "val/"))}, state["step"])
            if eng.is_main:
                append_jsonl(log_path, record)  # one line per epoch (the file was cut back to `history` at start)
                if not quiet:  # one line per epoch, printed only under --verbose (kdforge.train.progress)
                    line = {k: round(v, 4) for k, v in record.items() if k.startswith(("val/", "train/"))}
                    EPOCH_LOG.info(f"{desc} epoch {epoch + 1}/{cfg.epochs} {line}")
            if final or on_epoch_end is not None or checkpoint_due():
                checkpoint(copy=not final)
            if on_epoch_end is not None:
                writer.wait()  # the hook sees the epoch with its checkpoint on disk
                on_epoch_end(record)
            if stale:  # early stop: val has not improved for `patience` epochs (kept in the checkpoint above)
                break

    writer = CheckpointWriter()  # rank 0 writes checkpoints on a worker thread while training goes on
    try:
        run_epochs()
        flush_best()
    finally:
        writer.close()  # every checkpoint on disk before anything reads it back (or an error propagates)
    bar.close()
    tracker.finish()

    eng.barrier()
    if state["best_epoch"] != history[-1]["epoch"]:  # the run's answer is its best epoch on val (when it is the
        load_weights(ckpt_best, method.student)  # last one, the method already holds those weights)
    best = next(r for r in history if r["epoch"] == state["best_epoch"])
    totals = {k: sum(r.get(k, 0) for r in history) for k in ("train/filtered", "train/seen") if any(k in r for r in history)}
    return FitResult(history=history, best=best, steps=state["step"], stats=totals)
