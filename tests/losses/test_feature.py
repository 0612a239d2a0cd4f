import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import Projection, attention_map, attention_transfer, hint_loss


def test_hint_is_mean_squared_error():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert hint_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    assert hint_loss(a, a).item() == 0.0


def test_hint_refuses_mismatched_widths():
    with pytest.raises(ValueError, match="Projection"):
        hint_loss(torch.randn(4, 8), torch.randn(4, 16))


def test_projection_linear_and_conv_shapes():
    p = Projection((4, 8), (4, 32))
    assert isinstance(p.proj, torch.nn.Linear) and p(torch.randn(4, 8)).shape == (4, 32)
    seq = Projection((2, 5, 8), (2, 5, 32))
    assert seq(torch.randn(2, 5, 8)).shape == (2, 5, 32)
    c = Projection((2, 4, 8, 8), (2, 16, 4, 4))
    assert isinstance(c.proj, torch.nn.Conv2d) and c.proj.kernel_size == (1, 1)
    assert c(torch.randn(2, 4, 8, 8)).shape == (2, 16, 4, 4)


def test_attention_transfer_ignores_channel_count_and_is_zero_on_same_map():
    h = torch.randn(3, 8, 5, 5)
    # the same spatial energy with twice the channels (duplicated) has the same attention map
    assert attention_transfer(h, torch.cat([h, h], 1)).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_transfer(h, torch.randn(3, 4, 5, 5)).item() > 0


def test_attention_map_formula():
    h = torch.randn(2, 3, 4, 4)
    expected = F.normalize(h.pow(2).mean(1).flatten(1), dim=1)
    assert torch.allclose(attention_map(h), expected)
