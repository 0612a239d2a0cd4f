"""Vocabulary trimming: the trimmed student answers exactly like the untrimmed one on in-vocabulary
text — in PyTorch, after a save_pretrained / load_hf round trip, and as an ONNX graph fed the
ORIGINAL tokenizer's ids — and an out-of-vocabulary token reads the [UNK] row."""
import copy

import onnxruntime as ort
import pytest
import torch

from kdforge.compress import Export, export
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_hf
from kdforge.models.small import count_parameters
from kdforge.models.vocab import RemappedEmbedding, kept_ids, token_counts, trim_vocab_
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)

UNK, SPECIAL = 1, [0, 1, 2, 3, 4]


def _corpus() -> torch.Tensor:
    """(6, 10) ids using only tokens 5..19 (padded with 0)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 20, (6, 10), generator=g)
    ids[:, 0], ids[3:, 7:] = 2, 0
    return ids


@pytest.fixture()
def pair(tiny_bert_dir):  # noqa: F811
    torch.manual_seed(0)
    model = load_hf(str(tiny_bert_dir), "classify", num_labels=3).eval()
    trimmed = copy.deepcopy(model)
    stats = trim_vocab_(trimmed, _corpus(), SPECIAL, UNK)
    return model, trimmed, stats


def test_kept_ids_are_specials_and_seen_tokens():
    counts = token_counts(torch.tensor([[5, 5, 7, 0]]), 10)
    assert counts.tolist() == [1, 0, 0, 0, 0, 2, 0, 1, 0, 0]
    assert kept_ids(counts, [0, 1]).tolist() == [0, 1, 5, 7]
    assert kept_ids(counts, [0, 1], min_count=2).tolist() == [0, 1, 5]


def test_trimmed_equals_untrimmed_on_in_vocabulary_text(pair):
    model, trimmed, stats = pair
    assert stats["vocab_before"] == 100 and stats["vocab_after"] == len(SPECIAL) + 15
    assert stats["params_freed"] == (100 - 20) * 32 and stats["bytes_freed"] == 4 * stats["params_freed"]
    assert count_parameters(model) - count_parameters(trimmed) == stats["params_freed"]
    with torch.no_grad():
        torch.testing.assert_close(trimmed(_corpus()), model(_corpus()), rtol=0, atol=1e-6)


def test_out_of_vocabulary_token_reads_the_unk_row(pair):
    model, trimmed, _ = pair
    oov = torch.tensor([[2, 50, 7, 99]])  # 50 and 99 never occur in the corpus
    as_unk = torch.tensor([[2, UNK, 7, UNK]])
    with torch.no_grad():
        torch.testing.assert_close(trimmed(oov), model(as_unk), rtol=0, atol=1e-6)
        assert not torch.allclose(model(oov), model(as_unk))  # the untrimmed model does tell them apart


def test_hf_folder_round_trip_takes_original_ids(pair, tmp_path):
    _, trimmed, stats = pair
    trimmed.hf.save_pretrained(tmp_path / "hf")
    again = load_hf(str(tmp_path / "hf"), "classify", num_labels=3).eval()
    emb = again.hf.get_input_embeddings()
    assert isinstance(emb, RemappedEmbedding) and emb.weight.shape[0] == stats["vocab_after"]
    x = torch.cat([_corpus(), torch.tensor([[2, 50, 7, 99, 0, 0, 0, 0, 0, 0]])])
    with torch.no_grad():
        torch.testing.assert_close(again(x), trimmed(x), rtol=0, atol=1e-6)


def test_onnx_graph_takes_original_ids(pair, tmp_path):
    model, trimmed, _ = pair
    manifest = export(trimmed, tmp_path / "onnx", Export(["onnx"]), example_inputs=_corpus()[:2])
    sess = ort.InferenceSession(manifest["files"]["onnx"], providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"x": _corpus().numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model(_corpus()), rtol=0, atol=1e-4)
        oov = torch.tensor([[2, 50, 7, 99, 0, 0, 0, 0, 0, 0]])
        torch.testing.assert_close(torch.from_numpy(sess.run(None, {"x": oov.numpy()})[0]), trimmed(oov), rtol=0, atol=1e-4)


def test_trimming_twice_is_refused(pair):
    _, trimmed, _ = pair
    with pytest.raises(KDForgeError, match="already trimmed"):
        trim_vocab_(trimmed, _corpus(), SPECIAL, UNK)


def test_trim_student_refuses_models_without_a_vocabulary():
    from kdforge.models.vocab import trim_student

    with pytest.raises(KDForgeError, match="only Hugging Face text students"):
        trim_student(torch.nn.Linear(2, 2), 1, _corpus(), None)
