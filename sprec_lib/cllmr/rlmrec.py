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


# The blocked log-sum-exp's block: this many logits (2 MiB of float32) a block, so that a block
# stays in cache between the matmul that makes it and the passes that use it (measured on ML-1M's
# 2,400 x 6,034 user term, one thread: the three terms forward and backward 155 ms in one block,
# 118 / 122 / 131 ms in blocks of 2^18 / 2^19 / 2^20).
BLOCK_ELEMENTS = 2**19
# The max-shift is skipped when every |logit| is provably at most this: exp(+-50) and a sum of up to
# 10^15 of them stay far inside float32's range (no overflow, no underflow to 0); not in half precision.
_UNSHIFTED_BOUND = 50.0


class _LogSumExpOfProducts(torch.autograd.Function):
    """``logsumexp(a @ c.T + shift, dim=-1)`` as one autograd node. torch's own chain keeps the
    [batch, candidates] logits for ``logsumexp``'s backward, then recomputes ``exp(x - lse)`` there
    and allocates a fresh matrix at each step; these element-wise passes and allocations over the
    matrix, not the matmuls' FLOPs, are most of an RLMRec-Con step on a CPU (ML-1M: 2,384 distinct
    users x 6,034 candidates a step). Here the exponentials are taken in place, kept from the forward
    pass, and turned into the gradient in place. ``shift``: a constant per candidate (no gradient).

    ``rows`` (None: the whole matrix at once, as first written): the matrix is made and used ``rows``
    rows at a time. Forward, each block's matmul, max, exp and row sums run while the block is in
    cache; backward, each block is scaled into its part of the softmax gradient and multiplied right
    away (``grad_a``'s rows; ``grad_c`` accumulated block by block), instead of a pass over the whole
    58 MB matrix (ML-1M's user term) per operation. And when ``|a_r| max|c| + max|shift|`` bounds
    every logit by :data:`_UNSHIFTED_BOUND`, the per-row max is not subtracted (RLMRec's cosines over
    a temperature are bounded by ``1 / t``, 5 here): two passes fewer, ``lse = log sum exp(x)``
    directly. Either way the same value and gradients to float rounding (~1e-7 relative:
    ``grad_c``'s sum over rows is taken in another order, and the exponentials unshifted);
    ``tests/test_cllmr_speed.py``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor, shift: torch.Tensor | None, rows: int | None = None) -> torch.Tensor:
        ctx.rows = rows
        if rows is None or len(a) == 0 or len(c) == 0:
            ctx.rows = None
            e = a @ c.T
            if shift is not None:
                e.add_(shift)
            top = e.amax(-1, keepdim=True)
            e.sub_(top).exp_()
            total = e.sum(-1, keepdim=True)
            ctx.save_for_backward(a, c, e, total)
            return (top + total.log()).squeeze(-1)
        bound = a.norm(dim=-1).max() * c.norm(dim=-1).max() + (0.0 if shift is None else shift.abs().max())
        unshifted = a.dtype in (torch.float32, torch.float64) and float(bound) <= _UNSHIFTED_BOUND
        top = None if unshifted else a.new_empty(len(a), 1)
        e, total, c_t = a.new_empty(len(a), len(c)), a.new_empty(len(a), 1), c.T
        for s in range(0, len(a), rows):
            block = e[s:s + rows]
            torch.mm(a[s:s + rows], c_t, out=block)
            if shift is not None:
                block.add_(shift)
            if top is not None:
                block.sub_(torch.amax(block, -1, keepdim=True, out=top[s:s + rows]))
            block.exp_()
            torch.sum(block, -1, keepdim=True, out=total[s:s + rows])
        ctx.save_for_backward(a, c, e, total)
        return (total.log() if top is None else top + total.log()).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, c, e, total = ctx.saved_tensors
        need_a, need_c = ctx.needs_input_grad[:2]
        scale = grad.unsqueeze(-1) / total
        if ctx.rows is None:
            softmax_grad = e.mul_(scale)  # e is not needed again (one backward)
            return softmax_grad @ c if need_a else None, softmax_grad.T @ a if need_c else None, None, None
        rows, grad_a, grad_c = ctx.rows, torch.empty_like(a) if need_a else None, None
        for s in range(0, len(a), rows):
            block = e[s:s + rows].mul_(scale[s:s + rows])  # in place, as above
            if need_a:
                torch.mm(block, c, out=grad_a[s:s + rows])
            if need_c:
                grad_c = block.T @ a[s:s + rows] if grad_c is None else grad_c.addmm_(block.T, a[s:s + rows])
        return grad_a, grad_c, None, None


def block_rows(candidates: int) -> int:
    """Rows of a :class:`_LogSumExpOfProducts` block against ``candidates`` columns (:data:`BLOCK_ELEMENTS`)."""
    return max(1, BLOCK_ELEMENTS // max(candidates, 1))


def infonce(anchors: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor, temperature: float,
            anchor_counts: torch.Tensor | None = None, candidate_counts: torch.Tensor | None = None,
            fused: bool = True, blocked: bool = True) -> torch.Tensor:
    """RLMRec's ``cal_infonce_loss``: ``sum_b [-cos(a_b, p_b)/t + log sum_c exp(cos(a_b, c)/t)]``.

    ``anchor_counts`` / ``candidate_counts``: how many times each (distinct) row stands for itself
    in the batch: a row's term is counted that many times, a candidate's ``exp`` too (``+ log n``
    inside the log-sum-exp). Equal to the sum over the rows with their repeats, at a fraction of
    the cost when a batch repeats users and items (:func:`alignment_loss`).

    ``fused`` (default): ``1/t`` folded into the unit anchors before the matmul (no division of
    the logits matrix, forward or backward) and :class:`_LogSumExpOfProducts`; the same value and gradients
    as the plain formula (``fused=False``) to float rounding, about 2x faster on ML-1M's shapes
    (``benchmarks/cllmr_cost.py``, side by side). ``blocked`` (default; with ``fused`` only): its
    logits a block of rows at a time, unshifted when bounded (:class:`_LogSumExpOfProducts`), the
    same to float rounding again."""
    a, p, c = _unit(anchors), _unit(positives), _unit(candidates)
    shift = None if candidate_counts is None else torch.log(candidate_counts.to(a.dtype))
    if fused:
        a = a / temperature
        rows = block_rows(len(c)) if blocked else None
        terms = -(a * p).sum(-1) + _LogSumExpOfProducts.apply(a, c, shift, rows)
    else:
        logits = a @ c.T / temperature
        terms = -(a * p).sum(-1) / temperature + torch.logsumexp(logits if shift is None else logits + shift, dim=-1)
    return (terms * anchor_counts).sum() if anchor_counts is not None else terms.sum()


def alignment_loss(user_cf: torch.Tensor, item_cf: torch.Tensor, user_side: torch.Tensor, item_side: torch.Tensor,
                   users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, temperature: float,
                   user_candidates: str = "all", fused: bool = True, blocked: bool = True) -> torch.Tensor:
    """The three InfoNCE terms of RLMRec-Con on a batch, summed and divided by the batch (before
    ``kd_weight``): batch users against all users' side representations (``user_candidates="all"``,
    RLMRec; ``"batch"``: the batch's users only, cheaper), positives against the batch's positives,
    negatives against the batch's negatives. ``*_cf`` / ``*_side``: every user's and item's
    representations; each distinct row is computed once and weighted by its count (exact).
    ``fused``, ``blocked``: see :func:`infonce`."""
    uu, u_count = torch.unique(users, return_counts=True)
    total = infonce(user_cf[uu], user_side[uu], user_side if user_candidates == "all" else user_side[uu], temperature,
                    anchor_counts=u_count, candidate_counts=None if user_candidates == "all" else u_count, fused=fused,
                    blocked=blocked)
    for items in (pos, negs):
        ii, i_count = torch.unique(items, return_counts=True)
        total = total + infonce(item_cf[ii], item_side[ii], item_side[ii], temperature, i_count, i_count,
                                fused=fused, blocked=blocked)
    return total / len(users)
