import copy

import pytest

from tests.hf_tiny import tiny_bert_classifier
import torch
from torch import nn

from kdforge.compress import Structured, Unstructured, prune_, sparsity
from kdforge.errors import KDForgeError
from kdforge.models.small import count_parameters
from tests.compress.trained import accuracy


def test_structured_really_shrinks_mlp_and_still_works(digits, digits_mlp):
    p = prune_(copy.deepcopy(digits_mlp), Structured(0.5), example_inputs=digits.test.x[:2])
    assert p.layers[0][0].out_features == 64 and p.layers[1][0].out_features == 32
    assert p.head.out_features == 10  # the class count is never pruned
    assert count_parameters(p) < 0.55 * count_parameters(digits_mlp)
    out = p(digits.test.x)
    assert out.shape == (len(digits.test), 10) and torch.isfinite(out).all()
    assert accuracy(p, digits) > 0.3  # damaged but alive before recovery


def test_structured_cnn_prunes_channels_and_batchnorm(digits, digits_cnn):
    p = prune_(copy.deepcopy(digits_cnn), Structured(0.5), example_inputs=digits.test.x[:2])
    convs = [m for m in p.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in p.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [8, 16] and [b.num_features for b in bns] == [8, 16]
    assert p(digits.test.x[:4]).shape == (4, 10)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_zeroes_the_smallest_weights(digits_mlp, scope):
    p = prune_(copy.deepcopy(digits_mlp), Unstructured(0.6, scope=scope))
    assert sparsity(p) == pytest.approx(0.6, abs=0.01)
    assert count_parameters(p) == count_parameters(digits_mlp)  # same shapes: no speedup expected
    assert not any(hasattr(m, "weight_mask") for m in p.modules())  # mask baked in, no hooks left
    if scope == "layer":
        for m in p.modules():
            if isinstance(m, nn.Linear):
                assert (m.weight == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize("amount", [0, 1, 1.5, -0.1])
def test_amount_outside_open_interval_is_an_error(amount):
    with pytest.raises(KDForgeError, match="strictly between 0 and 1"):
        Structured(amount)
    with pytest.raises(KDForgeError, match="strictly between 0 and 1"):
        Unstructured(amount)


def test_structured_needs_example_inputs(digits_mlp):
    with pytest.raises(KDForgeError, match="example_inputs"):
        prune_(copy.deepcopy(digits_mlp), Structured(0.5))


def test_structured_heads_on_a_tiny_bert_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    from kdforge.compress import Export, export

    model = tiny_bert_classifier(num_hidden_layers=2)
    ids = torch.randint(0, 50, (2, 7))
    before = count_parameters(model)
    prune_(model, Structured(0.5, heads=True), example_inputs=ids)
    attn = model.bert.encoder.layer[0].attention.self
    assert attn.num_attention_heads == 2 and model.config.num_attention_heads == 2
    assert count_parameters(model) < 0.6 * before
    out = model(ids).logits
    assert out.shape == (2, 3)
    man = export(model, tmp_path / "o", Export(["hf"]))
    again = transformers.BertForSequenceClassification.from_pretrained(man["files"]["hf"]).eval()
    torch.testing.assert_close(again(ids).logits, out)


def test_heads_on_a_model_without_attention_is_an_error(digits, digits_mlp):
    with pytest.raises(KDForgeError, match="no attention"):
        prune_(copy.deepcopy(digits_mlp), Structured(0.5, heads=True), example_inputs=digits.test.x[:2])
