import numpy as np
import pytest
import torch

from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.errors import KDForgeError


def labels(ds):
    return torch.stack([ds[i][1] for i in range(len(ds))])


def test_digits_split_is_seeded_disjoint_and_omits_only_from_transfer_set():
    a = load_data(DataConfig(name="digits", omit_classes=[3]), seed=5)
    b = load_data(DataConfig(name="digits", omit_classes=[3]), seed=5)
    assert torch.equal(a.train.x, b.train.x)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert 3 not in labels(a.train) and 3 not in labels(a.val)
    assert (labels(a.test) == 3).sum() > 30
    n = len(a.train) + len(a.val) + len(a.test)
    assert n < 1797  # the omitted 3s are gone from train/val
    assert 0.0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1.0


def test_mnist5k_shapes():
    d = load_data(DataConfig(name="mnist5k"), seed=0)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.train) + len(d.val) + len(d.test) == 5000


def test_csv_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind"] + [f"{rng.normal():.3f},{rng.normal():.3f},{'cat' if i % 2 else 'dog'}" for i in range(60)]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    d = load_data(DataConfig(name="csv", path=str(tmp_path / "d.csv"), label_column="kind"), seed=0)
    assert d.class_names == ["cat", "dog"] and d.input_shape == (2,)


@pytest.mark.parametrize("content, field", [
    ("a,b\n1,2\n", "data.label_column: 'label' is not a column"),
    ("x,label\nfoo,1\nbar,0\n", "feature columns must be numeric"),
])
def test_csv_errors_name_the_field(tmp_path, content, field):
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(KDForgeError, match=field):
        load_data(DataConfig(name="csv", path=str(tmp_path / "d.csv")), seed=0)
