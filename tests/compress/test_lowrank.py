import copy

import pytest
import torch
from torch import nn

from kdforge.compress import LowRank, lowrank_
from kdforge.compress.lowrank import choose_rank
from kdforge.errors import KDForgeError
from kdforge.models.small import count_parameters


def test_full_energy_reproduces_a_low_rank_layer_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(48, 4) @ torch.randn(4, 64))  # rank 4
    m = nn.Sequential(lin)
    x = torch.randn(5, 64)
    ref = m(x)
    lowrank_(m, LowRank(energy=1.0))
    assert m.kdforge_lowrank == {"0": 4}
    torch.testing.assert_close(m(x), ref, atol=1e-4, rtol=1e-4)


def test_rank_shrinks_parameters(digits_mlp):
    m = lowrank_(copy.deepcopy(digits_mlp), LowRank(rank=16))
    assert count_parameters(m) < count_parameters(digits_mlp) / 2
    assert set(m.kdforge_lowrank) == {"layers.0.0", "layers.1.0"}  # head 64->10 would not get smaller at rank 16


def test_energy_picks_smallest_rank():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert choose_rank(s, LowRank(energy=9 / 14)) == 1
    assert choose_rank(s, LowRank(energy=0.9)) == 2
    assert choose_rank(s, LowRank(energy=1.0)) == 3


@pytest.mark.parametrize("kwargs", [{}, {"rank": 2, "energy": 0.5}, {"rank": 0}, {"energy": 1.5}])
def test_bad_config(kwargs):
    with pytest.raises(KDForgeError):
        LowRank(**kwargs)
