"""Data-file validation: what loads is clean, what does not is named by column and row."""
import numpy as np
import pytest

from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.errors import KDForgeError


def csv(tmp_path, text, **kw):
    (tmp_path / "d.csv").write_text(text)
    return load_data(DataConfig(name="csv", path=str(tmp_path / "d.csv"), **kw), seed=0)


def test_integer_labels_sort_numerically_and_integral_floats_are_the_same_classes(tmp_path):
    rows = "".join(f"{i},{i % 3 * 1.5},{[2, 10, 7][i % 3]}\n" for i in range(60))
    ints = csv(tmp_path, "a,b,label\n" + rows)
    floats = csv(tmp_path, "a,b,label\n" + rows.replace(",2\n", ",2.0\n").replace(",10\n", ",10.0\n").replace(",7\n", ",7.0\n"))
    assert ints.class_names == ["2", "7", "10"] == floats.class_names
    assert np.array_equal(ints.train.y.numpy(), floats.train.y.numpy())
    # class index i is the i-th name: feature b (= 1.5 * position in [2, 10, 7]) identifies the class
    names = [ints.class_names[c] for c in ints.train.y.tolist()]
    assert all([2, 10, 7][round(b / 1.5)] == int(n) for b, n in zip(ints.train.x[:, 1].tolist(), names))


def test_non_finite_values_name_every_column_and_the_first_rows(tmp_path):
    rows = ["1,2,3,0", "3,4,5,1"] * 20
    for i in (3, 9, 11, 30):
        rows[i] = "nan,2,3,0"
    rows[5] = "1,inf,3,1"
    with pytest.raises(KDForgeError) as e:
        csv(tmp_path, "a,b,c,label\n" + "\n".join(rows))
    msg = str(e.value)
    assert "column 'a' at data rows 4, 10, 12 (+1 more); column 'b' at data row 6;" in msg and "'c'" not in msg


def test_every_clean_bundle_trains_on_every_test_class(tmp_path):
    """train_limit may not silently drop a class the test set scores."""
    rows = "".join(f"{i},{i % 4}\n" for i in range(80))
    ok = csv(tmp_path, "a,label\n" + rows, train_limit=30)
    assert set(ok.train.y.tolist()) >= set(ok.test.y.tolist())
    with pytest.raises(KDForgeError, match="data.train_limit: 3 training samples"):
        csv(tmp_path, "a,label\n" + rows, train_limit=3)
    omitted = csv(tmp_path, "a,label\n" + rows, omit_classes=[1])  # stated: the test keeps class 1 on purpose
    assert 1 in omitted.test.y.tolist() and 1 not in omitted.train.y.tolist()
