import copy
import warnings

import pytest
import torch
from torch import nn

from kdforge.compress import Bf16, Fp16, Int8Dynamic, quantize_
from kdforge.errors import KDForgeError
from tests.compress.trained import accuracy


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return (10 * torch.log10(ref.pow(2).mean() / (ref - got).pow(2).mean())).item()


def test_int8_dynamic_quality_floor_and_size(digits, digits_mlp):
    q = quantize_(copy.deepcopy(digits_mlp), Int8Dynamic())
    x = digits.test.x
    with torch.no_grad():
        ref, got = digits_mlp(x), q(x)
    assert sqnr_db(ref, got) > 25  # the same floor torchao's tests use for int8
    assert accuracy(q, digits) >= accuracy(digits_mlp, digits) - 0.01
    assert not any(isinstance(m, nn.Linear) and type(m) is nn.Linear for m in q.modules())


def test_int8_dynamic_warns_nothing(digits_mlp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_(copy.deepcopy(digits_mlp), Int8Dynamic())
    assert not [w for w in caught if "deprecat" in str(w.message).lower()]


def test_filter_fn_limits_layers(digits_mlp):
    q = quantize_(copy.deepcopy(digits_mlp), Int8Dynamic(), filter_fn=lambda m, name: name == "head")
    assert type(q.head).__name__ == "Linear" and type(q.head).__module__.startswith("torch.ao")
    assert type(q.layers[0][0]) is nn.Linear


def test_lstm_is_quantized():
    m = nn.Sequential(nn.LSTM(8, 16, batch_first=True))
    quantize_(m, Int8Dynamic())
    assert type(m[0]).__module__.startswith("torch.ao.nn.quantized")


@pytest.mark.parametrize("cfg,dtype", [(Fp16(), torch.float16), (Bf16(), torch.bfloat16)])
def test_half_casts_halve_the_weights(digits, digits_mlp, cfg, dtype):
    h = quantize_(copy.deepcopy(digits_mlp), cfg)
    assert all(p.dtype == dtype for p in h.parameters())
    with torch.no_grad():
        agree = (h(digits.test.x.to(dtype)).argmax(-1) == digits_mlp(digits.test.x).argmax(-1)).float().mean()
    assert agree > 0.97


def test_no_supported_layer_is_an_error_not_a_noop():
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(KDForgeError, match="no Linear/LSTM/GRU layer"):
        quantize_(conv_only, Int8Dynamic())


def test_unknown_config_lists_valid_ones(digits_mlp):
    with pytest.raises(KDForgeError, match="valid configs: .*Int8Dynamic"):
        quantize_(digits_mlp, object())
