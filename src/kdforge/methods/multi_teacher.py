"""Multi-teacher distillation: the student learns from the combined soft targets of K teachers.

p = Σ_k w_k · softmax(z_k / T) with w_k equal (mean), fixed (recipe weights) or
per sample by each teacher's confidence (see `kdforge.losses.multi.ensemble_soft_targets`);
then the kd term is α · T²·KL(p ‖ p_s) + (1 − α) · CE(z_s, y), as for one teacher
(Hinton et al. 2015 distil an ensemble this way; You et al. 2017 weight teachers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.losses.kinds import CLASS_LOGITS
from kdforge.losses.multi import ensemble_soft_targets, kl_to_targets
from kdforge.methods.base import Method, register_method
from kdforge.methods.terms import mix, refuse_kinds, weighted
from kdforge.teacher import Teacher


@register_method("multi_teacher", workflow="multi_teacher", section="ensemble", reads=frozenset({"distill.losses"}))
class MultiTeacherKD(Method):
    """`teacher`: a list of modules (or one). `section`: the recipe's ensemble: section, whose `weighting`
    (mean | fixed | confidence) and `weights` (K floats for fixed) combine the teachers."""

    def __init__(self, student: nn.Module, teacher, cfg, probe: dict[str, Tensor], section):
        super().__init__()
        weighting, weights = section.weighting, section.weights
        models = list(teacher) if isinstance(teacher, (list, tuple, nn.ModuleList)) else [teacher]
        if not models:
            raise KDForgeError("ensemble.teachers: multi-teacher distillation needs at least one teacher")
        self.teachers = [t if isinstance(t, Teacher) else Teacher(t) for t in models]
        refuse_kinds(cfg.losses, CLASS_LOGITS, self, takes=("kd", "ce"))  # the combined targets are a distribution, not logits
        if weighting == "fixed":
            if weights is None or len(weights) != len(models):
                raise KDForgeError(f"ensemble.weights: weighting 'fixed' needs {len(models)} weights, got {weights}")
            self.weights: Tensor | str | None = torch.tensor(weights, dtype=torch.float32)
        else:
            self.weights = "confidence" if weighting == "confidence" else None
        self.cfg, self.student = cfg, student
        was = student.training
        student.eval()
        with torch.no_grad():
            s_classes = student(probe["x"]).shape[-1]
        student.train(was)
        for k, t in enumerate(self.teachers):
            c = t.probe(probe["x"])[0].shape[-1]  # not counted as a training call
            if c != s_classes:
                raise KDForgeError(f"ensemble.teachers.{k}: teacher predicts {c} classes but the student predicts {s_classes}")

    def frozen(self) -> list[Teacher]:
        return list(self.teachers)

    def soft_targets(self, t_logits: Tensor, temperature: float) -> Tensor:
        """(K, B, C) teacher logits -> (B, C) combined distribution at `temperature`."""
        w = self.weights.to(t_logits.device) if isinstance(self.weights, Tensor) else self.weights
        return ensemble_soft_targets(t_logits, temperature, w)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        t_logits = torch.stack([t(x)[0] for t in self.teachers])  # (K, B, C), frozen, no graph
        s_logits = self.student(x)  # (B, C)
        out = {}
        for term in self.cfg.losses:
            if term.kind == "ce":
                out["ce"] = weighted(term.weight, F.cross_entropy(s_logits, y))
                continue
            kd = kl_to_targets(s_logits, self.soft_targets(t_logits, term.temperature), term.temperature)
            out["kd"] = weighted(term.weight, mix(kd, F.cross_entropy(s_logits, y), term.alpha))
        return out
