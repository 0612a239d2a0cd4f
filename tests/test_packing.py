"""Packed random stores: the packing is lossless, and a packed store reads back the draws a plain
random store of the same seed holds, in fewer bytes."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdforge.data.text import LMWindows
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_hf
from kdforge.store.packing import low_bits_for, pack_draws, packed_bytes, unpack_draws, unpack_rows
from kdforge.store import CachedTeacher, TeacherStore, write_store
from kdforge.teacher import Teacher
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


def _draws(rng, vocab, draws, positions):
    """Per position: `draws` draws from a peaked random distribution, as unique ids + counts in
    `draws` slots (padding: count 0, a repeated id), in scrambled order."""
    p = rng.dirichlet(np.full(min(vocab, 300), 0.3))
    support = rng.choice(vocab, len(p), replace=False)
    ids, counts = np.zeros((positions, draws), np.int64), np.zeros((positions, draws), np.int64)
    for t in range(positions):
        u, c = np.unique(support[rng.choice(len(p), draws, p=p)], return_counts=True)
        perm = rng.permutation(draws)
        ids[t] = np.concatenate([u, np.full(draws - len(u), u[0])])[perm]
        counts[t] = np.concatenate([c, np.zeros(draws - len(u), np.int64)])[perm]
    return ids, counts


@settings(max_examples=80, deadline=None)
@given(vocab=st.integers(1, 70_000), draws=st.sampled_from([1, 2, 16, 64, 300]), positions=st.integers(1, 5),
       low=st.integers(0, 17), seed=st.integers(0, 2**32 - 1))
def test_unpack_returns_every_id_with_its_count(vocab, draws, positions, low, seed):
    ids, counts = _draws(np.random.default_rng(seed), vocab, draws, positions)
    blob = pack_draws(ids, counts, vocab, draws, low)
    got_ids, got_counts, unique = unpack_draws(blob, positions, vocab, draws, low)
    assert len(blob) == packed_bytes(unique, vocab, draws, low)
    pos = np.repeat(np.arange(positions), unique)
    for t in range(positions):
        kept = counts[t] > 0
        assert sorted(zip(ids[t][kept].tolist(), counts[t][kept].tolist())) == list(zip(got_ids[pos == t].tolist(), got_counts[pos == t].tolist()))


def test_rows_pad_to_the_batch_widest_position_and_compact_width_is_smallest():
    rng = np.random.default_rng(0)
    rows = [_draws(rng, 49_152, 64, 3) for _ in range(2)]
    mean_u = np.mean([(c > 0).sum(-1).mean() for _, c in rows])
    low = low_bits_for(49_152, mean_u)
    ids, counts = unpack_rows([pack_draws(i, c, 49_152, 64, low) for i, c in rows], 3, 49_152, 64, low)
    assert ids.shape == counts.shape == (2, 3, max(int((c > 0).sum(-1).max()) for _, c in rows))
    assert (counts.sum(-1) == 64).all()
    first = ids[..., :1]
    assert ((counts > 0) | (ids == first)).all()  # padding slots: count 0, the position's first id
    sizes = {lb: sum(len(pack_draws(i, c, 49_152, 64, lb)) for i, c in rows) for lb in range(0, 16)}
    assert sizes[low] <= min(sizes.values()) + 2  # Elias-Fano's width is (within a byte per row) the best


def test_bad_draws_are_refused():
    with pytest.raises(ValueError, match="sum to the 4 draws"):
        pack_draws(np.array([[1, 2]]), np.array([[1, 2]]), 10, 4, 1)
    with pytest.raises(ValueError, match="repeated within a position"):
        pack_draws(np.array([[3, 3]]), np.array([[2, 2]]), 10, 4, 1)


def test_packed_store_reads_the_plain_random_stores_draws_in_fewer_bytes(tmp_path, tiny_llama_dir):  # noqa: F811
    torch.manual_seed(0)
    teacher = Teacher(load_hf(str(tiny_llama_dir), "causal_lm"))
    ds = LMWindows(torch.randint(5, 100, (7, 11), generator=torch.Generator().manual_seed(1)))
    common = dict(k=24, sampling="random", seed=3, shard_size=3, batch_size=4, dtype="float32", quiet=True)
    plain = TeacherStore(write_store(tmp_path / "plain", teacher, ds, **common))
    packed = TeacherStore(write_store(tmp_path / "packed", teacher, ds, weights="packed", **common))
    assert packed.packed and packed.sampled and packed.k == 24
    assert packed.bytes_per_position() < 0.5 * plain.bytes_per_position()
    idx = torch.tensor([6, 0, 3, 3, 1])  # three shards, a repeat, out of order
    a, b = CachedTeacher(plain).target(idx), CachedTeacher(packed).target(idx)

    def per_id(t):  # (B, T, V) summed weight of every id
        return torch.zeros(*t.indices.shape[:-1], 100).scatter_add_(-1, t.indices.long(), t.values.float())

    assert torch.equal((per_id(a) * 24).round(), per_id(b) * 24)  # the same draws: counts equal exactly
    assert torch.equal(a.entropy, b.entropy) and torch.allclose(b.values.sum(-1), torch.ones(5, 11))
    with pytest.raises(KDForgeError, match="holds samples 0..6"):
        packed.draws(torch.tensor([7]))
    with pytest.raises(KDForgeError, match="store.weights: packed keeps draw counts"):
        write_store(tmp_path / "bad", teacher, ds, k=8, sampling="priority", weights="packed", quiet=True)
    off = tmp_path / "packed/shard-00001/offsets.npy"
    np.save(off, np.load(off)[:-1])
    with pytest.raises(KDForgeError, match="offsets.npy does not match packed.npy"):
        TeacherStore(tmp_path / "packed")
