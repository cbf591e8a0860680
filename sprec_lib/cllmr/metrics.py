"""Full-ranking Recall@K and NDCG@K, effective rank, and the popularity of recommendations.

Recall and NDCG follow RLMRec's ``encoder/trainer/metrics.py`` (from SSLRec): every item is
ranked for each user that has at least one held-out item, the user's training items masked (and,
if asked, the valid items when testing); with ``T_u`` the user's held-out items and ``r`` the
0-based rank of a hit in the top K,

    Recall@K = |top-K ∩ T_u| / |T_u|
    NDCG@K   = sum_{hits} 1/log2(r + 2)  /  sum_{j < min(K, |T_u|)} 1/log2(j + 2)

averaged over those users. Ties in the scores are broken by ``torch.topk`` (the tests use scores
without ties).

``effective_rank`` is Roy & Vetterli's (2007): exp of the entropy of the normalised singular
values, the number the chapter reads dimensional collapse from. ``popularity_stats``: the share of
recommended slots that go to the head items (the top ``head_share`` of items by training
popularity, ORRatio-style) and the coverage (distinct items recommended / items).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch


def topk_items(scores: torch.Tensor, mask: sp.csr_matrix | None, rows: np.ndarray, k: int) -> torch.Tensor:
    """``int64 [len(rows), k]``: the ``k`` best items of each row of ``scores`` (users ``rows``),
    the items of ``mask``'s rows excluded."""
    scores = scores.clone()
    if mask is not None:
        sub = mask[rows].tocoo()
        scores[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = -torch.inf
    return torch.topk(scores, k=min(k, scores.shape[1]), dim=1).indices


def recall_ndcg(top: torch.Tensor, held_out: sp.csr_matrix, rows: np.ndarray, ks) -> dict[str, np.ndarray]:
    """Per user of ``rows`` (each with >= 1 held-out item): Recall@K and NDCG@K for each K of ``ks``,
    from the ranked lists ``top`` (at least max(ks) long)."""
    sub = held_out[rows]
    hits = torch.gather(torch.from_numpy(sub.toarray() > 0), 1, top)
    n_held = torch.from_numpy(np.diff(sub.indptr).astype(np.float64))
    discount = 1.0 / torch.log2(torch.arange(top.shape[1], dtype=torch.float64) + 2)
    out = {}
    for k in ks:
        h = hits[:, :k].to(torch.float64)
        ideal = torch.cumsum(discount[:k], 0)[(torch.clamp(n_held, max=k) - 1).long()]
        out[f"Recall@{k}"] = (h.sum(1) / n_held).numpy()
        out[f"NDCG@{k}"] = ((h * discount[:k]).sum(1) / ideal).numpy()
    return out


def evaluate_scores(score_fn, train: sp.csr_matrix, held_out: sp.csr_matrix, ks, extra_mask: sp.csr_matrix | None = None,
                    batch_users: int = 1024, head: np.ndarray | None = None) -> dict:
    """Mean Recall@K / NDCG@K over the users with held-out items, the items of ``train`` (and
    ``extra_mask``) masked; ``score_fn(user_rows) -> [len, n_items]`` scores a batch of users.
    With ``head`` (a boolean per item), also :func:`popularity_stats` of the top-max(ks) lists."""
    mask = train if extra_mask is None else ((train + extra_mask) > 0).astype(np.float32).tocsr()
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    kmax = max(ks)
    per_user = {f"{m}@{k}": [] for k in ks for m in ("Recall", "NDCG")}
    tops = []
    for start in range(0, len(users), batch_users):
        rows = users[start:start + batch_users]
        with torch.no_grad():
            top = topk_items(score_fn(torch.from_numpy(rows)), mask, rows, kmax)
        tops.append(top)
        for name, values in recall_ndcg(top, held_out, rows, ks).items():
            per_user[name].append(values)
    out = {name: float(np.concatenate(v).mean()) if v else 0.0 for name, v in per_user.items()}
    out["users"] = len(users)
    if head is not None and tops:
        top = torch.cat(tops).numpy()
        for k in ks:
            out.update({f"{name}@{k}": v for name, v in popularity_stats(top[:, :k], head).items()})
    return out


def popularity_stats(top: np.ndarray, head: np.ndarray) -> dict[str, float]:
    """``HeadShare``: the share of the recommended slots that hold head items; ``Coverage``: the
    share of all items recommended at least once."""
    top = np.asarray(top)
    return {"HeadShare": float(head[top].mean()) if top.size else 0.0,
            "Coverage": float(len(np.unique(top)) / len(head))}


def head_items(popularity: np.ndarray, share: float) -> np.ndarray:
    """Boolean per item: the ``ceil(share * n)`` most popular (ties by item id, a stable sort)."""
    n_head = max(1, math.ceil(share * len(popularity)))
    order = np.argsort(-np.asarray(popularity), kind="stable")
    head = np.zeros(len(popularity), dtype=bool)
    head[order[:n_head]] = True
    return head


def singular_values(x: np.ndarray | torch.Tensor, center: bool = True) -> np.ndarray:
    """Singular values of a representation matrix (rows: items), columns centred first by default."""
    x = np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    return np.linalg.svd(x, compute_uv=False)


def effective_rank(x: np.ndarray | torch.Tensor | None = None, *, values: np.ndarray | None = None,
                   center: bool = True) -> float:
    """Roy & Vetterli's effective rank: ``exp(-sum p_i log p_i)`` with ``p = s / sum(s)`` over the
    singular values ``s`` of ``x`` (or the given ``values``); 0 for a zero matrix."""
    s = np.asarray(values if values is not None else singular_values(x, center=center), dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))
