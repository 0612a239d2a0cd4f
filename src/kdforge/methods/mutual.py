"""Online distillation: deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning").

N peers (same or different architectures) train together from scratch; each
learns from the labels and from the other peers' soft predictions. No pretrained
teacher. All peers live in one ModuleList of the method, so the one loop's single
optimizer updates every peer each step (the simultaneous variant of DML; each
peer's KL target is detached, so its loss moves that peer only).

`student` is peer 0: the loop selects and saves it on validation accuracy. The
workflow (kdforge.workflows.mutual) builds the peers, logs every peer's validation accuracy each
epoch and tests every peer (peer 0 at its best epoch, the others at the last epoch).
"""
from __future__ import annotations

from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.losses.multi import mutual_learning_losses
from kdforge.methods.base import Method, register_method


@register_method("mutual", workflow="mutual", teacher=False, section="mutual")
class MutualLearning(Method):
    """`student`: the peers, a list (peer 0 is the student); `teacher` must be None; `section`: the recipe's
    mutual: section (its temperature and weight; the workflow builds the peers it lists)."""

    def __init__(self, student, teacher, cfg, probe: dict | None, section):
        super().__init__()
        if teacher is not None:
            raise KDForgeError("method mutual trains peers from scratch and takes no teacher")
        all_peers = list(student) if isinstance(student, (list, tuple, nn.ModuleList)) else [student]
        if len(all_peers) < 2:
            raise KDForgeError(f"mutual.peers: mutual learning needs at least 2 peers, got {len(all_peers)}")
        self.peers = nn.ModuleList(all_peers)  # peer 0 is `student` (registered once)
        self.temperature, self.weight = section.temperature, section.weight
        if probe is not None:
            self._check_classes(probe)

    @property
    def student(self) -> nn.Module:
        return self.peers[0]

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

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = [p(batch["x"]) for p in self.peers]  # K × (B, C)
        return mutual_learning_losses(logits, batch["y"], self.temperature, self.weight)
