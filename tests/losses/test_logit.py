"""DKD, logit standardization and DIST equal their papers' formulas and keep their identities."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kdforge.losses import dist_loss, dkd, soft_target_kl, standardize, standardized_kl


def logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def labels(n, c, seed=0):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def mdistiller_dkd(s, t, y, alpha, beta, T):
    """The reference code of Zhao et al. (megvii-research/mdistiller, dkd.py), transcribed."""
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    other = torch.ones_like(s).scatter_(1, y.unsqueeze(1), 0).bool()
    p_s, p_t = F.softmax(s / T, 1), F.softmax(t / T, 1)

    def cat(p):
        return torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], 1)

    tckd = F.kl_div(torch.log(cat(p_s)), cat(p_t), reduction="sum") * T**2 / s.shape[0]
    log_nt_s = F.log_softmax(s / T - 1000.0 * gt, 1)
    nt_t = F.softmax(t / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_nt_s, nt_t, reduction="sum") * T**2 / s.shape[0]
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 3.0)])
def test_dkd_equals_reference_code(alpha, beta, T):
    s, t, y = logits(32, 10, seed=1), logits(32, 10, seed=2), labels(32, 10, seed=3)
    assert dkd(s, t, y, alpha, beta, T).item() == pytest.approx(mdistiller_dkd(s, t, y, alpha, beta, T).item(), rel=1e-4)


def test_dkd_with_coupled_weight_is_vanilla_kd():
    """Zhao et al. Eq. 5: KD = TCKD + (1 − p_t(y)) · NCKD."""
    s, t, y = logits(16, 7, seed=4), logits(16, 7, seed=5), labels(16, 7, seed=6)
    T = 4.0
    p_ty = F.softmax(t / T, -1).gather(1, y[:, None])[:, 0]
    assert dkd(s, t, y, 1.0, 1 - p_ty, T).item() == pytest.approx(soft_target_kl(s, t, T).item(), rel=1e-5)


def test_dkd_zero_on_identical_and_sample_weights():
    z, y = logits(8, 5, seed=7), labels(8, 5, seed=8)
    assert dkd(z, z.clone(), y).abs().item() < 1e-5
    s, t = logits(8, 5, seed=9), logits(8, 5, seed=10)
    assert dkd(s, t, y, weight=torch.ones(8)).item() == pytest.approx(dkd(s, t, y).item(), rel=1e-6)
    w = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])  # only the first sample counts
    assert dkd(s, t, y, weight=w).item() == pytest.approx(dkd(s[:1], t[:1], y[:1]).item(), rel=1e-5)


def test_standardize_gives_zscores():
    z = standardize(logits(6, 9, seed=11) * 5 + 2)
    assert torch.allclose(z.mean(-1), torch.zeros(6), atol=1e-5)
    assert torch.allclose(z.std(-1), torch.ones(6), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.1, 20.0), shift=st.floats(-50.0, 50.0))
def test_standardized_kl_ignores_teacher_scale_and_shift(scale, shift):
    """The point of logit standardization: a teacher's logit range does not matter, only relations."""
    s, t = logits(8, 10, seed=12), logits(8, 10, seed=13)
    a = standardized_kl(s, t, 2.0).item()
    assert standardized_kl(s, t * scale + shift, 2.0).item() == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert standardized_kl(t * scale + shift, t, 2.0).item() < 1e-4  # student = affine copy: zero loss


def test_standardized_kl_is_kl_of_zscores():
    s, t, T = logits(8, 10, seed=14), logits(8, 10, seed=15), 3.0
    assert standardized_kl(s, t, T).item() == pytest.approx(soft_target_kl(standardize(s), standardize(t), T).item(), rel=1e-5)


def test_dist_equals_pearson_formula():
    s, t, T = logits(12, 6, seed=16), logits(12, 6, seed=17), 2.0
    p_s, p_t = F.softmax(s / T, -1).numpy(), F.softmax(t / T, -1).numpy()
    inter = 1 - np.mean([stats.pearsonr(p_s[i], p_t[i])[0] for i in range(12)])
    intra = 1 - np.mean([stats.pearsonr(p_s[:, c], p_t[:, c])[0] for c in range(6)])
    got = dist_loss(s, t, beta=2.0, gamma=0.5, temperature=T).item()
    assert got == pytest.approx(T**2 * (2.0 * inter + 0.5 * intra), rel=1e-4)


def test_dist_zero_on_identical_and_bounded():
    z = logits(10, 5, seed=18)
    assert dist_loss(z, z.clone()).abs().item() < 1e-5
    # Pearson ∈ [−1, 1], so each relation term lies in [0, 2]
    v = dist_loss(logits(10, 5, seed=19), -logits(10, 5, seed=19)).item()
    assert 0 < v <= 4 + 1e-5


def test_new_terms_train_a_student_through_the_standard_method():
    from kdforge.config import DistillConfig
    from kdforge.methods.standard import StandardKD

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    batch = {"x": torch.randn(16, 4), "y": torch.randint(0, 3, (16,))}
    cfg = DistillConfig(losses=[{"kind": "dkd"}, {"kind": "dist"}, {"kind": "kd", "standardize": True}, {"kind": "ce"}])
    m = StandardKD(student, teacher, cfg, batch)
    out = m.step(batch)
    assert set(out) == {"dkd", "dist", "kd", "ce"}
    sum(out.values()).backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
