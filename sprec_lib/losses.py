"""Preference losses as pure functions of sequence log-probabilities (no model, no trainer).

Every argument is the *summed* log-probability of a completion given its prompt, under the policy
being trained (``policy_*``) or the frozen reference (``ref_*``). The implicit reward of a
completion ``y`` is ``r(y) = log pi_theta(y|x) - log pi_ref(y|x)`` and ``beta`` scales it.

* :func:`dpo_loss`: DPO (Rafailov et al., 2023), one rejected completion per prompt.
* :func:`sdpo_loss`: Softmax-DPO (S-DPO, Chen et al., arXiv 2406.09215), ``K`` rejected
  completions per prompt, compared at once through a softmax. SPRec (arXiv 2412.09243) trains
  with the DPO loss, one self-play negative per prompt; S-DPO is its multi-negative counterpart.

Both return one loss per prompt (shape ``[B]``); the trainer takes the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` per example, all inputs of shape ``[B]``."""
    chosen_rewards = policy_chosen_logps - ref_chosen_logps
    rejected_rewards = policy_rejected_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (chosen_rewards - rejected_rewards))


def sdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """S-DPO per example: ``-log sigmoid(-log sum_k exp(beta * (r_k - r_w)))``.

    ``*_chosen_logps`` have shape ``[B]``, ``*_rejected_logps`` ``[B, K]``; ``r_w`` is the chosen
    completion's reward and ``r_k`` the k-th rejected one's. With ``S = sum_k exp(beta (r_k - r_w))``
    the loss is ``log(1 + S)``; we compute ``-logsigmoid(-logsumexp(...))`` so that no ``exp``
    overflows for large margins (not ``softplus``, which torch makes linear past 20, off by
    ``e^-20``). For ``K = 1`` it is :func:`dpo_loss` bit for bit. It does not depend on the order of
    the negatives.
    """
    if policy_rejected_logps.dim() != 2 or policy_rejected_logps.shape != ref_rejected_logps.shape:
        raise ValueError(
            "sdpo_loss: rejected log-probs must both have shape [B, K], got "
            f"{tuple(policy_rejected_logps.shape)} and {tuple(ref_rejected_logps.shape)}"
        )
    chosen_rewards = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_rewards = policy_rejected_logps - ref_rejected_logps  # [B, K]
    log_sum = torch.logsumexp(beta * (rejected_rewards - chosen_rewards.unsqueeze(1)), dim=1)  # [B]
    return -F.logsigmoid(-log_sum)


def dmpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """DMPO (Direct Multi-Preference Optimization, Bai et al., CIKM 2024; arXiv 2405.16127) per example.

    ``*_chosen_logps`` have shape ``[B]``, ``*_rejected_logps`` ``[B, K]``; with rewards
    ``r_w`` (chosen) and ``r_k`` (the k-th rejected completion)::

        reduction="mean" (the DMPO paper):  -log sigmoid(beta * (r_w - (1/K) sum_k r_k))
        reduction="sum"  (flora0110/SPRec's baselines/DMPO/dmpo_trainer.py):
                                            -log sigmoid(beta * sum_k (r_w - r_k))

    Unlike S-DPO (:func:`sdpo_loss`, a softmax over the negatives), the negatives enter through one
    aggregated margin: each negative's reward is pushed down with the same weight, whatever its size.
    The two reductions are the same loss with ``beta`` scaled by ``K`` (``sum`` = ``mean`` at
    ``K * beta``). For ``K = 1`` both are :func:`dpo_loss`.
    """
    if policy_rejected_logps.dim() != 2 or policy_rejected_logps.shape != ref_rejected_logps.shape:
        raise ValueError(
            "dmpo_loss: rejected log-probs must both have shape [B, K], got "
            f"{tuple(policy_rejected_logps.shape)} and {tuple(ref_rejected_logps.shape)}"
        )
    chosen_rewards = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_rewards = policy_rejected_logps - ref_rejected_logps  # [B, K]
    if reduction == "mean":
        margin = chosen_rewards - rejected_rewards.mean(dim=1)
    elif reduction == "sum":
        margin = (chosen_rewards.unsqueeze(1) - rejected_rewards).sum(dim=1)
    else:
        raise ValueError(f"dmpo_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    return -F.logsigmoid(beta * margin)


def smoothed_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    epsilon: torch.Tensor | float,
) -> torch.Tensor:
    """DPO with a per-example label-smoothing factor ``epsilon`` (RosePO's personalised smoothing,
    Liao et al., arXiv 2410.12519; the form of conservative DPO), all inputs of shape ``[B]``::

        -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h),   h = (pc - rc) - (pr - rr)

    ``eps`` is the probability that the preference label is wrong: 0 gives :func:`dpo_loss`, 1/2
    makes the example pull neither way (its gradient at ``h = 0`` is 0), 1 swaps chosen and rejected.
    """
    eps = torch.as_tensor(epsilon, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    if bool(((eps < 0) | (eps > 1) | ~torch.isfinite(eps)).any()):
        raise ValueError(f"smoothed_dpo_loss: epsilon must be in [0, 1], got {epsilon}")
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
