"""Raw MovieLens logs -> the paper's prompt dataset (see :class:`sprec_lib.config.PrepareConfig`).

The steps, in order, each as the paper describes it (our choices are marked):

1. order each user's interactions by timestamp with a *stable* sort, so that ties keep the order of
   the source file (77% of ML-1M interactions tie on (user, second): an unstable sort would make
   the histories depend on the sorting algorithm); a repeated (user, item) keeps its earliest
   rating (ours: ML-100K lists 18 movies twice, and 307 ratings repeat once those are merged);
2. drop users with fewer than ``min_interactions`` interactions;
3. one sample per position ``i >= min_history`` with the previous ``max_history`` items as history;
4. order the samples by the target's time (stable again: ties keep user order, then position) and
   split them 8:1:1 in that order, so valid and test lie after train in time;
5. sample ``train_size`` / ``valid_size`` / ``test_size`` rows of each split with ``seed``
   (kept in time order);
6. the catalogue is every item that survives step 1 (ours: items nobody interacted with cannot be
   targets); the evaluated genres are the ``n_genres`` most frequent among the training targets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import PrepareConfig
from . import SPLITS, Catalogue, Dataset, Sample, Wording, top_genres
from .movielens_raw import RawMovieLens


def prepare_movielens(raw: RawMovieLens, cfg: PrepareConfig = PrepareConfig()) -> Dataset:
    df = raw.interactions
    users = df["user"].to_numpy()
    items = df["item"].to_numpy(dtype=np.int64)
    times = df["timestamp"].to_numpy(dtype=np.int64)

    # 1. per user, by time; np.lexsort is stable, so ties keep file order. (Sorted first so that
    # a user who rated the same movie twice, which ML-100K's duplicate titles produce once
    # merged, keeps the earliest rating: a history never lists a title twice.)
    codes, first_seen = _codes_in_order(users)
    order = np.lexsort((times, codes))
    codes, items, times = codes[order], items[order], times[order]
    repeat = pd.DataFrame({"u": codes, "i": items}).duplicated().to_numpy()
    codes, items, times = codes[~repeat], items[~repeat], times[~repeat]

    # 2. users with enough interactions (codes number users in order of first appearance).
    counts = np.bincount(codes, minlength=len(first_seen))
    keep = counts[codes] >= cfg.min_interactions
    codes, items, times = codes[keep], items[keep], times[keep]

    # Re-index the surviving items 0..m-1 in the order of the item file.
    kept_items = np.unique(items)
    new_id = np.full(len(raw.titles), -1, dtype=np.int64)
    new_id[kept_items] = np.arange(len(kept_items))
    items = new_id[items]

    # 3. one sample per position with enough history.
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    samples, target_times, owner = [], [], []
    for u, (s, e) in enumerate(zip(starts, ends)):
        seq = items[s:e].tolist()
        for i in range(cfg.min_history, e - s):
            samples.append((tuple(seq[max(0, i - cfg.max_history):i]), seq[i]))
            target_times.append(times[s + i])
            owner.append((u, i))

    # 4. chronological split by target time (stable).
    by_time = np.argsort(np.asarray(target_times, dtype=np.int64), kind="stable")
    ratio = np.asarray(cfg.split_ratio, dtype=float)
    cuts = np.floor(np.cumsum(ratio)[:-1] / ratio.sum() * len(by_time)).astype(int)
    parts = dict(zip(SPLITS, np.split(by_time, cuts)))

    # 5. seeded samples of each split, kept in time order.
    rng = np.random.default_rng(cfg.seed)
    titles = tuple(raw.titles[i] for i in kept_items)
    splits = {}
    for split in SPLITS:
        idx, size = parts[split], cfg.sizes()[split]
        if size is not None and size < len(idx):
            idx = idx[np.sort(rng.choice(len(idx), size=size, replace=False))]
        splits[split] = [Sample(samples[j][0], samples[j][1], titles[samples[j][1]]) for j in idx]

    # Each user's sequence up to their last training target (every window of the training split),
    # for the tiny profile's domain pretraining.
    last = {}
    for j in parts["train"]:
        u, i = owner[j]
        last[u] = max(last.get(u, 0), i)
    sequences = [tuple(items[starts[u]:starts[u] + i + 1].tolist()) for u, i in sorted(last.items())]

    catalogue = Catalogue(titles, tuple(tuple(raw.genres[i]) for i in kept_items))
    return Dataset(
        name=raw.name,
        catalogue=catalogue,
        splits=splits,
        genres=top_genres(splits["train"], catalogue, cfg.n_genres),
        wording=Wording.for_items("movies"),
        sequences=sequences,
        notes={
            "users": int(len(starts)),
            "repeated_user_item_pairs_dropped": int(repeat.sum()),
            "users_dropped": int(len(first_seen) - len(starts)),
            "interactions": int(len(codes)),
            "ties_on_user_second": _tie_count(codes, times),
            **{f"{split}_rows_before_sampling": int(len(parts[split])) for split in SPLITS},
        },
    )


def _codes_in_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for ``values`` numbered in order of first appearance, and the first positions."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inverse], np.sort(first)


def _tie_count(codes: np.ndarray, times: np.ndarray) -> int:
    """Interactions that share (user, second) with another one (input sorted by user, time)."""
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    tied = np.r_[same, False] | np.r_[False, same]
    return int(tied.sum())
