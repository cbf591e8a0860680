"""Why DPO amplifies popularity and what self-play does about it: SPRec sections 4.1-4.2, App. A.

Everything lives on a toy catalogue of ``n`` items for one context ``x``, so a policy is just a
probability vector ``pi`` over the items (a tabular softmax ``pi = softmax(logits)`` that can
represent any distribution with full support).

Setting
-------
``p_D``    the data distribution of positives (skewed: ``zipf(n, a)``, ``p_D(i) ~ (i+1)^-a``)
``q``      the distribution negatives are drawn from (uniform in the paper's DPO baseline)
``pi_ref`` the DPO reference policy (uniform, or ``p_D`` as after a converged SFT)
``beta``   the DPO temperature.

With the implicit reward ``h(y) = beta * log(pi(y) / pi_ref(y))`` the expected DPO loss over
pairs ``y_w ~ p_D``, ``y_l ~ q`` drawn independently is::

    L(pi) = sum_{w,l} p_D(w) q(l) * -log sigmoid(h(w) - h(l))

Ties ``w == l`` are kept, as the expectation keeps them: ``h(w) - h(l) = 0`` there, so they add
the constant ``log(2) * sum_y p_D(y) q(y)`` and nothing to the gradient.

Result 1 (the DPO optimum, exact). Take ``q > 0`` and ``pi_ref > 0`` everywhere. Group the two
ordered pairs of items ``{j, k}``: with ``a = p_D(j) q(k)`` and ``b = p_D(k) q(j)`` they
contribute ``-a log sigmoid(d) - b log sigmoid(-d)``, ``d = h(j) - h(k)``, which is minimised
exactly at ``sigmoid(d) = a / (a + b)`` (the Bradley-Terry fit), i.e.
``d = log(p_D(j)/q(j)) - log(p_D(k)/q(k))``. One ``h`` attains every pair's minimum at once,
``h = log(p_D / q) + const``, so it minimises the sum, and ``h = beta log(pi/pi_ref)`` gives::

    pi*(y) = pi_ref(y) * (p_D(y) / q(y))^(1/beta) / Z                              (dpo_optimum)

The loss is convex in the logits (it is a sum of convex functions of logit differences) and
strictly so up to the irrelevant constant shift, so ``pi*`` is the unique minimiser. Its value,
``L* = sum_{j,k} a_jk log(1 + a_kj / a_jk)`` with ``a_jk = p_D(j) q(k)`` (``dpo_min_loss``), does
not depend on ``beta`` or ``pi_ref``: they only choose *which* policy attains it. So the closed
form of section 4.1 (Appendix A reaches it via the Bradley-Terry optimum) is the exact minimiser
of the expected loss as written; ``optimise_dpo`` finds the same policy numerically (L-BFGS in
float64: max abs error at most 7e-8 in our sweeps, the ``sqrt(eps)`` floor of a float64 loss). The
qualifications are the usual population ones: infinite pairs, a policy that can represent any
``pi``; items with ``p_D(y) = 0`` get ``pi*(y) = 0``, an infimum that finite logits only approach;
and if ``q(y) = 0`` where ``p_D(y) > 0`` there is no minimiser at all (``h(y)`` runs off).

Readings: ``q`` and ``pi_ref`` uniform give ``pi* ~ p_D^(1/beta)``, so ``beta < 1`` sharpens the
popularity skew (the public code's ``beta = 0.1``, the paper's text only asking ``0 < beta < 1``,
raises it to the 10th power); after SFT
(``pi_ref = p_D``, the maximum-likelihood optimum ``sft_optimum``) it is ``p_D^(1 + 1/beta)``.
``beta = 1`` with uniform ``q`` and ``pi_ref`` gives back ``p_D``; ``q = p_D`` gives ``pi_ref``.

Result 2 (self-play is re-weighted DPO). With negatives from the current model ``pi_t``::

    E_{p_D x pi_t}[loss] = E_{p_D x q}[ (pi_t(y_l) / q(y_l)) * loss ]      (reweighted_loss)

a uniform-negative DPO whose pairs weigh ``n * pi_t(y_l)``: pairs whose negative the model
over-recommends count more. The weights are constants (no gradient flows through ``pi_t``), so
values and gradients agree. By Result 1 the optimum is ``pi_ref * (p_D / pi_t)^(1/beta) / Z``.

Result 3 (self-play dynamics with the exact optimum each iteration, ``self_play``). Write
``l_t = log pi_t`` up to a constant and ``e_t = l_t - log p_D``. Every variant below is linear in
``l_t``: ``e_{t+1} = r * e_t`` (up to a constant), hence ``pi_t ~ p_D^(1 - r^t) * pi_0^(r^t)``.

* ``ref="previous"``: the reference is this iteration's SFT model, as in SPRec's public code
  (negatives come from ``pi_t``, then SFT, then DPO from and against the SFT model). SFT is
  modelled as a geometric step toward the data, ``sft(pi) ~ pi^(1-lam) p_D^lam`` (``lam =
  sft_weight``; 0: no SFT, ``pi_ref = pi_t``; 1: SFT converged, ``pi_ref = p_D``). Then
  ``r = 1 - lam - 1/beta`` and the fixed point is ``p_D`` (``self_play_rate``). With ``lam = 0``:
  ``beta > 1`` converges monotonically (log-linear interpolation from ``pi_0`` to ``p_D``);
  ``beta = 1`` lands on ``p_D`` in one step; ``1/2 < beta < 1`` converges while oscillating
  around ``p_D``; ``beta = 1/2`` is a 2-cycle; ``beta < 1/2`` diverges, alternately collapsing
  onto the head and onto the tail (``beta = 0.1``: ``r = -9``). SFT does not stabilise it:
  convergence needs ``beta > 1 / (2 - lam)``, and ``lam > 0`` makes even ``beta = 1`` oscillate.
* ``ref="fixed"``: ``pi_ref = pi_0`` throughout: ``r = -1/beta``, fixed point
  ``pi_inf ~ (pi_0^beta p_D)^(1/(1+beta))`` (flatter than ``p_D`` when ``pi_0`` is uniform),
  reached only for ``beta > 1``, always oscillating.
* ``negatives="uniform"`` (iterated DPO baseline, reference = previous model): ``pi_t ~ pi_0 *
  (p_D/q)^(t/beta)``, which collapses onto the most popular item for every ``beta``.

So, at the exact optimum, self-play removes DPO's amplification (its fixed point is ``p_D``, not
``p_D^(1/beta)``; ``pi_0 = p_D`` stays put while DPO sharpens it), but it is not a flattening
beyond the data, and at the public code's ``beta = 0.1`` the exact-optimum iteration is unstable.

Result 4 (finite DPO steps, ``self_play(..., dpo_steps=k, dpo_lr=lr)``). SPRec trains one short
epoch per round, far from the optimum. At the reference (``h = 0``) the gradient of ``L`` in the
logits is exactly ``(beta/2) (q - p_D)`` (``dpo_gradient_at_reference``): linear in the
probabilities, not in their logs. So ``k`` small gradient steps from the reference move the
logits by about ``c (p_D - q)``, ``c = k lr beta / 2``. With ``q = pi_t`` this is a
multiplicative-weights step ``pi_{t+1} ~ sft(pi_t) exp(c (p_D - pi_t))`` with fixed point
``p_D``; linearised, item ``y``'s log error shrinks by about ``1 - lam - c p_D(y)`` (centred): the
over-recommended head is corrected fastest, the tail slowly, and here (unlike at the exact
optimum) a partial SFT step speeds convergence. With uniform negatives it is ``pi_{t+1} ~
pi_t exp(c (p_D - 1/n))``: the head keeps growing. Checked numerically (and in the tests) on
Zipf catalogues (n = 10..40, a = 0.7..1.5, beta = 0.1..1, start ``pi_0 ~ p_D^s``, s = 1.5, 3): for
``lam + c max p_D`` up to 0.9 the head mass falls strictly every round and stays above ``p_D``'s,
while uniform negatives raise it every round. Beyond about 1 that is no longer guaranteed
(n = 20, a = 1, beta = 0.1, 10 steps: monotone up to ``c max p_D = 1.7``, oscillating but
converging at 1.8..2.2, a persistent oscillation at 3). This is the toy's reading of why SPRec
can work at ``beta = 0.1``: each round is a small step, not the optimum.

Result 5 (greedy negatives, ``negatives="greedy"``). SPRec's public code decodes its negatives
greedily (temperature 0), so for one context the negative is always the mode of ``pi_t``, not a
sample. Then ``q`` is a point mass, the expected loss has no minimiser (Result 1's last caveat),
and only finite steps make sense: ``logits_{t+1} ~ logits_t + c (p_D - onehot(mode_t))``. Summed
over rounds this is herding: the logits move by ``c (T p_D - counts_T)``, so the *frequency*
with which each item is the mode tracks ``p_D``, while ``pi_t`` itself never settles and keeps its
top logits near-tied. In our runs (no SFT, 200 rounds, n = 10..20) the mode frequencies were
within 0.03 of ``p_D``, and for small steps (``c max p_D <= 0.5``) ``pi_t`` stayed flatter than
``p_D`` (head mass below ``p_D``'s in every late round); larger steps make it swing. With many
contexts (users), greedy decoding spreads over each user's modes and this single-context picture
is only a caricature.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "zipf",
    "uniform",
    "dpo_optimum",
    "sft_optimum",
    "sft_step",
    "expected_dpo_loss",
    "reweighted_loss",
    "dpo_min_loss",
    "dpo_gradient_at_reference",
    "optimise_dpo",
    "self_play_rate",
    "self_play_fixed_point",
    "self_play",
    "head_mass",
    "entropy",
]

Array = np.ndarray


# ----------------------------------------------------------------------------------------------
# distributions


def zipf(n: int, a: float = 1.0) -> Array:
    """Zipf popularity ``p(i) ~ (i + 1)^-a`` over ``n`` items, most popular first."""
    w = (np.arange(n) + 1.0) ** -a
    return w / w.sum()


def uniform(n: int) -> Array:
    """The uniform distribution over ``n`` items."""
    return np.full(n, 1.0 / n)


def _log(p: Array) -> Array:
    """Elementwise log with ``log 0 = -inf`` and no warning."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p)


def _log_normalise(log_w: Array) -> Array:
    """Log-probabilities from unnormalised log-weights (logsumexp); ``-inf`` entries stay."""
    log_w = np.asarray(log_w, dtype=np.float64)
    m = log_w.max()
    return log_w - (m + np.log(np.exp(log_w - m).sum()))


def _softmax(log_w: Array) -> Array:
    """Normalise unnormalised log-weights stably; ``-inf`` entries get 0."""
    return np.exp(_log_normalise(log_w))


def dpo_optimum(p_data: Array, q: Array, pi_ref: Array, beta: float) -> Array:
    """The exact minimiser of ``expected_dpo_loss``: ``pi_ref * (p_data / q)^(1/beta)``, normalised.

    Computed in log space, so very peaked optima (small ``beta``) stay representable; items
    with ``p_data = 0`` get probability 0 (the infimum).
    """
    return np.exp(_log_dpo_optimum(_log(p_data), _log(q), _log(pi_ref), beta))


def _log_dpo_optimum(log_p: Array, log_q: Array, log_ref: Array, beta: float) -> Array:
    """``log dpo_optimum`` from log-probabilities, normalised with logsumexp."""
    return _log_normalise(log_ref + (log_p - log_q) / beta)


def sft_optimum(p_data: Array) -> Array:
    """The optimum of SFT (maximum likelihood, i.e. forward KL to the data): ``p_data`` itself."""
    return np.asarray(p_data, dtype=np.float64).copy()


def sft_step(pi: Array, p_data: Array, weight: float) -> Array:
    """A partial SFT, modelled as a geometric step toward the data: ``pi^(1-w) p_data^w``."""
    return _softmax((1.0 - weight) * _log(pi) + weight * _log(p_data))


# ----------------------------------------------------------------------------------------------
# the expected DPO loss (torch, so it can be differentiated)


def _pair_losses(logits: torch.Tensor, pi_ref: Array, beta: float) -> torch.Tensor:
    """``M[w, l] = -log sigmoid(h(w) - h(l))`` with ``h = beta * log(softmax(logits) / pi_ref)``."""
    log_ref = torch.as_tensor(_log(pi_ref), dtype=logits.dtype)
    h = beta * (torch.log_softmax(logits, dim=0) - log_ref)
    return F.softplus(-(h[:, None] - h[None, :]))  # -log sigmoid(x) = softplus(-x)


def expected_dpo_loss(
    logits: torch.Tensor, p_data: Array, q: Array, pi_ref: Array, beta: float
) -> torch.Tensor:
    """``E_{y_w ~ p_data, y_l ~ q} -log sigmoid(h(y_w) - h(y_l))``, ``h = beta log(pi / pi_ref)``.

    ``pi = softmax(logits)``; the sum runs over all ordered pairs, ties ``y_w == y_l`` included.
    """
    p = torch.as_tensor(p_data, dtype=logits.dtype)
    qq = torch.as_tensor(q, dtype=logits.dtype)
    return (p[:, None] * qq[None, :] * _pair_losses(logits, pi_ref, beta)).sum()


def reweighted_loss(
    logits: torch.Tensor, p_data: Array, q: Array, weights: Array, pi_ref: Array, beta: float
) -> torch.Tensor:
    """DPO with negatives from ``q`` and each pair weighted by ``weights[y_l]`` (constants).

    With ``weights = pi_t / q`` this equals ``expected_dpo_loss(..., q=pi_t, ...)``: self-play.
    """
    p = torch.as_tensor(p_data, dtype=logits.dtype)
    qw = torch.as_tensor(np.asarray(q) * np.asarray(weights), dtype=logits.dtype)
    return (p[:, None] * qw[None, :] * _pair_losses(logits, pi_ref, beta)).sum()


def dpo_min_loss(p_data: Array, q: Array) -> float:
    """The minimum of the expected DPO loss: ``sum_{j,k} a_jk log(1 + a_kj / a_jk)``, ``a = p x q``.

    Independent of ``beta`` and ``pi_ref``; ties contribute ``log 2 * sum p_data q``.
    """
    a = np.outer(p_data, q)  # a[j, k] = p_D(j) q(k): the weight of the ordered pair (j, k)
    safe = np.where(a > 0, a, 1.0)
    return float(np.where(a > 0, a * np.log1p(a.T / safe), 0.0).sum())


def dpo_gradient_at_reference(p_data: Array, q: Array, beta: float) -> Array:
    """The gradient of ``expected_dpo_loss`` in the logits at ``pi = pi_ref``: ``beta/2 (q - p_D)``.

    There ``h = 0``, every sigmoid is 1/2 and the pair terms telescope to ``q(y) - p_D(y)``.
    """
    return 0.5 * beta * (np.asarray(q, dtype=np.float64) - np.asarray(p_data, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# numeric optimisation


def optimise_dpo(
    p_data: Array,
    q: Array,
    pi_ref: Array,
    beta: float,
    steps: int = 200,
    lr: float = 1.0,
    seed: int | None = 0,
    method: Literal["lbfgs", "adam", "gd"] = "lbfgs",
    init: Array | None = None,
) -> tuple[Array, Array]:
    """Minimise ``expected_dpo_loss`` over the policy's logits in float64.

    Starts from ``init`` logits, else from ``log pi_ref`` (where DPO training starts) plus
    standard normal noise drawn from ``seed`` (``seed=None``: no noise; the loss is convex, so
    the start does not change the answer). ``method``: ``"lbfgs"`` (strong-Wolfe line search;
    converges to the float64 floor in tens of iterations), ``"adam"``, or ``"gd"`` (plain
    gradient descent, the finite-step model of ``self_play``). Returns ``(pi, loss_history)``,
    the loss before each step and after the last.
    """
    logits0 = _log(pi_ref) if init is None else np.asarray(init, dtype=np.float64)
    z = torch.tensor(logits0, dtype=torch.float64)
    if init is None and seed is not None:
        g = torch.Generator().manual_seed(seed)
        z = z + torch.randn(z.shape, generator=g, dtype=torch.float64)
    z.requires_grad_(True)

    def loss() -> torch.Tensor:
        return expected_dpo_loss(z, p_data, q, pi_ref, beta)

    if method == "lbfgs":
        opt = torch.optim.LBFGS(
            [z], lr=lr, max_iter=1, max_eval=25, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=0.0, tolerance_change=0.0,
        )
    elif method == "adam":
        opt = torch.optim.Adam([z], lr=lr)
    elif method == "gd":
        opt = torch.optim.SGD([z], lr=lr)
    else:
        raise ValueError(f"unknown method {method!r}")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    history = []
    for _ in range(steps):
        history.append(float(opt.step(closure).detach()))
    with torch.no_grad():
        history.append(float(loss()))
        pi = torch.softmax(z, dim=0).numpy()
    return pi, np.array(history)


# ----------------------------------------------------------------------------------------------
# self-play (section 4.2)


def self_play_rate(
    beta: float, ref: Literal["previous", "fixed"] = "previous", sft_weight: float = 0.0
) -> float:
    """The factor ``r`` of ``log pi_{t+1} - log p_* = r (log pi_t - log p_*)`` (exact optimum).

    ``ref="previous"``: ``1 - sft_weight - 1/beta``; ``ref="fixed"``: ``-1/beta``. The iteration
    converges iff ``|r| < 1``, monotonically iff also ``r >= 0``.
    """
    return (1.0 - sft_weight - 1.0 / beta) if ref == "previous" else -1.0 / beta


def self_play_fixed_point(
    p_data: Array, pi_0: Array, beta: float, ref: Literal["previous", "fixed"] = "previous"
) -> Array:
    """The fixed point of exact self-play without SFT.

    ``p_data`` for ``ref="previous"``; ``(pi_0^beta p_data)^(1/(1+beta))`` for ``ref="fixed"``.
    """
    if ref == "previous":
        return sft_optimum(p_data)
    return _softmax((beta * _log(pi_0) + _log(p_data)) / (1.0 + beta))


def self_play(
    p_data: Array,
    pi_0: Array,
    beta: float,
    iterations: int,
    ref: Literal["previous", "fixed"] = "previous",
    sft_weight: float = 0.0,
    negatives: Literal["self", "uniform", "greedy"] = "self",
    dpo_steps: int | None = None,
    dpo_lr: float = 1.0,
) -> list[Array]:
    """Simulate ``iterations`` rounds of SPRec on the toy catalogue; returns ``[pi_0, ..., pi_T]``.

    Round ``t``: negatives are drawn from ``pi_t`` (``negatives="self"``), are its mode
    (``"greedy"``, as SPRec's code decodes them; finite steps only) or are uniform (iterated DPO
    baseline); the reference is ``sft_step(pi_t, p_data, sft_weight)`` (``ref="previous"``) or
    ``pi_0`` (``ref="fixed"``, no SFT); the DPO step is the exact optimum (``dpo_steps=None``)
    or ``dpo_steps`` plain gradient steps of size ``dpo_lr`` on the expected loss, started at
    the reference as DPO training is.
    """
    if ref == "fixed" and sft_weight:
        raise ValueError("sft_weight applies to ref='previous' only")
    if negatives == "greedy" and dpo_steps is None:
        raise ValueError("greedy negatives leave the expected loss without a minimiser")
    # The state is log pi_t: the exact iteration can leave float64's range of probabilities.
    log_p = _log(p_data)
    logs = [_log_normalise(_log(pi_0))]
    for _ in range(iterations):
        log_pi = logs[-1]
        if negatives == "self":
            log_q = log_pi
        elif negatives == "uniform":
            log_q = _log(uniform(len(log_pi)))
        elif negatives == "greedy":
            log_q = np.where(np.arange(len(log_pi)) == np.argmax(log_pi), 0.0, -np.inf)
        else:
            raise ValueError(f"unknown negatives {negatives!r}")
        if ref == "previous":
            log_ref = _log_normalise((1.0 - sft_weight) * log_pi + sft_weight * log_p)
        else:
            log_ref = logs[0]
        if dpo_steps is None:
            logs.append(_log_dpo_optimum(log_p, log_q, log_ref, beta))
        else:
            pi, _ = optimise_dpo(
                p_data, np.exp(log_q), np.exp(log_ref), beta, dpo_steps, dpo_lr, None, "gd"
            )
            logs.append(_log(pi))
    return [np.exp(log_pi) for log_pi in logs]


# ----------------------------------------------------------------------------------------------
# summaries


def head_mass(pi: Array, k: int, popularity: Array | None = None) -> float:
    """The mass ``pi`` puts on the ``k`` items ranked first by ``popularity`` (default: ``pi``)."""
    pi = np.asarray(pi, dtype=np.float64)
    order = np.argsort(-(pi if popularity is None else np.asarray(popularity)), kind="stable")
    return float(pi[order[:k]].sum())


def entropy(pi: Array) -> float:
    """Shannon entropy in nats (``0 log 0 = 0``)."""
    pi = np.asarray(pi, dtype=np.float64)
    nz = pi[pi > 0]
    return float(-(nz * np.log(nz)).sum())
