"""Sparse teacher targets: the teacher's distribution kept at k vocabulary ids per position.

Two ways to choose the k ids (the teacher-output store writes either):

- top-k: the k largest teacher logits. The renormalised top-k distribution is a
  *biased* stand-in for the teacher's: the tail mass is dropped and the head is
  inflated, which costs the student perplexity and calibration.
- sampled (random): K draws from the teacher's softmax at temperature T, with replacement,
  kept as the unique ids and their counts c (Anshumann et al. 2025, "Sparse Logit
  Sampling: Accelerating Knowledge Distillation in LLMs"). The weights w = c / K
  satisfy E[w_i] = p_t(i), so the cross-entropy −Σ w_i log p_s(i) is an unbiased
  estimate of −Σ p_t log p_s, and its gradient (p_s − w) / T of the dense gradient
  (p_s − p_t) / T. Subtracting the stored teacher entropy H(p_t) per position makes
  the value an unbiased estimate of KL(p_t ‖ p_s) as well.
- sampled (hybrid): the k/2 most likely ids with their exact probabilities, plus k/2
  draws from the rest weighted by its mass: still unbiased, with no sampling noise where
  most of the mass is (a lower-variance control of the same estimator).
- sampled (ht): the same K draws as random, but each unique id v weighted by Horvitz–Thompson,
  p_v / π_v with π_v = 1 − (1 − p_v)^K its chance to be drawn at all: E[w_v] = p_v, and an id
  drawn almost surely (the head) gets its exact probability.
- sampled (priority): priority sampling (Duffield, Lund & Thorup 2007, JACM): priorities
  p_v / u_v (u uniform), the k highest kept, τ the (k+1)-th; w_v = max(p_v, τ). Exactly k
  distinct ids (no padding), E[w_v] = p_v, and ids with p_v ≥ τ exact.
  For ht and priority Σ w is 1 only in expectation; the loss −Σ w log p_s stays a function
  of the student's distribution and is unbiased in value and gradient (Σw · p_s − w).

Shapes: student logits (..., V); target indices / values (..., k); entropy (...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.chunked import divergence

FILL = -1e4  # logit given to ids outside the stored support (probability 0 after softmax)


@dataclass(frozen=True)
class SparseTarget:
    """A teacher distribution over k ids per position.

    indices (..., k) vocabulary ids. values (..., k): top-k teacher logits, or for a
    sampled target unbiased weights (E[w] = p_t; they sum to 1 for random and hybrid, to 1 in
    expectation for ht and priority; 0 marks a padding slot, whose id repeats another slot's).
    entropy (...): the teacher's entropy at the sampling temperature, present only for sampled targets.
    """

    indices: Tensor
    values: Tensor
    entropy: Tensor | None = None

    @property
    def sampled(self) -> bool:
        return self.entropy is not None

    def __getitem__(self, key) -> "SparseTarget":
        """Index the position axes, like a (..., k) tensor: target[:, :-1], target[i]."""
        return SparseTarget(self.indices[key], self.values[key], None if self.entropy is None else self.entropy[key])

    def to(self, device, non_blocking: bool = False) -> "SparseTarget":
        return SparseTarget(*(None if t is None else t.to(device, non_blocking=non_blocking)
                              for t in (self.indices, self.values, self.entropy)))

    def support_logits(self, temperature: float = 1.0) -> Tensor:
        """(..., k) teacher logits on the support: top-k values, or T·log w for a sampled target
        (softmax(z / T) over the support is then w / Σw, exactly w when Σw = 1; padding slots get FILL)."""
        if not self.sampled:
            return self.values.float()
        w = self.values.float()
        return torch.where(w > 0, temperature * w.clamp_min(1e-30).log(), torch.full_like(w, FILL))

    def dense(self, vocab: int, temperature: float = 1.0) -> Tensor:
        """(..., V) logits whose softmax at `temperature` is the stored distribution (0 off the support;
        sampled weights renormalised to sum 1, which biases ht and priority targets: prefer sparse_kl)."""
        if self.sampled:  # weights summed per id (padding slots add 0), then T·log w
            w = self.values.new_zeros(*self.values.shape[:-1], vocab, dtype=torch.float32)
            w.scatter_add_(-1, self.indices.long(), self.values.float())
            return torch.where(w > 0, temperature * w.clamp_min(1e-30).log(), torch.full_like(w, temperature * FILL))
        z = self.values.float()
        out = (z.amin(-1, keepdim=True) + FILL).expand(*z.shape[:-1], vocab).clone()  # far below every kept logit
        return out.scatter_(-1, self.indices.long(), z)


def topk_target(logits: Tensor, k: int) -> SparseTarget:
    """The k largest logits of (..., V) and their ids."""
    vals, ids = logits.float().topk(k, dim=-1)
    return SparseTarget(ids, vals)


def _unique_draws(p: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """k draws per row of p (N, V), with replacement -> (ids, counts) of shape (N, k): unique ids
    sorted by count (most drawn first), padding slots count 0 and repeat the first id."""
    draws = torch.multinomial(p, k, replacement=True, generator=generator).sort(-1).values  # (N, k)
    counts = (draws[:, :, None] == draws[:, None, :]).sum(-1)  # (N, k): copies of each draw
    first = torch.ones_like(draws, dtype=torch.bool)
    first[:, 1:] = draws[:, 1:] != draws[:, :-1]
    count, order = torch.where(first, counts, 0).sort(dim=-1, descending=True, stable=True)
    ids = draws.gather(-1, order)
    return torch.where(count > 0, ids, ids[:, :1]), count


def _inclusion(p: Tensor, k: int) -> Tensor:
    """π = 1 − (1 − p)^k: the chance that id of probability p is among k draws with replacement."""
    return -torch.expm1(k * torch.log1p(-p.clamp(max=1 - 1e-7)))


def _by_probability(ids: Tensor, w: Tensor, p_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Slots reordered most likely id first (so indices[..., 0] is the teacher's best kept id),
    padding slots (w = 0) last."""
    order = torch.where(w > 0, p_ids, -1.0).argsort(dim=-1, descending=True, stable=True)
    return ids.gather(-1, order), w.gather(-1, order)


def _ht_draws(p: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """k draws with replacement per row of p (N, V), unique ids weighted p / π (Horvitz–Thompson)."""
    ids, count = _unique_draws(p, k, generator)
    p_ids = p.gather(-1, ids)
    w = torch.where(count > 0, p_ids / _inclusion(p_ids, k).clamp_min(1e-30), 0.0)
    return _by_probability(ids, w, p_ids)


def _priority_draws(p: Tensor, k: int, generator: torch.Generator | None, power: float = 1.0,
                    normalise: bool = False) -> tuple[Tensor, Tensor]:
    """Priority sampling of k distinct ids per row of p (N, V) by sizes s = p^power (power < 1: flatter,
    more of the tail kept): inclusion min(1, s / τ) given the threshold, weights p · max(1, τ / s)
    (= max(p, τ) at power 1). normalise: weights divided by their sum (Σw = 1 exactly, a ratio estimator:
    biased by O(1/k))."""
    size = p if power == 1.0 else p.pow(power)
    u = 1.0 - torch.rand(p.shape, generator=generator)  # (0, 1]
    prio, ids = (size / u).topk(k + 1, dim=-1)  # (N, k + 1)
    tau, ids = prio[:, k:], ids[:, :k]  # the (k+1)-th priority is the threshold
    p_ids, s_ids = p.gather(-1, ids), size.gather(-1, ids)
    w = torch.where(s_ids > 0, p_ids * torch.clamp(tau / s_ids.clamp_min(1e-30), min=1.0), 0.0)  # p = 0: a padding slot
    if normalise:
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    return _by_probability(ids, w, p_ids)


ESTIMATORS = ("random", "hybrid", "ht", "priority")


def sample_target(logits: Tensor, k: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                  head: int = 0, estimator: str = "random", power: float = 1.0, normalise: bool = False) -> SparseTarget:
    """A sampled teacher of k slots per position, from softmax(logits / T), plus its entropy.

    estimator (the store's `sampling`; all unbiased, E[w] = p_t, see the module docstring):
    random: K = k draws with replacement -> unique ids, weights c / K. hybrid (or head = h > 0):
    the h (default k/2) most likely ids with their exact probabilities, then k − h draws from the
    rest weighted by its mass (tail mass · c / (k − h)). ht: the random draws weighted p / π.
    priority: k distinct ids by priority sampling, weights max(p, τ) (sizes p^power when power < 1:
    a flatter proposal, as the tempering of Anshumann et al. 2025). Padding slots have weight 0."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is not one of {', '.join(ESTIMATORS)}")
    if estimator == "hybrid" and head <= 0:
        head = k // 2
    shape, vocab = logits.shape[:-1], logits.shape[-1]
    log_p = F.log_softmax(logits.float().reshape(-1, vocab) / temperature, dim=-1)  # (N, V)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)  # (N,)
    if estimator in ("ht", "priority"):
        ids, w = _ht_draws(p, k, generator) if estimator == "ht" else _priority_draws(p, k, generator, power, normalise)
    elif head <= 0:
        ids, count = _unique_draws(p, k, generator)
        w = count.float() / k
    else:
        head_p, head_ids = p.topk(head, dim=-1)  # (N, h), exact
        tail = p.scatter(-1, head_ids, 0.0)
        mass = tail.sum(-1, keepdim=True)  # (N, 1)
        tail_ids, count = _unique_draws(tail + (mass <= 0) * 1e-30, k - head, generator)  # a zero tail still samples (weight 0)
        ids = torch.cat([head_ids, tail_ids], -1)
        w = torch.cat([head_p, mass * count.float() / (k - head)], -1)
    return SparseTarget(ids.reshape(*shape, k), w.reshape(*shape, k), entropy.reshape(shape))


CODE_STEP = 1 / 16  # uint8 weight code c means w = exp(−c / 16) (steps of 6.5%); code 255 means 0


def encode_weights(w: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sampled weights in [0, 1] -> uint8 codes on a log grid, rounded stochastically to one of the
    two grid points around w with the probabilities that keep E[decode(code)] = w (so a sampled
    target stays unbiased at 1 byte per weight instead of 2)."""
    w = w.float().clamp(0.0, 1.0)
    lo = (-w.clamp_min(1e-30).log() / CODE_STEP).floor().clamp(0, 254)  # grid point at or above w
    g_lo, g_hi = decode_weights(lo), decode_weights(lo + 1)  # g_hi <= w <= g_lo (g = 0 past the last code)
    up = torch.rand(w.shape, generator=generator) * (g_lo - g_hi) < (w - g_hi)
    return torch.where(w > 0, torch.where(up, lo, lo + 1), 255.0).to(torch.uint8)


def decode_weights(code: Tensor) -> Tensor:
    """uint8 (or float) codes -> fp32 weights: exp(−code / 16), 0 for code 255."""
    c = code.float()
    return torch.where(c >= 255, 0.0, torch.exp(-c * CODE_STEP))


def _masked_mean(per_pos: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return per_pos.mean()
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum() / m.sum().clamp_min(1.0)


def sparse_kl(student_logits: Tensor, target: SparseTarget, temperature: float = 1.0, mask: Tensor | None = None,
              reduction: str = "mean") -> Tensor:
    """T² · forward KL(p_t ‖ p_s) against a sparse teacher, masked mean over positions
    (reduction "none": the (...) values per position, unmasked).

    top-k: KL from the teacher renormalised over its k ids (biased; equals `soft_target_kl`
    at k = V). sampled: −Σ w log p_s − H(p_t), an unbiased estimate of the dense KL and of
    its gradient (the target must have been sampled at this temperature). The student is
    normalised over the whole vocabulary either way.
    """
    if target.indices.shape != target.values.shape or target.values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"sparse teacher {tuple(target.values.shape)} / {tuple(target.indices.shape)} does not fit "
                         f"student logits {tuple(student_logits.shape)}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, target.indices.long())  # (..., k)
    if target.sampled:
        per_pos = -(target.values.float() * log_p_s).sum(-1) - target.entropy.float()  # cross-entropy − H(p_t)
    else:
        log_p_t = F.log_softmax(target.values.float() / temperature, dim=-1)  # (..., k)
        per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if reduction == "none":
        return per_pos * temperature**2
    return _masked_mean(per_pos, mask) * temperature**2


def sparse_topk_kl(student_logits: Tensor, topk_values: Tensor, topk_indices: Tensor, temperature: float = 1.0,
                   mask: Tensor | None = None) -> Tensor:
    """`sparse_kl` for a top-k target given as (values, indices) of shape (..., k)."""
    return sparse_kl(student_logits, SparseTarget(topk_indices, topk_values), temperature, mask)


def sparse_restricted(kind: str, student_logits: Tensor, target: SparseTarget, mask: Tensor | None = None, **kwargs) -> Tensor:
    """Any divergence on a top-k target's support: student logits gathered at the teacher's
    ids, both renormalised over those k ids. (..., V), target (..., k). Sampled targets are
    refused: their padding slots repeat an id, and only forward KL is unbiased for them."""
    if target.sampled:
        raise ValueError(f"{kind} against a sampled teacher is not supported (only forward KL is unbiased); use a top-k store")
    gathered = student_logits.gather(-1, target.indices.long())
    return divergence(kind, gathered, target.values, mask, chunk_size=None, **kwargs)


__all__ = ["ESTIMATORS", "FILL", "SparseTarget", "decode_weights", "encode_weights", "sample_target", "sparse_kl", "sparse_restricted", "sparse_topk_kl", "topk_target"]
