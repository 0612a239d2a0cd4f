"""Transfer-set augmentation: deterministic per seed, variants unlabelled and new, never equal to a
validation or test sample, and the val/test splits untouched."""
import torch

from kdforge.config import AugmentConfig
from kdforge.data.augment import augment, word_neighbours
from kdforge.data.base import UNLABELLED
from kdforge.data.text import TokenDataset, tokenize

WORDS = ["a", "cab", "bad", "dig", "fig", "hi", "jab", "kid", "fab", "ace", "bed", "cid", "egg", "fed", "gig", "##s"]
TEXTS = ["a cab bad", "dig a figs", "hi jab kid", "bad cab fab", "ace bed cid", "egg fed gig"]


def _tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(str(tmp_path / "vocab.txt"))


def _setup(tmp_path):
    tok = _tokenizer(tmp_path)
    ids = tokenize(TEXTS, tok, 16)  # [CLS] words [SEP] [PAD]...
    torch.manual_seed(0)
    emb = torch.randn(tok.vocab_size, 8)
    return tok, TokenDataset(ids[:4], torch.arange(4) % 2, TEXTS[:4]), ids[4:], emb


def test_same_seed_same_variants_other_seed_others(tmp_path):
    tok, train, held_out, emb = _setup(tmp_path)
    cfg = AugmentConfig(n=3, replace=0.5, drop=0.2, swap=0.3)
    a = augment(train, cfg, 0, embeddings=emb, tokenizer=tok, exclude=[held_out])
    b = augment(train, cfg, 0, embeddings=emb, tokenizer=tok, exclude=[held_out])
    c = augment(train, cfg, 1, embeddings=emb, tokenizer=tok, exclude=[held_out])
    assert torch.equal(a.x, b.x) and a.texts == b.texts
    assert not (a.x.shape == c.x.shape and torch.equal(a.x, c.x))
    assert len(train) < len(a) <= len(train) * (1 + cfg.n)
    assert torch.equal(a.x[: len(train)], train.x) and torch.equal(a.y[: len(train)], train.y)  # originals first, as they were
    assert (a.y[len(train):] == UNLABELLED).all()  # the teacher labels the variants
    assert len({tuple(r) for r in a.x.tolist()}) == len(a)  # every variant is new
    assert (a.x[len(train):, 0] == tok.cls_token_id).all() and ((a.x[len(train):] == tok.sep_token_id).sum(1) == 1).all()
    assert any(t not in " ".join(TEXTS[:4]).split() for v in a.texts[len(train):] for t in v.split())  # words were replaced
    pieces = [v.split() for v in a.texts[len(train):] if "figs" in v]
    assert pieces and all("s" not in p for p in pieces)  # a word's pieces ("fig" "##s") move and drop together


def test_no_variant_equals_a_validation_or_test_sample(tmp_path):
    tok, train, _, emb = _setup(tmp_path)
    # the held-out rows are exactly what dropping a word or swapping two would make from train rows
    held_out = tokenize(["a cab", "cab bad", "cab a bad", "a bad cab", "dig figs", "a dig figs"], tok, 16)
    cfg = AugmentConfig(n=6, replace=0.0, drop=0.3, swap=0.5)
    free = augment(train, cfg, 0, embeddings=emb, tokenizer=tok)
    rows = {tuple(r) for r in free.x.tolist()}
    assert any(tuple(r) in rows for r in held_out.tolist())  # without the exclusion they would be produced
    kept = augment(train, cfg, 0, embeddings=emb, tokenizer=tok, exclude=[held_out])
    assert not {tuple(r) for r in kept.x.tolist()} & {tuple(r) for r in held_out.tolist()}


def test_replacement_uses_nearest_whole_word_neighbours():
    tokens = ["[PAD]", "cat", "dog", "##s", "car", "x"]
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [1.0, 0.01], [0.0, 1.0], [1.0, 0.0]])
    nb = word_neighbours(emb, tokens, torch.tensor([1, 2, 3]), k=1, special={0})
    assert nb[1].tolist() == [2] and nb[2].tolist() == [1]  # "##s" (a piece) and "x" (one letter) are never candidates
    assert 3 not in nb
