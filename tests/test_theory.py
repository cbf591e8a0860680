"""Tests for sprec_lib.theory: the DPO optimum (closed form vs numeric), self-play re-weighting,
and the self-play dynamics the module docstring states."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sprec_lib.theory import (
    dpo_gradient_at_reference,
    dpo_min_loss,
    dpo_optimum,
    entropy,
    expected_dpo_loss,
    head_mass,
    optimise_dpo,
    reweighted_loss,
    self_play,
    self_play_fixed_point,
    self_play_rate,
    sft_optimum,
    sft_step,
    uniform,
    zipf,
)


def normalise(w: np.ndarray) -> np.ndarray:
    return w / w.sum()


def random_dist(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.dirichlet(np.full(n, 3.0))


def logits_of(pi: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.log(pi), dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# helpers


def test_zipf_uniform_head_mass_entropy():
    p = zipf(4, 1.0)
    np.testing.assert_allclose(p, np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
    assert np.all(np.diff(p) < 0)
    np.testing.assert_allclose(zipf(5, 0.0), uniform(5))
    assert head_mass(p, 2) == pytest.approx((1 + 1 / 2) / (25 / 12))
    # ranked by another popularity: the two least popular items of p
    assert head_mass(p, 2, popularity=-p) == pytest.approx((1 / 3 + 1 / 4) / (25 / 12))
    assert entropy(uniform(7)) == pytest.approx(math.log(7))
    assert entropy(np.array([1.0, 0.0])) == 0.0
    np.testing.assert_array_equal(sft_optimum(p), p)


# ------------------------------------------------------------------------------------------------
# Result 1: the DPO optimum

CASES = [
    (n, a, beta, kind)
    for n, a in [(10, 1.5), (30, 0.5), (30, 1.0)]
    for beta in [0.1, 0.3, 1.0, 2.0]
    for kind in ["uniform", "sft-ref", "random"]
]


@pytest.mark.parametrize("n,a,beta,kind", CASES)
def test_closed_form_is_the_numeric_optimum(n, a, beta, kind):
    rng = np.random.default_rng(n + int(10 * a) + int(100 * beta))
    p = zipf(n, a)
    q, ref = {
        "uniform": (uniform(n), uniform(n)),
        "sft-ref": (uniform(n), p),
        "random": (random_dist(rng, n), random_dist(rng, n)),
    }[kind]
    pi, history = optimise_dpo(p, q, ref, beta, steps=100, seed=1)
    closed = dpo_optimum(p, q, ref, beta)
    err = np.abs(pi - closed).max()
    assert err < 1e-6, err  # measured: at most 7e-8 over these cases (the float64 floor)
    assert history[-1] == pytest.approx(dpo_min_loss(p, q), abs=1e-12)
    assert history[-1] <= history[0]


def test_closed_form_value_is_the_minimum_and_perturbations_raise_it():
    rng = np.random.default_rng(0)
    n, beta = 12, 0.4
    p, q, ref = zipf(n, 1.2), random_dist(rng, n), random_dist(rng, n)
    z = logits_of(dpo_optimum(p, q, ref, beta))
    best = float(expected_dpo_loss(z, p, q, ref, beta))
    assert best == pytest.approx(dpo_min_loss(p, q), abs=1e-13)
    for _ in range(5):
        bumped = z + 1e-2 * torch.randn(n, dtype=torch.float64, generator=torch.Generator())
        assert float(expected_dpo_loss(bumped, p, q, ref, beta)) > best
    # the minimum depends on neither beta nor pi_ref
    z2 = logits_of(dpo_optimum(p, q, uniform(n), 1.7))
    assert float(expected_dpo_loss(z2, p, q, uniform(n), 1.7)) == pytest.approx(best, abs=1e-13)


def test_tied_pairs_add_log2_times_overlap_and_no_gradient():
    rng = np.random.default_rng(1)
    n, beta = 8, 0.5
    p, q, ref = zipf(n, 1.0), random_dist(rng, n), random_dist(rng, n)
    z = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z.requires_grad_(True)
    full = expected_dpo_loss(z, p, q, ref, beta)
    # the same sum without the tied pairs y_w == y_l, written out
    off_diag = torch.tensor(1.0 - np.eye(n))
    pw = torch.tensor(p)[:, None] * torch.tensor(q)[None, :] * off_diag
    h = beta * (torch.log_softmax(z, 0) - torch.tensor(np.log(ref)))
    manual = (pw * torch.nn.functional.softplus(-(h[:, None] - h[None, :]))).sum()
    assert (full - manual).item() == pytest.approx(math.log(2) * float(p @ q), abs=1e-14)
    g_full = torch.autograd.grad(full, z, retain_graph=True)[0]
    g_manual = torch.autograd.grad(manual, z)[0]
    np.testing.assert_allclose(g_full.numpy(), g_manual.numpy(), atol=1e-15)


def test_closed_form_special_cases_by_hand():
    n = 6
    p, u = zipf(n, 1.0), uniform(n)
    # beta = 1, uniform negatives and reference: the data distribution itself
    np.testing.assert_allclose(dpo_optimum(p, u, u, 1.0), p, atol=1e-15)
    # negatives from the data: no signal, the reference comes back
    ref = normalise(np.arange(1.0, n + 1))
    np.testing.assert_allclose(dpo_optimum(p, p, ref, 0.3), ref, atol=1e-15)
    # two items, p = (3/4, 1/4), beta = 1/2: pi ~ p^2 = (9, 1) / 10
    np.testing.assert_allclose(
        dpo_optimum(np.array([0.75, 0.25]), uniform(2), uniform(2), 0.5), [0.9, 0.1]
    )
    # after SFT (reference = p_D) with uniform negatives: p_D^(1 + 1/beta)
    np.testing.assert_allclose(dpo_optimum(p, u, p, 0.5), normalise(p**3), atol=1e-15)
    # an item without data gets no mass
    assert dpo_optimum(np.array([0.5, 0.5, 0.0]), uniform(3), uniform(3), 0.2)[2] == 0.0
    # beta = 0.1 stays representable: log-space normalisation
    peaked = dpo_optimum(zipf(50, 1.5), uniform(50), zipf(50, 1.5), 0.1)
    assert np.isfinite(peaked).all() and peaked.sum() == pytest.approx(1.0)


def test_small_beta_amplifies_popularity():
    p, u = zipf(20, 1.0), uniform(20)
    heads = [head_mass(dpo_optimum(p, u, u, b), 3, p) for b in [2.0, 1.0, 0.5, 0.1]]
    assert np.all(np.diff(heads) > 0)
    assert heads[1] == pytest.approx(head_mass(p, 3))
    assert heads[-1] > 0.99


# ------------------------------------------------------------------------------------------------
# Result 2: self-play is re-weighted uniform-negative DPO


def test_self_play_loss_is_reweighted_uniform_loss_values_and_gradients():
    rng = np.random.default_rng(2)
    n, beta = 15, 0.1
    p, ref, pi_t, u = zipf(n, 1.0), random_dist(rng, n), random_dist(rng, n), uniform(n)
    for seed in range(3):
        z = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        z.requires_grad_(True)
        a = expected_dpo_loss(z, p, pi_t, ref, beta)
        b = reweighted_loss(z, p, u, pi_t / u, ref, beta)
        (ga,) = torch.autograd.grad(a, z)
        (gb,) = torch.autograd.grad(b, z)
        assert abs((a - b).item()) < 1e-10
        assert float((ga - gb).abs().max()) < 1e-10


def test_gradient_at_reference_is_half_beta_q_minus_p():
    rng = np.random.default_rng(3)
    n, beta = 9, 0.3
    p, q, ref = random_dist(rng, n), random_dist(rng, n), random_dist(rng, n)
    z = logits_of(ref).requires_grad_(True)
    (g,) = torch.autograd.grad(expected_dpo_loss(z, p, q, ref, beta), z)
    np.testing.assert_allclose(g.numpy(), dpo_gradient_at_reference(p, q, beta), atol=1e-15)


# ------------------------------------------------------------------------------------------------
# Result 3: exact self-play dynamics


@pytest.mark.parametrize("beta,lam", [(0.7, 0.0), (1.5, 0.0), (3.0, 0.5), (0.4, 0.2)])
def test_exact_self_play_is_log_linear(beta, lam):
    rng = np.random.default_rng(4)
    p, pi0 = zipf(10, 1.0), random_dist(rng, 10)
    r = self_play_rate(beta, "previous", lam)
    assert r == pytest.approx(1 - lam - 1 / beta)
    for t, pi in enumerate(self_play(p, pi0, beta, 5, sft_weight=lam)):
        np.testing.assert_allclose(pi, normalise(p ** (1 - r**t) * pi0 ** (r**t)), atol=1e-12)


def test_exact_self_play_fixed_point_and_beta_one():
    rng = np.random.default_rng(5)
    p, pi0 = zipf(12, 1.0), random_dist(rng, 12)
    np.testing.assert_allclose(self_play(p, pi0, 1.0, 1)[1], p, atol=1e-15)
    for beta in [0.1, 0.5, 2.0]:  # p_D is a fixed point for every beta (unstable below 1/2)
        for pi in self_play(p, p, beta, 3):
            np.testing.assert_allclose(pi, p, atol=1e-14)
    # while uniform-negative DPO from the same SFT model sharpens the head
    dpo = dpo_optimum(p, uniform(12), p, 0.1)
    assert head_mass(dpo, 3, p) > 0.99 > head_mass(p, 3)


def test_exact_self_play_regimes():
    p, u = zipf(20, 1.0), uniform(20)
    start = normalise(p**3)  # more peaked than the data
    h_p = head_mass(p, 3)
    # beta > 1: monotone, from above, toward p_D
    heads = [head_mass(x, 3, p) for x in self_play(p, start, 2.0, 8)]
    assert np.all(np.diff(heads) < 0) and min(heads) > h_p
    # 1/2 < beta < 1: converges while oscillating around p_D
    pis = self_play(p, start, 0.7, 30)
    signs = np.sign([head_mass(x, 3, p) - h_p for x in pis[:6]])
    assert np.all(signs[:-1] * signs[1:] < 0)
    assert np.abs(pis[-1] - p).max() < 1e-6
    # beta = 1/2: a 2-cycle between uniform and p_D^2
    pis = self_play(p, u, 0.5, 4)
    for t in (0, 2, 4):
        np.testing.assert_allclose(pis[t], u, atol=1e-12)
    for t in (1, 3):
        np.testing.assert_allclose(pis[t], normalise(p**2), atol=1e-12)
    # beta = 0.1 (the paper's): diverges, alternately collapsing onto the head and the tail
    heads = [head_mass(x, 1, p) for x in self_play(p, start, 0.1, 4)]
    tails = [head_mass(x, 1, -p) for x in self_play(p, start, 0.1, 4)]
    assert heads[2] > 0.999 and heads[4] > 0.999  # p^163, p^13123 up to normalisation
    assert tails[1] > 0.5 and tails[3] > 0.999  # p^-17, p^-1457: the least popular item


def test_exact_self_play_fixed_reference():
    p, u = zipf(10, 1.0), uniform(10)
    star = self_play_fixed_point(p, u, 2.0, "fixed")
    np.testing.assert_allclose(star, normalise(p ** (1 / 3)), atol=1e-15)
    np.testing.assert_allclose(self_play(p, u, 2.0, 1, ref="fixed")[1], dpo_optimum(p, u, u, 2.0))
    assert self_play_rate(2.0, "fixed") == -0.5
    # the fixed point maps to itself; from uniform the iteration converges (beta > 1)
    pis = self_play(p, u, 2.0, 40, ref="fixed")
    assert np.abs(pis[-1] - star).max() < 1e-10
    # beta = 1: a 2-cycle
    pis = self_play(p, u, 1.0, 2, ref="fixed")
    np.testing.assert_allclose(pis[2], u, atol=1e-14)
    with pytest.raises(ValueError):
        self_play(p, u, 1.0, 1, ref="fixed", sft_weight=0.5)


def test_exact_uniform_negatives_collapse_on_the_head():
    p = zipf(10, 1.0)
    pis = self_play(p, p, 1.0, 6, negatives="uniform")
    for t, pi in enumerate(pis):
        np.testing.assert_allclose(pi, normalise(p ** (1 + t)), atol=1e-14)
    assert pis[-1][0] > 0.99


# ------------------------------------------------------------------------------------------------
# Result 4: self-play with finite DPO steps


@pytest.mark.parametrize(
    "n,a,beta,c_max,lam",
    [(10, 0.7, 0.1, 0.5, 0.0), (20, 1.0, 0.1, 0.9, 0.0), (20, 1.0, 0.1, 0.5, 0.3),
     (40, 1.5, 0.5, 0.9, 0.0), (20, 1.0, 1.0, 0.2, 0.3)],
)
def test_finite_step_self_play_suppresses_the_head_monotonically(n, a, beta, c_max, lam):
    p = zipf(n, a)
    k = 10
    lr = 2 * (c_max / p.max()) / (k * beta)  # c = k lr beta / 2, with c max p_D = c_max
    start = normalise(p**2)
    heads = [head_mass(x, 3, p) for x in self_play(p, start, beta, 6, sft_weight=lam,
                                                   dpo_steps=k, dpo_lr=lr)]
    assert np.all(np.diff(heads) < 0) and min(heads) > head_mass(p, 3)
    dpo = [head_mass(x, 3, p) for x in self_play(p, p, beta, 6, negatives="uniform",
                                                 dpo_steps=k, dpo_lr=lr)]
    assert np.all(np.diff(dpo) > 0)


def test_sft_step_is_geometric():
    p, u = zipf(5, 1.0), uniform(5)
    np.testing.assert_allclose(sft_step(u, p, 1.0), p, atol=1e-15)
    np.testing.assert_allclose(sft_step(u, p, 0.5), normalise(np.sqrt(p)), atol=1e-15)


def test_greedy_negatives_herd_mode_frequencies_to_the_data():
    p = zipf(20, 1.0)
    k, beta, rounds = 10, 0.1, 200
    lr = 2 * (0.5 / p.max()) / (k * beta)  # c max p_D = 0.5
    for start in (normalise(p**2), p):
        pis = self_play(p, start, beta, rounds, dpo_steps=k, dpo_lr=lr, negatives="greedy")
        freq = np.bincount([int(np.argmax(x)) for x in pis[:-1]], minlength=20) / rounds
        assert np.abs(freq - p).max() < 0.03  # measured: 0.007 and 0.004
        assert max(head_mass(x, 3, p) for x in pis[100:]) < head_mass(p, 3)  # 0.33 vs 0.51
    with pytest.raises(ValueError):
        self_play(p, p, beta, 1, negatives="greedy")
