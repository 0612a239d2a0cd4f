"""Each compression verb has its own handler table keyed by config type: a config one verb
handles is refused by the others, naming the configs that verb does take."""
import copy

import pytest

from kdforge.compress import (EXPORT, LOWRANK, PRUNE, QUANTIZE, Export, Int8Dynamic, LowRank, Structured, Verb, lowrank_,
                              prune_, quantize_)
from kdforge.errors import KDForgeError


def test_a_config_runs_only_through_its_own_verb(digits_mlp):
    with pytest.raises(KDForgeError, match=r"quantize_: no handler for config Structured; valid configs: Bf16, Fp16, Int8Dynamic$"):
        quantize_(copy.deepcopy(digits_mlp), Structured(0.5))
    with pytest.raises(KDForgeError, match=r"prune_: no handler for config Int8Dynamic; valid configs: Structured, Unstructured$"):
        prune_(copy.deepcopy(digits_mlp), Int8Dynamic())
    with pytest.raises(KDForgeError, match=r"lowrank_: no handler for config Export; valid configs: LowRank$"):
        lowrank_(copy.deepcopy(digits_mlp), Export())
    assert {t.__name__ for v in (QUANTIZE, PRUNE, LOWRANK, EXPORT) for t in v._handlers} == \
        {"Int8Dynamic", "Fp16", "Bf16", "Structured", "Unstructured", "LowRank", "Export"}
    assert sum(len(v._handlers) for v in (QUANTIZE, PRUNE, LOWRANK, EXPORT)) == 7  # no config in two tables


def test_verb_passes_only_the_inputs_it_takes_and_refuses_others(digits_mlp):
    seen = {}
    verb = Verb("probe_", takes=("filter_fn", "example_inputs"))

    @verb.register(LowRank)
    def _probe(model, config, filter_fn, example_inputs):
        seen.update(filter_fn=filter_fn, example_inputs=example_inputs)
        return model

    assert verb(digits_mlp, LowRank(rank=1), **verb.pick(example_inputs=3, calibration=[1])) is digits_mlp
    assert seen == {"filter_fn": None, "example_inputs": 3}
    with pytest.raises(KDForgeError, match=r"probe_: unexpected inputs \['calibration'\]"):
        verb(digits_mlp, LowRank(rank=1), calibration=[1])
    with pytest.raises(KDForgeError, match="probe_: expected a torch nn.Module, got str"):
        verb("not a model", LowRank(rank=1))
    with pytest.raises(ValueError, match="LowRank is registered twice"):
        verb.register(LowRank)(_probe)
