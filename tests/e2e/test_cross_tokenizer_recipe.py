"""A cross-tokenizer token_kd recipe end to end on tiny local models whose tokenizers differ."""
import json
import math

import pytest

from kdforge.errors import KDForgeError
from kdforge.recipe_file import parse_recipe
from kdforge.teacher import TOKEN_LOGP
from kdforge.workflows import run_recipe
from kdforge.workflows.teacher_store import cache_teacher_for
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture: a character-level tokenizer)
from tests.losses.test_cross_tokenizer import bpe_tokenizer

TEXT = "to be or not to be, that is the question: whether tis nobler in the mind to suffer. " * 30


@pytest.fixture(scope="module")
def bpe_llama_dir(tmp_path_factory):
    """A tiny Llama whose tokenizer is a byte-level BPE (the student's; the teacher's is character-level)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("bpe_llama")
    tok = bpe_tokenizer(300)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _raw(tmp_path, student, teacher, cross="gold", **extra):
    (tmp_path / "t.txt").write_text(TEXT)
    raw = {"seed": 0, "run_dir": str(tmp_path / "run"), "method": "token_kd",
           "data": {"name": "text-lm", "path": str(tmp_path / "t.txt"), "max_length": 16, "val_fraction": 0.1, "test_fraction": 0.1},
           "teacher": {"name": "hf", "hf": str(teacher), "task": "causal_lm"},
           "student": {"name": "hf", "hf": str(student), "task": "causal_lm"},
           "distill": {"epochs": 1, "batch_size": 8, "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}],
                       "lm": {"cross_tokenizer": cross, "chunk_size": 8}}}
    raw.update(extra)
    return raw


@pytest.mark.parametrize("cross", ["gold", "uld"])
def test_cross_tokenizer_recipe_trains_and_reports_bits_per_byte(tmp_path, bpe_llama_dir, tiny_llama_dir, cross):  # noqa: F811
    run_recipe(parse_recipe(_raw(tmp_path, bpe_llama_dir, tiny_llama_dir, cross)), quiet=True)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    for role in ("teacher", "student"):  # perplexities under different tokenizers do not compare; bits per byte do
        assert math.isfinite(metrics[role]["bpb"]) and metrics[role]["bpb"] > 0
    # the character-level teacher: one token per byte of this ASCII text, so bits per byte = bits per token
    assert metrics["teacher"]["bpb"] == pytest.approx(metrics["teacher"]["loss"] / math.log(2))
    assert (tmp_path / "run/report.md").exists()


def test_a_run_from_the_cache_teacher_store_equals_the_live_teacher_run(tmp_path, bpe_llama_dir, tiny_llama_dir):  # noqa: F811
    runs = {}
    for name in ("live", "stored"):
        (tmp_path / name).mkdir()
        extra = {"store": {"path": str(tmp_path / "store"), "k": "all", "dtype": "float32"}} if name == "stored" else {}
        raw = _raw(tmp_path / name, bpe_llama_dir, tiny_llama_dir, **extra)
        raw["data"]["train_limit"] = 24  # 3 batches: the property, not the training, is under test
        runs[name] = parse_recipe(raw)
    info = cache_teacher_for(runs["stored"])  # `kdforge cache-teacher` accepts the pair: the store holds the teacher's tokens
    meta = json.loads((tmp_path / "store/meta.json").read_text())
    assert TOKEN_LOGP in meta["features"] and meta["vocab"] == info["vocab"]
    written = (tmp_path / "store/meta.json").stat().st_mtime_ns
    metrics = {}
    for name, recipe in runs.items():
        run_recipe(recipe, quiet=True)
        metrics[name] = json.loads((tmp_path / name / "run/metrics.json").read_text())
    assert (tmp_path / "store/meta.json").stat().st_mtime_ns == written  # the run read the store cache-teacher wrote
    assert metrics["stored"]["teacher_calls"] > 0  # store reads: the stored run went through the store
    for key in ("loss", "bpb"):
        assert metrics["stored"]["student"][key] == pytest.approx(metrics["live"]["student"][key], rel=1e-4)


def test_different_tokenizers_without_cross_tokenizer_still_say_how_they_differ(tmp_path, bpe_llama_dir, tiny_llama_dir):  # noqa: F811
    raw = _raw(tmp_path, bpe_llama_dir, tiny_llama_dir)
    raw["distill"]["lm"].pop("cross_tokenizer")
    raw["data"]["tokenizer"] = str(bpe_llama_dir)
    with pytest.raises(KDForgeError, match="tokenizer mismatch"):
        run_recipe(parse_recipe(raw), quiet=True)
