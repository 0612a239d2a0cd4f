"""NextTokenCE (teacher correction, cross-entropy-only recovery): the chunked vocabulary projection
gives the plain loss and gradient, and only scored, real tokens count."""
import torch
import torch.nn.functional as F

from kdforge.methods.supervised import NextTokenCE
from kdforge.models.hf import load_hf
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


def test_chunked_equals_plain_and_only_scored_real_tokens_count(tiny_llama_dir):  # noqa: F811
    lm = load_hf(str(tiny_llama_dir), "causal_lm")
    ids = torch.randint(1, 100, (3, 20), generator=torch.Generator().manual_seed(0))
    loss_mask = torch.zeros_like(ids)
    loss_mask[:, 8:] = 1  # the answer
    attention = torch.ones_like(ids)
    attention[0, 15:] = 0  # row 0 is padded from position 15
    batch = {"input_ids": ids, "loss_mask": loss_mask, "attention_mask": attention}
    chunked, plain = NextTokenCE(lm, chunk_size=4)(batch)["ce"], NextTokenCE(lm, chunk_size=None)(batch)["ce"]
    g_chunked = torch.autograd.grad(chunked, lm.hf.lm_head.weight)[0]
    g_plain = torch.autograd.grad(plain, lm.hf.lm_head.weight)[0]
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_chunked, g_plain, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        ce = F.cross_entropy(lm(ids)[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    m = (loss_mask * attention)[:, 1:].float()
    torch.testing.assert_close(plain.detach(), (ce * m).sum() / m.sum(), atol=1e-5, rtol=0)
