"""Workflow of method `mutual` (deep mutual learning, Zhang et al. 2018): the peers of
`mutual:` train together from scratch in one stage (RUN/peers); every peer is tested
(peer 0, the student, at its best epoch; the others at the last epoch).
"""
from __future__ import annotations

import copy

from torch import nn

from kdforge.data import load_data
from kdforge.models.build import build_model
from kdforge.registry import WORKFLOWS
from kdforge.stages import train_stage
from kdforge.train.batching import probe_batch
from kdforge.train.checkpoint import load_checkpoint
from kdforge.train.evaluate import classification_metrics
from kdforge.workflows.run import Run, build_method, eval_row, report_markdown


def peer_metrics(peers: list[nn.Module]):
    """metric_fn for the loop: peer 0's metrics as usual, plus `peer{k}_accuracy` for every peer."""
    def metric(model: nn.Module, dataset, device=None) -> dict[str, float]:
        out = {}
        for k, p in enumerate(peers):
            m = classification_metrics(p, dataset, device)
            if k == 0:
                out.update(m)
            out[f"peer{k}_accuracy"] = m["accuracy"]
        return out

    return metric


@WORKFLOWS.register("mutual")
def run_mutual(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    data = load_data(recipe.data, recipe.seed)
    m = recipe.mutual
    cfgs = list(m.peers) if m.peers is not None else [recipe.student] * m.count
    models = [build_model(c, data.input_shape, data.num_classes, f"mutual.peers.{k}", recipe.seed + 1 + k)
              for k, c in enumerate(cfgs)]
    method = build_method(recipe, models, None, probe_batch(data.train))
    run = Run.open(recipe, resume=resume, force=force)
    stage = train_stage("peers", run.dir, method, data, recipe.distill, recipe.seed, quiet=quiet,
                        metric_fn=peer_metrics(models))
    last = run.dir / "peers/checkpoints/last"
    if last.exists():  # peers 1.. at their last epoch; peer 0 at its best
        best0 = copy.deepcopy(models[0].state_dict())
        load_checkpoint(last, method)
        models[0].load_state_dict(best0)
    rows = {f"peer{k}": eval_row(p, data) for k, p in enumerate(models)}
    results = {"seed": recipe.seed, "method": "mutual", "student_stage": stage, "models": rows, "student": rows["peer0"]}
    return run.finish(results, report_markdown(recipe, rows))


__all__ = ["peer_metrics", "run_mutual"]
