"""Workflow of method `mutual` (deep mutual learning, Zhang et al. 2018): the peers of
`mutual:` train together from scratch in one stage (RUN/peers); every peer is tested
(peer 0, the student, at its best epoch; the others at the last epoch).
"""
from __future__ import annotations

import copy

from kdforge.data import load_data
from kdforge.methods.mutual import MutualLearning
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.train.checkpoint import load_checkpoint
from kdforge.workflows.run import Run, eval_row, report_markdown


@WORKFLOWS.register("mutual")
def run_mutual(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    data = load_data(recipe.data, recipe.seed)
    m = recipe.mutual
    cfgs = list(m.peers) if m.peers is not None else [recipe.student] * m.count
    models = [build_model(c, data.input_shape, data.num_classes, f"mutual.peers.{k}", recipe.seed + 1 + k)
              for k, c in enumerate(cfgs)]
    method = MutualLearning(models[0], None, recipe.distill, probe_batch(data.train), peers=models[1:],
                            temperature=m.temperature, weight=m.weight)
    run = Run.open(recipe, resume=resume, force=force)
    stage = train_stage("peers", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                        metric_fn=lambda model, ds, dev: method.peer_metrics(ds, dev))
    last = run.dir / "peers/checkpoints/last"
    if last.exists():  # peers 1.. at their last epoch; peer 0 at its best
        best0 = copy.deepcopy(models[0].state_dict())
        load_checkpoint(last, method.trainable)
        models[0].load_state_dict(best0)
    rows = {f"peer{k}": eval_row(p, data) for k, p in enumerate(models)}
    results = {"seed": recipe.seed, "method": "mutual", "student_stage": stage, "models": rows, "student": rows["peer0"]}
    return run.finish(results, report_markdown(recipe, rows))


__all__ = ["run_mutual"]
