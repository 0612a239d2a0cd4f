"""Minitron pruning of HF Llama models: pruning nothing is the identity, a pruned model is the original
with the dropped heads / neurons silenced, GQA groups stay whole, scores are deterministic, and the
result is a plain HF model (save/load, ONNX)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdforge.compress import Export, export
from kdforge.errors import KDForgeError
from kdforge.models.hf import wrap
from kdforge.models.prune_llm import (Importance, PruneTarget, calibration_batches, importance, non_embedding_parameters, plan,
                                      prune_llama, resolve_target)


def _model(tie=True, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=tie,
                      pad_token_id=0, rope_theta=10000.0)
    return LlamaForCausalLM(cfg).eval()


class Windows(torch.utils.data.Dataset):
    def __init__(self, n=24, length=16, seed=0):
        self.ids = torch.randint(1, 100, (n, length), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "loss_mask": torch.ones_like(self.ids[i])}


IDS = torch.randint(1, 100, (3, 16), generator=torch.Generator().manual_seed(1))


def _scores(model, seed=0, metric="perplexity"):
    return importance(model, calibration_batches(Windows(), 8, 4, seed), metric)


@pytest.mark.parametrize("tie", [True, False])
def test_pruning_nothing_returns_the_original_logits(tie):
    model = _model(tie)
    same = prune_llama(model, PruneTarget(), _scores(model))
    with torch.no_grad():
        torch.testing.assert_close(same(IDS).logits, model(IDS).logits, atol=1e-5, rtol=0)
    same_cfg, cfg = same.config.to_dict(), model.config.to_dict()
    assert {k: v for k, v in same_cfg.items() if k != "transformers_version"} == {k: v for k, v in cfg.items() if k != "transformers_version"}


def test_a_width_pruned_model_is_the_original_with_the_dropped_units_silenced():
    """Heads (inside kept KV groups) and neurons pruned: the logits equal the original's with the dropped
    heads' o_proj columns and the dropped neurons' down_proj columns zeroed, so every kept query head still
    reads its own group's key/value head and RoPE is untouched."""
    model = _model()
    imp = _scores(model)
    target = PruneTarget(num_heads=4, intermediate_size=40)  # 3 -> 2 query heads in each of the 2 KV groups
    pruned = prune_llama(model, target, imp)
    p = plan(model.config, imp, target)
    silenced = _model()
    with torch.no_grad():
        for layer, heads, neurons in zip(silenced.model.layers, p.heads, p.neurons):
            drop_h = torch.ones(6, dtype=torch.bool)
            drop_h[heads] = False
            layer.self_attn.o_proj.weight.view(48, 6, 16)[:, drop_h] = 0
            drop_n = torch.ones(64, dtype=torch.bool)
            drop_n[neurons] = False
            layer.mlp.down_proj.weight[:, drop_n] = 0
        torch.testing.assert_close(pruned(IDS).logits, silenced(IDS).logits, atol=1e-5, rtol=0)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads, pruned.config.head_dim) == (4, 2, 16)


def test_gqa_groups_stay_whole_and_heads_stay_with_their_group():
    model = _model()
    imp = _scores(model)
    p = plan(model.config, imp, PruneTarget(num_kv_groups=1))
    for heads, groups in zip(p.heads, p.groups):
        assert len(groups) == 1 and (heads // 3 == groups[0]).all() and len(heads) == 3  # all 3 query heads of the kept group
    for layer, groups in enumerate(p.groups):
        assert int(groups[0]) == int(imp.heads[int(p.layers[layer])].view(2, 3).sum(1).argmax())  # the stronger group
    pruned = prune_llama(model, PruneTarget(num_kv_groups=1), imp)
    old, new = model.model.layers[0].self_attn, pruned.model.layers[0].self_attn
    g = int(p.groups[0][0])
    assert torch.equal(new.k_proj.weight, old.k_proj.weight[g * 16 : (g + 1) * 16])  # the group's own key head
    assert torch.equal(new.q_proj.weight, old.q_proj.weight[g * 48 : (g + 1) * 48])  # and its query heads
    with pytest.raises(KDForgeError, match="num_heads: 3 query heads cannot be spread evenly over 2 KV groups"):
        resolve_target(model.config, PruneTarget(num_heads=3))
    with pytest.raises(KDForgeError, match="student.prune.hidden_size: 64 is not between 1 and the model's 48"):
        resolve_target(model.config, PruneTarget(hidden_size=64))


@pytest.mark.parametrize("metric", ["perplexity", "block_importance"])
def test_importance_is_deterministic_for_a_seed(metric):
    model = _model()
    a, b, c = _scores(model, 0, metric), _scores(model, 0, metric), _scores(model, 1, metric)
    for field in ("hidden", "heads", "neurons", "layers"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.neurons, c.neurons)  # another seed draws other calibration samples
    assert a.heads.shape == (3, 6) and a.neurons.shape == (3, 64) and a.hidden.shape == (48,) and a.layers.shape == (3,)


def _calibration_loss(model, batches):
    total = count = 0.0
    with torch.no_grad():
        for b in batches:
            logits = model(b["input_ids"]).logits[:, :-1]
            total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["input_ids"][:, 1:], reduction="sum"))
            count += b["input_ids"][:, 1:].numel()
    return total / count


def test_a_layer_score_is_the_calibration_loss_increase_without_it():
    model = _model()
    with torch.no_grad():  # layer 1 made the identity: removing it costs nothing
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    batches = calibration_batches(Windows(), 8, 4, 0)
    imp = importance(model, batches)
    assert abs(float(imp.layers[1])) < 1e-6
    base = _calibration_loss(model, batches)
    for i in range(3):
        drop_i = Importance(imp.hidden, imp.heads, imp.neurons, torch.tensor([float(j != i) for j in range(3)]))
        without = prune_llama(model, PruneTarget(num_layers=2), drop_i)
        assert abs(_calibration_loss(without, batches) - base - float(imp.layers[i])) < 1e-5


def test_pruned_model_round_trips_save_pretrained_and_exports_to_onnx(tmp_path):
    model = _model()
    target = PruneTarget(hidden_size=32, intermediate_size=32, num_heads=2, num_kv_groups=1, num_layers=2)
    pruned = prune_llama(model, target, _scores(model))
    assert non_embedding_parameters(pruned) < non_embedding_parameters(model) / 3
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # still tied
    pruned.save_pretrained(tmp_path / "hf")
    again = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits, pruned(IDS).logits, atol=1e-6, rtol=0)
    manifest = export(wrap(pruned, "causal_lm"), tmp_path / "out", Export(["onnx"]), example_inputs=IDS[:2])
    assert manifest["onnx_max_abs_diff"] < 1e-4
