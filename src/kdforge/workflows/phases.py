"""TinyBERT's two-phase schedule (Jiao et al. 2020): the intermediate layers are distilled first
(feature terms only), then the predictions (the other terms). `distill.intermediate_epochs`."""
from __future__ import annotations

from kdforge.errors import KDForgeError
from kdforge.losses.kinds import FEATURES, KINDS


def split_phases(cfg):
    """distill config -> (intermediate-phase config or None, prediction-phase config)."""
    if not cfg.intermediate_epochs:
        return None, cfg
    inter = [t for t in cfg.losses if KINDS.get(t.kind).works_on(FEATURES)]  # the registry says which kinds take features
    pred = [t for t in cfg.losses if not KINDS.get(t.kind).works_on(FEATURES)]
    if not inter or not pred:
        raise KDForgeError("distill.intermediate_epochs: the two-phase schedule needs feature terms (layerwise, hint, "
                           f"attention...) and prediction terms (kd, ce...); distill.losses has only {'prediction' if pred else 'feature'} terms")
    first = cfg.model_copy(update={"losses": inter, "epochs": cfg.intermediate_epochs, "intermediate_epochs": 0})
    return first, cfg.model_copy(update={"losses": pred, "intermediate_epochs": 0})


__all__ = ["split_phases"]
