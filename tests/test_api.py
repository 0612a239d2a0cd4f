"""kdforge.distill builds any registered method that fits the API and refuses the others in one line."""
import pytest
import torch
from torch.utils.data import TensorDataset

import kdforge
from kdforge.errors import KDForgeError
from kdforge.models import MLP
from kdforge.registry import METHODS

NOT_FIT = [k for k in METHODS.keys() if not METHODS.get(k).fits_api]


def test_the_api_fits_the_classification_methods_only():
    assert {k for k in METHODS.keys() if METHODS.get(k).fits_api} == {"standard", "supervised"}
    assert {"born_again", "mutual", "multi_teacher", "data_free", "embedding", "token_kd", "reasoning"} <= set(NOT_FIT)


@pytest.mark.parametrize("key", NOT_FIT)
def test_a_method_that_does_not_fit_the_api_is_refused_in_one_line_before_anything_runs(key, tmp_path):
    data = TensorDataset(torch.randn(16, 6), torch.randint(0, 3, (16,)))
    with pytest.raises(KDForgeError) as e:
        kdforge.distill(MLP((6,), 3), MLP((6,), 3), data, data, {"epochs": 1}, method=key, run_dir=tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and f"method: {key!r}" in msg and "kdforge run" in msg and "standard" in msg
    assert not (tmp_path / "run").exists()


def test_an_unknown_method_lists_the_valid_ones():
    data = TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,)))
    with pytest.raises(KDForgeError, match="unknown method 'mutal'.*mutual"):
        kdforge.distill(MLP((6,), 3), MLP((6,), 3), data, data, method="mutal")
