"""THE training loop. Every method plugs in through `method.step(batch)`.

Per epoch: a seeded batch order -> step -> (accumulate) -> clip -> AdamW step ->
schedule -> periodic checkpoint; then evaluate, log a line to metrics.jsonl,
keep the best and the last checkpoint. A run killed at any moment resumes from
its last checkpoint and finishes exactly as an uninterrupted run would: the
batch order depends only on (seed, epoch), and the RNG, optimizer, schedule,
running sums and method counters are all part of the checkpoint.
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
from kdforge.rundir import read_jsonl, write_jsonl
from kdforge.train import distributed as dist
from kdforge.train.batching import collate_indexed, epoch_batches, to_device
from kdforge.train.checkpoint import load_checkpoint, load_weights, restore_rng, rng_state, save_checkpoint
from kdforge.train.evaluate import classification_metrics
from kdforge.train.progress import EPOCH_LOG, stage_bar

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


def fit(
    method: Method,
    train: Dataset,
    val: Dataset,
    cfg,
    out_dir: Path,
    seed: int,
    *,
    metric_fn: MetricFn = classification_metrics,
    select: str = "accuracy",
    desc: str = "train",
    resume: bool = True,
    quiet: bool = False,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train `method.trainable` on `train`, select on `val`[select], write into `out_dir`.

    `on_epoch_end(record)` sees each epoch's metrics line after its checkpoint is
    written (hyperparameter search reports to its pruner there; it may raise to stop).
    """
    out_dir = Path(out_dir)
    ctx = dist.context()
    method.to(ctx.device)
    params = [p for p in method.trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches_per_epoch = len(epoch_batches(len(train), cfg.batch_size, seed, 0, ctx.rank, ctx.world))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)

    ckpt_last, ckpt_best, log_path = out_dir / "checkpoints/last", out_dir / "checkpoints/best", out_dir / "metrics.jsonl"
    torch.manual_seed(seed)
    state = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "sums": {}, "count": 0}
    restored = load_checkpoint(ckpt_last, method.trainable) if resume else None
    if restored is not None:
        optimizer.load_state_dict(restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        method.load_state_dict(restored["method"])
        restore_rng(restored["rng"])
        state = restored["loop"]
    history = [r for r in read_jsonl(log_path) if r["epoch"] < state["epoch"]]
    if ctx.is_main:
        write_jsonl(log_path, history)  # drop lines logged after the checkpoint we resume from

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(ckpt_last, method.trainable, {
                "loop": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(), "rng": rng_state(),
            })
        ctx.barrier()

    bar = stage_bar(desc, cfg.epochs * batches_per_epoch, state["epoch"] * batches_per_epoch + state["batch"],
                    disable=quiet or not ctx.is_main)
    post: dict = {}  # the bar's postfix: epoch, running loss, latest validation metric
    for epoch in range(state["epoch"], cfg.epochs):
        batches = epoch_batches(len(train), cfg.batch_size, seed, epoch, ctx.rank, ctx.world)
        method.trainable.train()
        t0 = time.perf_counter()
        for b in range(state["batch"], len(batches)):
            batch = to_device(collate_indexed([(i, train[i]) for i in batches[b]]), ctx.device)
            losses = method.step(batch)
            total = sum(losses.values())
            if not ctx.all_finite(total):
                bad = ", ".join(k for k, v in losses.items() if not torch.isfinite(v)) or "total"
                if cfg.on_nonfinite == "stop":
                    kept = f"last good checkpoint kept in {ckpt_last}" if ckpt_last.exists() else "no checkpoint written yet"
                    raise NonFiniteLoss(
                        f"loss became non-finite ({bad}) at epoch {epoch + 1}, batch {b + 1}; stopped, {kept} "
                        "(lower distill.lr, or set on_nonfinite: skip)"
                    )
                warnings.warn(f"non-finite loss ({bad}) at epoch {epoch + 1}, batch {b + 1}: step skipped")
                optimizer.zero_grad(set_to_none=True)
                state["sums"]["skipped"] = state["sums"].get("skipped", 0.0) + 1
                bar.update(1)
                continue
            (total / cfg.grad_accum).backward()
            for k, v in losses.items():
                state["sums"][k] = state["sums"].get(k, 0.0) + v.item() * len(batch["idx"])
            state["count"] += len(batch["idx"])
            post.update(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{total.item():.4f}")
            bar.set_postfix(post, refresh=False)
            bar.update(1)  # redraws at most every 0.1 s
            if (b + 1) % cfg.grad_accum and b + 1 != len(batches):
                continue
            ctx.average_gradients(params)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = b + 1
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and b + 1 < len(batches):
                checkpoint()

        sums = ctx.sum_dict({**state["sums"], "_count": state["count"]})
        count = max(sums.pop("_count"), 1)
        record = {"epoch": epoch, "step": state["step"], "lr": scheduler.get_last_lr()[0]}
        record.update({f"train/{k}": v / count for k, v in sums.items() if k != "skipped"})
        record.update({f"train/{k}": v for k, v in ctx.sum_dict(method.epoch_stats()).items()})
        if "skipped" in sums:
            record["train/skipped_steps"] = sums["skipped"]
        record.update({f"val/{k}": v for k, v in metric_fn(method.student, val, ctx.device).items()})
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if record[f"val/{select}"] > state["best"]:
            state["best"], state["best_epoch"] = record[f"val/{select}"], epoch
            if ctx.is_main:
                save_checkpoint(ckpt_best, method.student, {"epoch": epoch, select: state["best"]}, keep_previous=False)
        state.update(epoch=epoch + 1, batch=0, sums={}, count=0)
        method.reset_stats()
        post[f"val {select}"] = f"{record[f'val/{select}']:.4f}"
        bar.set_postfix(post)
        if ctx.is_main:
            write_jsonl(log_path, history)
            if not quiet:  # one line per epoch, printed only under --verbose (kdforge.train.progress)
                line = {k: round(v, 4) for k, v in record.items() if k.startswith(("val/", "train/"))}
                EPOCH_LOG.info(f"{desc} epoch {epoch + 1}/{cfg.epochs} {line}")
        checkpoint()
        if on_epoch_end is not None:
            on_epoch_end(record)
    bar.close()

    ctx.barrier()
    load_weights(ckpt_best, method.student)  # the run's answer is its best epoch on val
    best = next(r for r in history if r["epoch"] == state["best_epoch"])
    totals = {k: sum(r.get(k, 0) for r in history) for k in ("train/filtered", "train/seen") if any(k in r for r in history)}
    return FitResult(history=history, best=best, steps=state["step"], stats=totals)
