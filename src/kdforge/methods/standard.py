"""Teacher -> student distillation with any mix of response, feature and relation terms."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kdforge.data.base import UNLABELLED
from kdforge.errors import KDForgeError
from kdforge.losses.kinds import CLASS_LOGITS, FEATURES, KINDS
from kdforge.methods.base import Method, register_method
from kdforge.methods.terms import (TERMS, StepContext, expand_layer_maps, make_projections, refuse_kinds, term_loss,
                                   term_names, weighted)
from kdforge.taps import FeatureTaps
from kdforge.teacher import Teacher


# What the standard method and its workflow act on (MethodSpec.reads); born_again's generations read fewer.
STANDARD_READS = frozenset({"distill.losses", "distill.layer_map", "distill.filter", "distill.intermediate_epochs",
                            "distill.bias_calibration", "distill.auto", "store", "compress", "search", "student.trim_vocab"})


@register_method("standard", workflow="classify", reads=STANDARD_READS)
class StandardKD(Method):
    """Freezes the teacher, taps the layers the terms name, and returns one loss per term.

    `probe` is one batch, run once at construction to learn feature shapes (for
    projections) and to check that teacher and student predict the same classes.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Teacher, cfg, probe: dict[str, Tensor]):
        super().__init__()
        self.cfg = cfg
        self.terms = expand_layer_maps(list(cfg.losses), student, teacher)  # layerwise -> a hint / attention_kl per mapped layer
        refuse_kinds(self.terms, (CLASS_LOGITS, FEATURES), self, takes=tuple(
            k for k in KINDS.names(CLASS_LOGITS) + KINDS.names(FEATURES) if KINDS.get(k).pair or k in TERMS))
        self.names = term_names(self.terms)
        feats = [t for t in self.terms if KINDS.get(t.kind).works_on(FEATURES)]
        s_layers = {t.student_layer for t in feats}  # names come from the terms; nobody lists them twice
        t_layers = {t.teacher_layer for t in feats}
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher, t_layers)
        self.student = student
        self.s_taps = FeatureTaps(student, s_layers, role="student")

        was_training = student.training
        student.eval()  # the probe must not move BatchNorm statistics
        with torch.no_grad():
            s_logits = student(probe["x"])
            s_feats = dict(self.s_taps.outputs)
        student.train(was_training)
        t_logits, t_feats = self.teacher.probe(probe["x"], idx=probe.get("idx"))
        if s_logits.shape[-1] != t_logits.shape[-1]:
            raise KDForgeError(
                f"teacher predicts {t_logits.shape[-1]} classes but student predicts {s_logits.shape[-1]}; "
                "they must match (set student num_classes to the teacher's)"
            )
        if getattr(self.teacher, "sparse", False) and any(getattr(t, "standardize", False) for t in self.terms):
            raise KDForgeError(f"store.k: kd with standardize: true z-scores the teacher's logits over every class, but the store "
                               f"keeps {self.teacher.store.k} of {self.teacher.vocab_size}; set store.k: all")
        # kd reads a sparse store's ids + values, unless sampled weights (unbiased at the store's own temperature only)
        # meet another kd temperature: then it takes the scattered logits, re-tempered
        self.sparse_kd = getattr(self.teacher, "sparse", False) and not (getattr(self.teacher, "sampled", False) and any(
            t.kind == "kd" and t.temperature != self.teacher.temperature for t in self.terms))
        self.projections = make_projections(self.terms, s_feats, t_feats)

    def sample_weight(self, t_logits: Tensor, labels: Tensor) -> Tensor | None:
        """(B,) weights for the soft-target terms from the recipe's confidence filter."""
        f = self.cfg.filter
        if f.mode == "none":
            return None
        probs = t_logits.float().softmax(-1)  # (B, C)
        keep = probs.max(-1).values >= f.min_confidence
        unlabelled = labels == UNLABELLED  # nothing to be wrong about: judged on confidence only
        if f.drop_wrong:
            keep &= (probs.argmax(-1) == labels) | unlabelled
        self.counters["filtered"] += (~keep).sum()  # a device tensor: no host sync per batch
        self.counters["seen"] += len(keep)
        if f.mode == "drop":
            return keep.float()
        p_label = probs.gather(1, torch.where(unlabelled, probs.argmax(-1), labels)[:, None])[:, 0]
        return torch.where(keep, torch.ones_like(keep, dtype=probs.dtype), p_label)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        t_target = None
        if self.sparse_kd:  # kd reads the store's ids + values; other terms and the filter take the scattered logits
            t_logits, t_target, t_feats = self.teacher.read(batch.get("idx"))
        else:
            t_logits, t_feats = self.teacher(x, idx=batch.get("idx"))  # (B, C), frozen, no graph; idx for a cached teacher
        s_logits = self.student(x)  # (B, C)
        ctx = StepContext(
            s_logits=s_logits,
            t_logits=t_logits,
            labels=y,
            s_feats=self.s_taps.outputs,
            t_feats=t_feats,
            projections=self.projections,
            sample_weight=self.sample_weight(t_logits, y),
            n_labelled=batch.get("n_labelled"),
            t_target=t_target,
        )
        return {name: weighted(term.weight, term_loss(term, ctx)) for name, term in zip(self.names, self.terms)}
