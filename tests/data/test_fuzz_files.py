"""Data files, fuzzed: any CSV / JSONL / text content gives a DataBundle or a one-line KDForgeError, never a traceback."""
import json
import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdforge.config import DataConfig
from kdforge.data import DataBundle, load_data
from kdforge.errors import KDForgeError

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
cells = st.one_of(st.integers(-3, 3).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["", "nan", "inf", "-inf", "NA", "a", "b", '"x,y"', "1e400", " "]),
                  st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=6))
headers = st.lists(st.sampled_from(["a", "b", "label", "text", "question", "answer", "", "a"]), min_size=0, max_size=4)


def _check(cfg: DataConfig) -> None:
    try:
        bundle = load_data(cfg, seed=0)
    except KDForgeError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(bundle, DataBundle)
    if cfg.name == "csv":  # a bundle that loads is clean: finite features, >= 2 classes to train on
        assert np.isfinite(bundle.train.x.numpy()).all()
        assert len(set(bundle.train.y.tolist())) >= 2


@st.composite
def tables(draw, sep=","):
    header = draw(headers)
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header) + 1), max_size=40))
    return "\n".join([sep.join(header)] + [sep.join(r) for r in rows]) + draw(st.sampled_from(["", "\n"]))


@FUZZ
@given(tables())
def test_any_csv_loads_or_gives_one_line_error(tmp_path, text):
    p = tmp_path / "d.csv"
    p.write_text(text)
    _check(DataConfig(name="csv", path=str(p)))


numbers = st.floats(-1e3, 1e3).map(lambda v: f"{v:.3f}")
corruptions = st.lists(st.tuples(st.integers(0, 59), st.integers(0, 2), st.sampled_from(["nan", "inf", "", "1e400", "cat", "0.5", "7"])),
                       max_size=2)


@FUZZ
@given(st.lists(st.tuples(numbers, numbers, st.integers(0, 2).map(str)), min_size=8, max_size=60), corruptions,
       st.none() | st.integers(1, 40), st.lists(st.integers(0, 3), max_size=2))
def test_numeric_csv_with_bad_cells_and_splits(tmp_path, rows, bad, train_limit, omit):
    """Clean tables with at most two bad cells: the finite-value, label and class checks (not the parser) decide."""
    rows = [list(r) for r in rows]
    for i, col, value in bad:
        rows[i % len(rows)][col] = value
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n" + "".join(",".join(r) + "\n" for r in rows))
    _check(DataConfig(name="csv", path=str(p), train_limit=train_limit, omit_classes=omit))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_csv_or_text_file(tmp_path, data):
    for name, suffix in (("csv", ".csv"), ("text", ".csv"), ("text-lm", ".txt"), ("qa", ".jsonl")):
        p = tmp_path / f"d{suffix}"
        p.write_bytes(data)
        _check(DataConfig(name=name, path=str(p), text_column="question" if name == "qa" else "text",
                          label_column="answer" if name == "qa" else "label"))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                                     st.text(string.ascii_letters, max_size=5)),
                           lambda kids: st.one_of(st.lists(kids, max_size=2), st.dictionaries(st.sampled_from(["x", "y"]), kids, max_size=2)),
                           max_leaves=4)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["text", "label", "question", "answer", "other"]), json_values, max_size=4), max_size=30))
def test_any_jsonl_rows_for_text_and_qa(tmp_path, rows):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    _check(DataConfig(name="text", path=str(p)))  # no tokenizer: a valid file ends in the data.tokenizer error
    _check(DataConfig(name="qa", path=str(p), text_column="question", label_column="answer"))
