"""Online distillation: deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning").

N peers (same or different architectures) train together from scratch; each
learns from the labels and from the other peers' soft predictions. No pretrained
teacher. All peers live in one `trainable` ModuleDict, so the one loop's single
optimizer updates every peer each step (the simultaneous variant of DML; each
peer's KL target is detached, so its loss moves that peer only).

`student` is peer 0: the loop selects and saves it on validation accuracy. The
recipe driver also logs every peer's validation accuracy each epoch and tests
every peer (peer 0 at its best epoch, the others at the last epoch).
"""
from __future__ import annotations

import copy

from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.losses.multi import mutual_learning_losses
from kdforge.methods.base import Method
from kdforge.registry import METHODS
from kdforge.train.evaluate import classification_metrics


@METHODS.register("mutual")
class MutualLearning(Method):
    """`student` is peer 0; `peers` are the others (at least one). `teacher` must be None."""

    def __init__(self, student: nn.Module, teacher=None, cfg=None, probe: dict | None = None, *,
                 peers: list[nn.Module] = (), temperature: float = 1.0, weight: float = 1.0):
        super().__init__()
        if teacher is not None:
            raise KDForgeError("method mutual trains peers from scratch and takes no teacher")
        all_peers = [student, *peers]
        if len(all_peers) < 2:
            raise KDForgeError(f"mutual.peers: mutual learning needs at least 2 peers, got {len(all_peers)}")
        self.student = student
        self.peers = nn.ModuleList(all_peers)
        self.trainable = nn.ModuleDict({"peers": self.peers})
        self.temperature, self.weight = temperature, weight
        if probe is not None:
            self._check_classes(probe)

    def _check_classes(self, probe: dict) -> None:
        was = [p.training for p in self.peers]
        widths = []
        for p in self.peers:
            p.eval()  # the probe must not move BatchNorm statistics
            widths.append(p(probe["x"]).shape[-1])
        for p, w in zip(self.peers, was):
            p.train(w)
        if len(set(widths)) != 1:
            raise KDForgeError(f"mutual.peers: peers predict different class counts {widths}; they must match")

    def step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = [p(batch["x"]) for p in self.peers]  # K × (B, C)
        return mutual_learning_losses(logits, batch["y"], self.temperature, self.weight)

    def peer_metrics(self, dataset, device=None) -> dict[str, float]:
        """Validation line: peer 0's metrics as usual, plus `peer{k}_accuracy` for every peer."""
        out = {}
        for k, p in enumerate(self.peers):
            m = classification_metrics(p, dataset, device)
            if k == 0:
                out.update(m)
            out[f"peer{k}_accuracy"] = m["accuracy"]
        return out

    @staticmethod
    def run_recipe(recipe, *, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
        """Build the peers from `mutual:`, train them together in stage `peers/`, test each."""
        from kdforge.data import load_data
        from kdforge.methods import _driver
        from kdforge.models.build import build_model
        from kdforge.pipeline import probe_batch
        from kdforge.train.checkpoint import load_checkpoint

        data = load_data(recipe.data, recipe.seed)
        m = recipe.mutual
        cfgs = list(m.peers) if m.peers is not None else [recipe.student] * m.count
        models = [build_model(c, data.input_shape, data.num_classes, f"mutual.peers.{k}", recipe.seed + 1 + k)
                  for k, c in enumerate(cfgs)]
        probe = probe_batch(data.train)
        method = MutualLearning(models[0], None, recipe.distill, probe, peers=models[1:],
                                temperature=m.temperature, weight=m.weight)
        run_dir = _driver.open_run(recipe, resume=resume, force=force)
        stage = _driver.run_stage(
            "peers", run_dir, method, data.train, data.val, recipe.distill, recipe.seed, quiet=quiet,
            metric_fn=lambda model, ds, dev: method.peer_metrics(ds, dev),
        )
        if (run_dir / "peers/checkpoints/last").exists():  # peers 1.. at their last epoch; peer 0 at its best
            best0 = copy.deepcopy(models[0].state_dict())
            load_checkpoint(run_dir / "peers/checkpoints/last", method.trainable)
            models[0].load_state_dict(best0)
        rows = {f"peer{k}": _driver.test_row(p, data) for k, p in enumerate(models)}
        results = {"seed": recipe.seed, "method": "mutual", "student_stage": stage, "models": rows, "student": rows["peer0"]}
        return _driver.finish_run(run_dir, recipe, results)
