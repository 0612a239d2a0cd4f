"""Cross-check against TRL's GOLD trainer (`trl.experimental.gold.ULDLoss`) on the same tensors,
where TRL installs (`pip install trl`; skipped otherwise): ULD on aligned spans and GOLD's hybrid,
both with TRL's chain-rule ("bayesian") span merge, agree within 1e-5. TRL clamps probabilities
at 1e-8 before taking logs, kdforge works in log space without a clamp: the logits here favour
the actual next token, as a trained LM's do, so no merged span probability comes near the clamp."""
import types

import pytest
import torch

from kdforge.data.offsets import encode_with_offsets
from kdforge.losses.cross_chunked import cross_token_kd
from kdforge.losses.cross_tokenizer import align_spans, shared_vocab
from tests.losses.test_cross_tokenizer import bpe_tokenizer

gold = pytest.importorskip("trl.experimental.gold.gold_trainer", reason="TRL is not installed")

TEXT = "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. 12345 and 2026 double  spaces."


class Vocab:  # what ULDLoss reads of a tokenizer
    def __init__(self, tok):
        self.tok = tok

    def get_vocab(self):
        return self.tok.get_vocab()


def trl_loss(tokenizers, logits, ids, offsets, hybrid: bool, temperature: float) -> torch.Tensor:
    cfg = types.SimpleNamespace(uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=temperature,
                                uld_teacher_temperature=temperature, uld_skip_student_eos=False, uld_skip_teacher_eos=False,
                                use_extended_uld=True, uld_token_merge_strategy="bayesian", uld_use_hybrid_loss=hybrid,
                                uld_hybrid_matched_weight=None, uld_hybrid_unmatched_weight=None, beta=0.0)  # beta 0: forward KL
    loss = gold.ULDLoss(cfg, Vocab(tokenizers[0]), Vocab(tokenizers[1]))
    (s_logits, t_logits), (s_ids, t_ids), (s_off, t_off) = logits, ids, offsets
    return loss._compute_distillation_loss(s_logits, t_logits, s_ids, t_ids, s_ids, t_ids,
                                           student_byte_offsets=s_off, teacher_byte_offsets=t_off)


@pytest.mark.parametrize("hybrid", [False, True], ids=["uld", "gold-hybrid"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("sizes", [(300, 220), (220, 300)], ids=["byte-teacher", "byte-student"])  # 220: no merges, bytes
def test_matches_trl_gold(hybrid, temperature, sizes):
    s_tok, t_tok = bpe_tokenizer(sizes[0]), bpe_tokenizer(sizes[1])
    (s_ids, s_off), (t_ids, t_off) = encode_with_offsets(s_tok, TEXT), encode_with_offsets(t_tok, TEXT)  # ASCII: chars = bytes
    s_span, t_span, spans = align_spans(s_off, t_off, len(TEXT))
    assert len(s_ids) != len(t_ids) and len(spans) < max(len(s_ids), len(t_ids))  # some spans merge several tokens
    g = torch.Generator().manual_seed(0)
    s_logits = torch.randn(1, len(s_ids), len(s_tok), generator=g)
    t_logits = torch.randn(1, len(t_ids), len(t_tok), generator=g)
    ids = (torch.tensor([s_ids]), torch.tensor([t_ids]))
    for logits, seq in ((s_logits, ids[0]), (t_logits, ids[1])):
        logits[0, torch.arange(seq.shape[1] - 1), seq[0, 1:]] += 8.0 * temperature  # position j predicts token j + 1
    ref = trl_loss((s_tok, t_tok), (s_logits, t_logits), ids, (torch.tensor([s_off]), torch.tensor([t_off])), hybrid, temperature)
    vocab = None
    if hybrid:  # TRL matches token strings exactly: the plain style does the same
        inv = lambda tok: [s for s, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]  # noqa: E731
        vocab = shared_vocab(inv(s_tok), inv(t_tok), "plain", "plain")
    mine = cross_token_kd(torch.nn.Identity(), s_logits, ids[0], torch.tensor([s_span]), torch.ones(1, len(s_ids)),
                          torch.nn.Identity(), t_logits, ids[1], torch.tensor([t_span]), vocab=vocab,
                          kind="gold" if hybrid else "uld", temperature=temperature, chunk_size=4)
    print(f"kdforge {mine.item() / temperature**2:.8f} TRL {ref.item():.8f}")
    assert mine.item() / temperature**2 == pytest.approx(ref.item(), abs=1e-5)  # TRL has no T² factor
