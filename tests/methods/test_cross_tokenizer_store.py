"""Cross-tokenizer token KD from a teacher store written over the teacher's own tokens."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdforge.config import DistillConfig
from kdforge.data.paired import pair_windows
from kdforge.errors import KDForgeError
from kdforge.methods.sequence import TokenKD
from kdforge.store import CachedTeacher, TeacherStore, write_store
from kdforge.teacher import TOKEN_LOGP, Teacher, TokenLogprobTeacher
from kdforge.train.batching import collate_indexed
from tests.losses.test_cross_tokenizer import ALPHABET, SAMPLE, bpe_tokenizer, tiny_lm, toks  # noqa: F401  (toks: fixture)

long_texts = st.lists(st.sampled_from(ALPHABET), min_size=30, max_size=80).map("".join)


def _method(s_tok, t_tok, teacher, kind, temperature, chunk, batch):
    cfg = DistillConfig.model_validate({"losses": [{"kind": "kd", "alpha": 0.7, "temperature": temperature}, {"kind": "ce", "weight": 0.2}],
                                        "lm": {"chunk_size": chunk, "cross_tokenizer": kind}})
    return TokenKD(tiny_lm(len(s_tok), 0), teacher, cfg, batch, tokenizers=(s_tok, t_tok))


def _step(method, batch):
    out = method(batch)
    sum(out.values()).backward()
    return {k: v.detach() for k, v in out.items()}, [p.grad.clone() for p in method.student.parameters()]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=long_texts, kind=st.sampled_from(["gold", "uld"]), temperature=st.sampled_from([1.0, 2.0]),
       chunk=st.sampled_from([None, 3]))
def test_a_store_backed_cross_tokenizer_batch_equals_the_live_teacher_one(toks, tmp_path_factory, text, kind, temperature, chunk):  # noqa: F811
    s_tok, t_tok = toks["bpe"], toks.get("minilm") or bpe_tokenizer(280)
    windows = pair_windows(text * 3, s_tok, t_tok, 8).select(slice(0, 4))  # 4 windows: a dense store of 4 x T' x 30,522
    batch = collate_indexed([(i, windows[i]) for i in range(len(windows))])
    teacher = tiny_lm(len(t_tok), 1)
    path = write_store(tmp_path_factory.mktemp("store") / "s", TokenLogprobTeacher(teacher, temperature), windows.teacher_view(),
                       k="all", sampling="topk", temperature=temperature, dtype="float32", batch_size=2, quiet=True)
    cached = CachedTeacher(TeacherStore(path))
    live, stored = (_step(_method(s_tok, t_tok, t, kind, temperature, chunk, batch), batch) for t in (teacher, cached))
    assert cached.calls == 1  # the stored run read the store and never ran a model
    assert live[0].keys() == stored[0].keys()
    for key in live[0]:
        torch.testing.assert_close(stored[0][key], live[0][key], rtol=1e-5, atol=1e-6)
    for a, b in zip(stored[1], live[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_stored_token_logprobs_are_the_teachers_chain_rule_terms(toks):  # noqa: F811
    tok = toks["bpe"]
    ids = torch.tensor(tok(SAMPLE[:200])["input_ids"])[None, :24]  # (1, 24)
    model = tiny_lm(len(tok), 1)
    logits, feats = TokenLogprobTeacher(model, 2.0)(ids)
    want = torch.log_softmax(logits[0, :-1] / 2.0, -1)[torch.arange(23), ids[0, 1:]]
    torch.testing.assert_close(feats[TOKEN_LOGP][0, 1:], want)
    assert feats[TOKEN_LOGP][0, 0] == 0 and torch.equal(logits, Teacher(model)(ids)[0])


def test_a_sparse_store_trains_the_student(toks, tmp_path):  # noqa: F811
    s_tok, t_tok = toks["bpe"], toks.get("minilm") or bpe_tokenizer(280)
    windows = pair_windows(SAMPLE, s_tok, t_tok, 16)
    batch = collate_indexed([(i, windows[i]) for i in range(4)])
    path = write_store(tmp_path / "s", TokenLogprobTeacher(tiny_lm(len(t_tok), 1)), windows.teacher_view(), k=16,
                       sampling="random", weights="packed", quiet=True)
    method = _method(s_tok, t_tok, CachedTeacher(TeacherStore(path)), "gold", 1.0, 4, batch)
    out, grads = _step(method, batch)
    assert torch.isfinite(out["kd"]) and out["kd"] > 0
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_store_without_teacher_token_logprobs_or_at_another_temperature_is_refused(toks, tmp_path):  # noqa: F811
    s_tok, t_tok = toks["bpe"], toks.get("minilm") or bpe_tokenizer(280)
    windows = pair_windows(SAMPLE, s_tok, t_tok, 16)
    batch = collate_indexed([(i, windows[i]) for i in range(2)])
    teacher = tiny_lm(len(t_tok), 1)
    plain = write_store(tmp_path / "plain", Teacher(teacher), windows.teacher_view(), k=8, sampling="topk", quiet=True)
    with pytest.raises(KDForgeError, match="not for cross-tokenizer distillation"):
        _method(s_tok, t_tok, CachedTeacher(TeacherStore(plain)), "gold", 1.0, 4, batch)
    warm = write_store(tmp_path / "t2", TokenLogprobTeacher(teacher, 2.0), windows.teacher_view(), k=8, sampling="topk",
                       temperature=2.0, quiet=True)
    with pytest.raises(KDForgeError, match=r"distill\.losses\.0\.temperature: 1\.0 differs"):
        _method(s_tok, t_tok, CachedTeacher(TeacherStore(warm)), "gold", 1.0, 4, batch)
