import pytest
import torch

from kdforge.errors import KDForgeError
from kdforge.models import MLP
from kdforge.taps import FeatureTaps


def test_taps_capture_named_outputs_and_inputs():
    m = MLP((4,), 3, hidden=[8, 6])
    x = torch.randn(5, 4)
    with FeatureTaps(m, ["layers.1", "head"]) as out_taps, FeatureTaps(m, ["head"], capture="input") as in_taps:
        y = m(x)
        assert torch.equal(out_taps["head"], y)
        assert out_taps["layers.1"].shape == (5, 6)
        assert torch.equal(in_taps["head"], out_taps["layers.1"])
    assert not m.head._forward_hooks  # removed on exit


def test_unknown_module_name_lists_closest_valid_names():
    m = MLP((4,), 3, hidden=[8, 6])
    with pytest.raises(KDForgeError) as e:
        FeatureTaps(m, ["layer.1"], role="student")
    msg = str(e.value)
    assert "student has no module named 'layer.1'" in msg and "layers.1" in msg
