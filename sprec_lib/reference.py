"""Non-LLM reference recommenders that anchor the metrics: most popular, and uniform random.

They are not in the paper's tables; they show what the extremes of the bias metrics look like on
a dataset (most-popular: one list for everyone, so ORRatio is high and DivRatio tiny; random:
the reverse) before any model is trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import Dataset
from .metrics import ranking_metrics


def most_popular_topk(ds: Dataset, n_rows: int, k: int) -> list[list[int]]:
    """The ``k`` most frequent training targets (ties by id), the same list for every row."""
    pop = ds.target_popularity("train")
    top = [i for i, _ in sorted(pop.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    return [top] * n_rows


def random_topk(ds: Dataset, n_rows: int, k: int, seed: int = 0) -> list[list[int]]:
    """``k`` distinct catalogue items drawn uniformly per row."""
    rng = np.random.default_rng(seed)
    return [rng.choice(len(ds.catalogue), size=k, replace=False).tolist() for _ in range(n_rows)]


def reference_report(ds: Dataset, split: str = "test", ks: tuple[int, ...] = (1, 5), seed: int = 0) -> pd.DataFrame:
    """Metrics of the reference recommenders on ``split``: one row per (recommender, K)."""
    rows = ds.splits[split]
    targets = [s.target for s in rows]
    histories = [list(s.history) for s in rows]
    item_genres = ds.item_genres()
    out = []
    for name, make in (("most popular", most_popular_topk), ("random", lambda d, n, k: random_topk(d, n, k, seed))):
        for k in ks:
            m = ranking_metrics(make(ds, len(rows), k), targets, histories, item_genres, ds.genres, k)
            out.append({"recommender": name, "K": k, **{key: m[key] for key in ("HR", "NDCG", "DivRatio", "ORRatio", "MGU", "DGU")}})
    return pd.DataFrame(out).set_index(["recommender", "K"])
