"""Tests for sprec_lib.losses: hand-worked values, DPO as S-DPO with one negative, gradients, stability."""

from __future__ import annotations

import math

import pytest
import torch

from sprec_lib.losses import dpo_loss, sdpo_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_hand_computed():
    # chosen reward  r_w = -1.0 - (-1.5) = 0.5;  rejected reward r_l = -2.0 - (-1.5) = -0.5
    # beta * (r_w - r_l) = 0.5 * 1.0 = 0.5;  loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077...
    loss = dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.5)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-12)
    assert loss.item() == pytest.approx(0.4740769841801067, abs=1e-12)


def test_sdpo_hand_computed():
    # r_w = -1 - (-1) = 0; r_1 = -2 - (-1) = -1; r_2 = -3 - (-1) = -2; beta = 1
    # S = e^(r_1 - r_w) + e^(r_2 - r_w) = e^-1 + e^-2 = 0.367879 + 0.135335 = 0.503215
    # loss = -log sigmoid(-log S) = log(1 + S) = log(1.503215) = 0.407606...
    loss = sdpo_loss(t(-1.0), t(-2.0, -3.0)[None], t(-1.0), t(-1.0, -1.0)[None], beta=1.0)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-12)
    assert loss.item() == pytest.approx(0.40760596444438, abs=1e-12)
    # beta = 0.1 scales the rewards: S = e^-0.1 + e^-0.2 = 0.904837 + 0.818731 = 1.723568, log(2.723568)
    loss = sdpo_loss(t(-1.0), t(-2.0, -3.0)[None], t(-1.0), t(-1.0, -1.0)[None], beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.1) + math.exp(-0.2)), abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 20])
def test_sdpo_equal_rewards_is_log_k_plus_one(k):
    # policy == reference: every r = 0, S = K, loss = log(1 + K) (the loss at the start of training)
    pc, pr = torch.randn(4, dtype=torch.float64), torch.randn(4, k, dtype=torch.float64)
    loss = sdpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    torch.testing.assert_close(loss, torch.full((4,), math.log(1 + k), dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdpo_with_one_negative_is_dpo(dtype):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=dtype) * 5 for _ in range(4))
    for beta in (0.1, 1.0, 3.0):
        expected = dpo_loss(pc, pr, rc, rr, beta)
        got = sdpo_loss(pc, pr[:, None], rc, rr[:, None], beta)
        assert torch.equal(got, expected)  # bit for bit


def test_sdpo_permutation_invariant_over_negatives():
    g = torch.Generator().manual_seed(1)
    pc, rc = torch.randn(8, generator=g), torch.randn(8, generator=g)
    pr, rr = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    base = sdpo_loss(pc, pr, rc, rr, 0.5)
    for _ in range(3):
        perm = torch.randperm(5, generator=g)
        torch.testing.assert_close(sdpo_loss(pc, pr[:, perm], rc, rr[:, perm], 0.5), base)


def test_sdpo_rows_are_independent():
    g = torch.Generator().manual_seed(2)
    pc, rc = torch.randn(6, generator=g), torch.randn(6, generator=g)
    pr, rr = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    whole = sdpo_loss(pc, pr, rc, rr, 0.2)
    for i in range(6):
        torch.testing.assert_close(sdpo_loss(pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], 0.2), whole[i : i + 1])


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    inputs = (
        torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda a, b, c, d: sdpo_loss(a, b, c, d, 0.7), inputs)
    pairs = tuple(x[:, 0].detach().clone().requires_grad_() if x.dim() == 2 else x for x in inputs)
    assert torch.autograd.gradcheck(lambda a, b, c, d: dpo_loss(a, b, c, d, 0.7), pairs)


def test_sdpo_gradient_pushes_chosen_up_and_negatives_down():
    pc = torch.zeros(1, requires_grad=True)
    pr = torch.zeros(1, 3, requires_grad=True)
    sdpo_loss(pc, pr, torch.zeros(1), torch.zeros(1, 3), 1.0).sum().backward()
    # d/d r_w log(1 + sum_k e^(r_k - r_w)) = -S / (1 + S) = -3/4;  d/d r_k = e^(r_k - r_w) / (1 + S) = 1/4
    torch.testing.assert_close(pc.grad, torch.tensor([-0.75]))
    torch.testing.assert_close(pr.grad, torch.full((1, 3), 0.25))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_margins_are_finite(dtype):
    big = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    zeros = torch.zeros(3, dtype=dtype)
    # chosen far above every negative: loss -> 0; far below: loss ~ beta * (r_k - r_w), linear, finite
    pr = torch.stack([-big, -big, -big], dim=1)
    loss = sdpo_loss(big, pr, zeros, torch.zeros(3, 3, dtype=dtype), 1.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[1].item() == pytest.approx(2e4 + math.log(3), rel=1e-2)
    assert loss[2].item() == pytest.approx(math.log(4), rel=1e-2)
    dpo = dpo_loss(big, -big, zeros, zeros, 1.0)
    assert torch.isfinite(dpo).all()
    x = torch.tensor([5e3, -5e3], requires_grad=True)
    sdpo_loss(x, -x[:, None].expand(2, 2), torch.zeros(2), torch.zeros(2, 2), 1.0).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_sdpo_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        sdpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1)


# -- DMPO (Bai et al., CIKM 2024) -------------------------------------------------------------------
from sprec_lib.losses import dmpo_loss


def test_dmpo_hand_computed():
    # r_w = -1.0 - (-1.5) = 0.5;  r_1 = -2.0 - (-1.5) = -0.5;  r_2 = -3.0 - (-2.0) = -1.0
    # mean: margin = 0.5 - (-0.75) = 1.25; beta * margin = 0.625; loss = log(1 + e^-0.625)
    # sum:  margin = (0.5 + 0.5) + (0.5 + 1.0) = 2.5;  beta * margin = 1.25;  loss = log(1 + e^-1.25)
    args = (t(-1.0), t(-2.0, -3.0)[None], t(-1.5), t(-1.5, -2.0)[None])
    assert dmpo_loss(*args, beta=0.5).item() == pytest.approx(math.log(1 + math.exp(-0.625)), abs=1e-12)
    assert dmpo_loss(*args, beta=0.5, reduction="sum").item() == pytest.approx(math.log(1 + math.exp(-1.25)), abs=1e-12)
    assert dmpo_loss(*args, beta=0.5).item() == pytest.approx(0.42870068, abs=1e-8)


def test_dmpo_is_dpo_with_one_negative_and_sum_is_mean_at_k_beta():
    g = torch.Generator().manual_seed(1)
    pc, rc = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    pr, rr = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(dmpo_loss(pc, pr[:, :1], rc, rr[:, :1], 0.3, reduction), dpo_loss(pc, pr[:, 0], rc, rr[:, 0], 0.3))
    torch.testing.assert_close(dmpo_loss(pc, pr, rc, rr, 0.3, "sum"), dmpo_loss(pc, pr, rc, rr, 0.9, "mean"))
    # not S-DPO's softmax: with three negatives they differ
    assert not torch.allclose(dmpo_loss(pc, pr, rc, rr, 0.3), sdpo_loss(pc, pr, rc, rr, 0.3))
    # the order of the negatives does not matter
    torch.testing.assert_close(dmpo_loss(pc, pr.flip(1), rc, rr.flip(1), 0.3), dmpo_loss(pc, pr, rc, rr, 0.3))


def test_dmpo_gradient_weighs_every_negative_alike():
    pc = torch.zeros(1, requires_grad=True)
    pr = torch.tensor([[0.0, 5.0, -5.0]], requires_grad=True)
    rr = torch.tensor([[0.0, 5.0, -5.0]])  # every reward 0: margin 0, loss log 2
    loss = dmpo_loss(pc, pr, torch.zeros(1), rr, 1.0)
    assert loss.item() == pytest.approx(math.log(2))
    loss.sum().backward()
    # d/d r_w -log sigmoid(m) = -sigmoid(-m) = -1/2;  d/d r_k = +1/2 * 1/K = 1/6 for each negative
    torch.testing.assert_close(pc.grad, torch.tensor([-0.5]))
    torch.testing.assert_close(pr.grad, torch.full((1, 3), 1 / 6))


def test_dmpo_is_finite_for_large_margins_and_rejects_bad_input():
    big = torch.tensor([1e4, -1e4])
    loss = dmpo_loss(big, -big[:, None].expand(2, 2), torch.zeros(2), torch.zeros(2, 2), 1.0)
    assert torch.isfinite(loss).all() and loss[0].item() == pytest.approx(0.0) and loss[1].item() == pytest.approx(2e4)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        dmpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="reduction"):
        dmpo_loss(torch.zeros(1), torch.zeros(1, 2), torch.zeros(1), torch.zeros(1, 2), 0.1, reduction="max")


# -- RosePO's personalised smoothing ------------------------------------------------------------------
from sprec_lib.losses import smoothed_dpo_loss


def test_smoothed_dpo_hand_computed():
    # h = (-1.0 + 1.5) - (-2.0 + 1.5) = 1.0; beta * h = 0.5
    # eps 0.2: 0.8 * log(1 + e^-0.5) + 0.2 * log(1 + e^0.5) = 0.8 * 0.474077 + 0.2 * 0.974077
    # eps 0 (DPO): 0.474077;  eps 0.5: (0.474077 + 0.974077) / 2
    args = (t(-1.0, -1.0, -1.0), t(-2.0, -2.0, -2.0), t(-1.5, -1.5, -1.5), t(-1.5, -1.5, -1.5))
    got = smoothed_dpo_loss(*args, beta=0.5, epsilon=t(0.2, 0.0, 0.5))
    lo, hi = math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(0.5))
    torch.testing.assert_close(got, t(0.8 * lo + 0.2 * hi, lo, (lo + hi) / 2))
    assert got[0].item() == pytest.approx(0.574077, abs=1e-6)
    torch.testing.assert_close(smoothed_dpo_loss(*args, beta=0.5, epsilon=0.0), dpo_loss(*args, beta=0.5))


def test_smoothed_dpo_gradient_and_range():
    h = torch.zeros(3, requires_grad=True)
    eps = torch.tensor([0.0, 0.25, 0.5])
    smoothed_dpo_loss(h, torch.zeros(3), torch.zeros(3), torch.zeros(3), 1.0, eps).sum().backward()
    # d/dh at h = 0: -(1 - eps) / 2 + eps / 2 = eps - 1/2
    torch.testing.assert_close(h.grad, eps - 0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="epsilon"):
            smoothed_dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 1.0, bad)
