"""RLMRec-Con: profile embeddings projected by an MLP and aligned with the collaborative ones by InfoNCE.

Followed from RLMRec's ``lightgcn_plus.py`` and ``loss_utils.py`` (the contrastive variant, "Con"):

* the projector is ``Linear(d, (d + e) // 2) -> LeakyReLU -> Linear(-> e)`` from the profile
  embedding's size ``d`` to the collaborative size ``e`` (Xavier-uniform weights), applied to every
  user's and item's profile vector at each step;
* the alignment is InfoNCE on cosine similarities at temperature ``kd_temperature``: each batch
  user's collaborative embedding against its own projected profile, over the denominators of *all*
  users' projected profiles; each batch positive and negative item against its own, over the batch's
  positive (respectively negative) items; summed, divided by the batch, times ``kd_weight``
  (computed once per distinct user or item and weighted by its count: the same sum, cheaper).

CLLMR keeps this alignment and swaps the projector for its SSE (:mod:`sprec_lib.cllmr.sse`); the
paper's "SSE replaced by MLP" ablation is this projector inside CLLMR.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPProjector(nn.Module):
    """RLMRec's profile projector (see the module docstring)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        mid = (d_in + d_out) // 2
        self.net = nn.Sequential(nn.Linear(d_in, mid), nn.LeakyReLU(), nn.Linear(mid, d_out))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(1e-8 + x.square().sum(-1, keepdim=True))  # RLMRec's normalisation


class _LogSumExpOfProducts(torch.autograd.Function):
    """``logsumexp(a @ c.T + shift, dim=-1)`` as one autograd node. torch's own chain keeps the
    [batch, candidates] logits for ``logsumexp``'s backward, then recomputes ``exp(x - lse)`` there
    and allocates a fresh matrix at each step; these element-wise passes and allocations over the
    matrix, not the matmuls' FLOPs, are most of an RLMRec-Con step on a CPU (ML-1M: 2,384 distinct
    users x 6,034 candidates a step). Here the exponentials are taken in place, kept from the forward
    pass, and turned into the gradient in place. ``shift``: a constant per candidate (no gradient)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        e = a @ c.T
        if shift is not None:
            e.add_(shift)
        top = e.amax(-1, keepdim=True)
        e.sub_(top).exp_()
        total = e.sum(-1, keepdim=True)
        ctx.save_for_backward(a, c, e, total)
        return (top + total.log()).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, c, e, total = ctx.saved_tensors
        softmax_grad = e.mul_(grad.unsqueeze(-1) / total)  # e is not needed again (one backward)
        need_a, need_c, _ = ctx.needs_input_grad
        return softmax_grad @ c if need_a else None, softmax_grad.T @ a if need_c else None, None


def infonce(anchors: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor, temperature: float,
            anchor_counts: torch.Tensor | None = None, candidate_counts: torch.Tensor | None = None,
            fused: bool = True) -> torch.Tensor:
    """RLMRec's ``cal_infonce_loss``: ``sum_b [-cos(a_b, p_b)/t + log sum_c exp(cos(a_b, c)/t)]``.

    ``anchor_counts`` / ``candidate_counts``: how many times each (distinct) row stands for itself
    in the batch: a row's term is counted that many times, a candidate's ``exp`` too (``+ log n``
    inside the log-sum-exp). Equal to the sum over the rows with their repeats, at a fraction of
    the cost when a batch repeats users and items (:func:`alignment_loss`).

    ``fused`` (default): ``1/t`` folded into the unit anchors before the matmul (no division of
    the logits matrix, forward or backward) and :class:`_LogSumExpOfProducts`; the same value and gradients
    as the plain formula (``fused=False``) to float rounding, about 2x faster on ML-1M's shapes
    (``benchmarks/cllmr_cost.py``, side by side)."""
    a, p, c = _unit(anchors), _unit(positives), _unit(candidates)
    shift = None if candidate_counts is None else torch.log(candidate_counts.to(a.dtype))
    if fused:
        a = a / temperature
        terms = -(a * p).sum(-1) + _LogSumExpOfProducts.apply(a, c, shift)
    else:
        logits = a @ c.T / temperature
        terms = -(a * p).sum(-1) / temperature + torch.logsumexp(logits if shift is None else logits + shift, dim=-1)
    return (terms * anchor_counts).sum() if anchor_counts is not None else terms.sum()


def alignment_loss(user_cf: torch.Tensor, item_cf: torch.Tensor, user_side: torch.Tensor, item_side: torch.Tensor,
                   users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, temperature: float,
                   user_candidates: str = "all", fused: bool = True) -> torch.Tensor:
    """The three InfoNCE terms of RLMRec-Con on a batch, summed and divided by the batch (before
    ``kd_weight``): batch users against all users' side representations (``user_candidates="all"``,
    RLMRec; ``"batch"``: the batch's users only, cheaper), positives against the batch's positives,
    negatives against the batch's negatives. ``*_cf`` / ``*_side``: every user's and item's
    representations; each distinct row is computed once and weighted by its count (exact).
    ``fused``: see :func:`infonce`."""
    uu, u_count = torch.unique(users, return_counts=True)
    total = infonce(user_cf[uu], user_side[uu], user_side if user_candidates == "all" else user_side[uu], temperature,
                    anchor_counts=u_count, candidate_counts=None if user_candidates == "all" else u_count, fused=fused)
    for items in (pos, negs):
        ii, i_count = torch.unique(items, return_counts=True)
        total = total + infonce(item_cf[ii], item_side[ii], item_side[ii], temperature, i_count, i_count, fused=fused)
    return total / len(users)
