"""Causal-LM distillation: token KD learns the teacher, masks work, bad pairs fail early."""
import pytest
import torch

from kdforge.config import DistillConfig
from kdforge.data.text import LMWindows, lm_windows, read_text_file
from kdforge.errors import KDForgeError
from kdforge.methods.sequence import OnPolicyKD, SequenceKD, TokenKD, check_vocab, sample
from kdforge.models.hf import load_hf, load_tokenizer
from kdforge.models.students import from_config
from kdforge.train.batching import collate_indexed
from kdforge.train.lm_metrics import perplexity_metrics
from kdforge.train.loop import fit

from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


def _cfg(**kw):
    base = {"epochs": 2, "batch_size": 8, "lr": 3e-3, "losses": [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}],
            "lm": {"chunk_size": 5, "prompt_tokens": 4, "max_new_tokens": 6, "lmbda": 0.5}}
    base.update(kw)
    return DistillConfig.model_validate(base)


@pytest.fixture
def pair(tiny_llama_dir):  # noqa: F811
    torch.manual_seed(0)
    teacher = load_hf(str(tiny_llama_dir), "causal_lm")
    student = from_config(teacher, num_layers=1, hidden_size=16, num_heads=2)
    return teacher, student


def _data(n=24, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LMWindows(torch.randint(5, 100, (n, t), generator=g), prompt_tokens=3)


def _probe(ds):
    return collate_indexed([(i, ds[i]) for i in range(4)])


@pytest.mark.parametrize("kind", ["kd", "reverse_kl", "jsd", "tvd"])
def test_token_kd_moves_student_towards_teacher(pair, tmp_path, kind):
    teacher, student = pair
    train, val = _data(), _data(8, seed=1)
    cfg = _cfg(losses=[{"kind": kind}] if kind != "kd" else [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}])
    m = TokenKD(student, teacher, cfg, _probe(train))
    batch = collate_indexed([(i, train[i]) for i in range(8)])
    before = sum(m.step(batch).values()).item()
    fit(m, train, val, cfg.model_copy(update={"epochs": 3}), tmp_path, 0, metric_fn=perplexity_metrics,
        select="neg_perplexity", quiet=True)
    after = sum(m.step(batch).values()).item()
    assert after < before
    assert all(not p.requires_grad for p in teacher.parameters())


def test_prompt_and_padding_positions_are_not_scored(pair):
    teacher, student = pair
    ds = _data(4)
    m = TokenKD(student, teacher, _cfg(), _probe(ds))
    batch = _probe(ds)
    base = m.step(batch)["kd"]
    changed = batch["input_ids"].clone()
    changed[:, -1] = 7  # last token is a target; change it only where it is masked
    batch2 = {**batch, "input_ids": changed, "loss_mask": batch["loss_mask"].clone()}
    batch2["loss_mask"][:, -1] = 0
    batch3 = {**batch, "loss_mask": batch2["loss_mask"]}
    # with the last target masked, its token cannot change the loss
    assert torch.allclose(m.step(batch2)["kd"], m.step(batch3)["kd"], atol=1e-6)
    assert not torch.allclose(base, m.step(batch3)["kd"])


def test_chunked_and_plain_lm_losses_agree(pair):
    teacher, student = pair
    ds = _data(4)
    a = TokenKD(student, teacher, _cfg(lm={"chunk_size": 3}), _probe(ds)).step(_probe(ds))["kd"]
    b = TokenKD(student, teacher, _cfg(lm={"chunk_size": None}), _probe(ds)).step(_probe(ds))["kd"]
    assert torch.allclose(a, b, atol=1e-6)


def test_sequence_kd_generates_once_per_sample(pair):
    teacher, student = pair
    ds = _data(8)
    m = SequenceKD(student, teacher, _cfg(losses=[{"kind": "ce"}]), _probe(ds))
    calls = m.teacher.calls
    batch = _probe(ds)
    m.step(batch)
    first = m.teacher.calls - calls
    m.step(batch)
    assert m.teacher.calls - calls == first == 1  # one cached generation for the batch, none the second time
    assert m.teacher.samples == 4
    assert len(m.generated) == 4 and m.generated[0].shape == (10,)


def test_cached_decoding_equals_rerunning_the_prefix(pair):
    teacher, _ = pair
    ids = _data(3)[0]["input_ids"][None, :4].repeat(3, 1)
    ids[1, 0], ids[2, 1] = 7, 9
    cached = sample(teacher, ids, 6, greedy=True)  # the model's generate: key/value cache
    plain = sample(lambda x: teacher(x), ids, 6, greedy=True)  # any callable: the whole prefix every step
    assert torch.equal(cached, plain) and cached.shape == (3, 10)
    torch.manual_seed(3)
    a = sample(teacher, ids, 6, temperature=1.0)
    torch.manual_seed(3)
    b = sample(lambda x: teacher(x), ids, 6, temperature=1.0)
    assert torch.equal(a, b)  # sampling draws the same tokens from the same RNG


def test_gkd_mixes_on_and_off_policy(pair):
    teacher, student = pair
    ds = _data(8)
    torch.manual_seed(0)
    m = OnPolicyKD(student, teacher, _cfg(losses=[{"kind": "jsd", "beta": 0.5}]), _probe(ds))
    for _ in range(12):
        out = m.step(_probe(ds))
        assert torch.isfinite(out["jsd"])
    stats = m.epoch_stats()
    assert stats["on_policy_batches"] > 0 and stats["off_policy_batches"] > 0


def test_vocab_mismatch_says_how(pair, tiny_llama_dir):  # noqa: F811
    teacher, _ = pair
    other = from_config(teacher, num_layers=1)
    other.hf.resize_token_embeddings(120)
    with pytest.raises(KDForgeError, match="teacher predicts 100 tokens, student 120 .the student has 20 more"):
        TokenKD(other, teacher, _cfg(), _probe(_data(4)))
    tok = load_tokenizer(str(tiny_llama_dir))
    import copy

    tok2 = copy.deepcopy(tok)
    tok2.add_tokens(["zzz"])
    with pytest.raises(KDForgeError, match="tokenizer mismatch"):
        check_vocab(100, 100, tok2, tok)


def test_prompt_longer_than_context_is_an_error(pair):
    teacher, student = pair
    long = _data(4, t=70)  # tiny llama has 64 positions
    with pytest.raises(KDForgeError, match="longer than the student's context of 64"):
        TokenKD(student, teacher, _cfg(), _probe(long))
    with pytest.raises(KDForgeError, match="context"):
        OnPolicyKD(student, teacher, _cfg(lm={"prompt_tokens": 60, "max_new_tokens": 10}), _probe(_data(4)))


def test_feature_terms_are_refused(pair):
    teacher, student = pair
    with pytest.raises(KDForgeError, match="hint is not supported by method token_kd .*token logits"):
        TokenKD(student, teacher, _cfg(losses=[{"kind": "hint", "student_layer": "a", "teacher_layer": "b"}]), _probe(_data(4)))


def test_empty_text_file_and_lm_windows(tmp_path, tiny_llama_dir):  # noqa: F811
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(KDForgeError, match="is empty"):
        read_text_file(empty)
    tok = load_tokenizer(str(tiny_llama_dir))
    bundle = lm_windows("to be or not to be, that is the question. " * 20, tok, 16, val_fraction=0.1, test_fraction=0.1)
    assert len(bundle.train) > 0 and bundle.train[0]["input_ids"].shape == (16,)
    with pytest.raises(KDForgeError, match="too few"):
        lm_windows("short", tok, 16, val_fraction=0.1, test_fraction=0.1)


def test_store_k_all_equals_live_and_topk_store_trains_without_teacher(pair, tmp_path):
    from kdforge.store import CachedTeacher, TeacherStore, write_store
    from kdforge.teacher import Teacher

    teacher, student = pair
    ds = _data(16)
    live = Teacher(teacher)
    write_store(tmp_path / "all", live, ds, k="all", batch_size=4, dtype="float32")
    write_store(tmp_path / "k8", CachedTeacher(TeacherStore(tmp_path / "all")), ds, k=8, batch_size=4)
    batch = _probe(ds)
    for kind in ("kd", "reverse_kl", "jsd"):
        cfg = _cfg(losses=[{"kind": kind}] if kind != "kd" else [{"kind": "kd", "alpha": 0.5, "temperature": 2.0}])
        a = TokenKD(student, teacher, cfg, batch).step(batch)[kind]
        cached = CachedTeacher(TeacherStore(tmp_path / "all"))
        b = TokenKD(student, cached, cfg, batch).step(batch)[kind]
        assert torch.allclose(a, b, atol=1e-5) and cached.calls == 1
    calls = live.calls
    sparse = CachedTeacher(TeacherStore(tmp_path / "k8"))
    m = TokenKD(student, sparse, _cfg(), batch)
    before = m.step(batch)["kd"].item()
    fit(m, ds, _data(8, seed=1), _cfg(epochs=3), tmp_path / "run", 0, metric_fn=perplexity_metrics,
        select="neg_perplexity", quiet=True)
    assert m.step(batch)["kd"].item() < before and live.calls == calls  # the teacher never ran
    with pytest.raises(KDForgeError, match="needs the live teacher"):
        SequenceKD(student, sparse, _cfg(), batch)
