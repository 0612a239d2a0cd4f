"""distill.intermediate_epochs: TinyBERT's two phases split the loss terms by kind."""
import pytest

from kdforge.config import DistillConfig
from kdforge.errors import KDForgeError
from kdforge.workflows.phases import split_phases


def test_feature_terms_first_then_prediction_terms():
    cfg = DistillConfig.model_validate({"epochs": 5, "intermediate_epochs": 2, "losses": [
        {"kind": "layerwise"}, {"kind": "kd"}, {"kind": "hint", "student_layer": "a", "teacher_layer": "b"}, {"kind": "ce"}]})
    first, second = split_phases(cfg)
    assert [t.kind for t in first.losses] == ["layerwise", "hint"] and first.epochs == 2
    assert [t.kind for t in second.losses] == ["kd", "ce"] and second.epochs == 5
    assert first.intermediate_epochs == second.intermediate_epochs == 0


def test_no_intermediate_phase_keeps_the_config():
    cfg = DistillConfig.model_validate({"losses": [{"kind": "layerwise"}, {"kind": "kd"}]})
    assert split_phases(cfg) == (None, cfg)


def test_two_phases_need_both_kinds_of_terms():
    cfg = DistillConfig.model_validate({"intermediate_epochs": 1, "losses": [{"kind": "kd"}]})
    with pytest.raises(KDForgeError, match="distill.intermediate_epochs: .* has only prediction terms"):
        split_phases(cfg)
