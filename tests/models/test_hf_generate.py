"""HFCausalLM.generate runs transformers' generate (KV cache, GenerationConfig); its greedy output
equals the decoder kdforge used to hand-write, and an EOS ends a row the same way."""
import pytest
import torch

from kdforge.methods.sequence import sample
from kdforge.models.hf import load_hf
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


@torch.no_grad()
def previous_greedy(lm, ids, max_new_tokens, eos_id=None):
    """kdforge's hand-written KV-cache decoder before it used transformers (greedy branch), kept as the reference."""
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    out = lm.hf(input_ids=ids.long(), use_cache=True)
    for step in range(max_new_tokens):
        nxt = out.logits[:, -1].float().argmax(-1)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, lm.pad_id), nxt)
            done |= nxt == eos_id
        ids = torch.cat([ids, nxt[:, None]], 1)
        if step + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
            break
        cache = {"cache": out["cache"]} if "cache" in out else {"past_key_values": out.past_key_values}  # transformers 5.2x renamed it
        out = lm.hf(input_ids=nxt[:, None], use_cache=True, **cache)
    return ids


@pytest.fixture(scope="module")
def lm(tiny_llama_dir):  # noqa: F811
    torch.manual_seed(0)
    return load_hf(str(tiny_llama_dir), "causal_lm").eval()


def test_library_greedy_equals_previous_decoder(lm):
    prompts = torch.randint(5, 100, (4, 6), generator=torch.Generator().manual_seed(1))
    got = lm.generate(prompts, 12, do_sample=False)
    assert got.shape == (4, 18) and torch.equal(got[:, :6], prompts)
    assert torch.equal(got, previous_greedy(lm, prompts, 12))
    # and the plain re-run-the-prefix loop (no cache) agrees too
    assert torch.equal(sample(lambda x: lm(x), prompts, 12, greedy=True), got)


def test_eos_ends_rows_like_previous_decoder(lm):
    prompts = torch.randint(5, 100, (6, 5), generator=torch.Generator().manual_seed(2))
    free = previous_greedy(lm, prompts, 10)
    eos = int(free[0, 7])  # a token row 0 emits: with it as EOS, row 0 stops early
    want = previous_greedy(lm, prompts, 10, eos_id=eos)
    got = lm.generate(prompts, 10, do_sample=False, eos_id=eos)
    assert torch.equal(got, want)
    assert (got[0, 8:] == lm.pad_id).all() if got.shape[1] > 8 else True
    # without eos_id the same token does not stop anything (the model's own EOS is ignored too)
    assert torch.equal(lm.generate(prompts, 10, do_sample=False), free)


def test_sampling_is_seeded_and_honours_top_k(lm):
    prompts = torch.randint(5, 100, (8, 4), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    a = lm.generate(prompts, 8, do_sample=True, temperature=1.0)
    torch.manual_seed(5)
    b = lm.generate(prompts, 8, do_sample=True, temperature=1.0)
    assert torch.equal(a, b) and a.shape == (8, 12)
    greedy = lm.generate(prompts, 8, do_sample=False)
    assert torch.equal(lm.generate(prompts, 8, do_sample=True, top_k=1), greedy)  # top-k = 1 sampling is argmax
    assert not torch.equal(a, greedy)
    assert lm.training is False
