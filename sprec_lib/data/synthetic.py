"""A synthetic dataset with a known popularity skew and genres. For unit tests only, never for a figure.

Item ``i`` (0-based) is drawn as a target or a history item with probability proportional to
``(i + 1) ** -zipf_a``, so item 0 is the most popular and the share of any head is known in
closed form (:func:`zipf_probabilities`). Item ``i`` has genre ``genres[i % n_genres]``, and every
third item also ``genres[(i + 1) % n_genres]``.
"""

from __future__ import annotations

import numpy as np

from . import SPLITS, Catalogue, Dataset, Sample, Wording


def zipf_probabilities(n_items: int, zipf_a: float) -> np.ndarray:
    weights = np.arange(1, n_items + 1, dtype=float) ** -zipf_a
    return weights / weights.sum()


def make_synthetic(
    n_items: int = 100,
    sizes: tuple[int, int, int] = (256, 32, 64),
    zipf_a: float = 1.0,
    n_genres: int = 4,
    history: tuple[int, int] = (5, 10),
    seed: int = 0,
) -> Dataset:
    rng = np.random.default_rng(seed)
    p = zipf_probabilities(n_items, zipf_a)
    genre_names = [f"genre{g}" for g in range(n_genres)]
    genres = tuple(
        (genre_names[i % n_genres],) + ((genre_names[(i + 1) % n_genres],) if i % 3 == 0 and n_genres > 1 else ())
        for i in range(n_items)
    )
    titles = tuple(f"Synthetic item {i:04d}" for i in range(n_items))
    splits = {}
    for split, size in zip(SPLITS, sizes):
        rows = []
        for _ in range(size):
            length = int(rng.integers(history[0], history[1] + 1))
            items = rng.choice(n_items, size=length + 1, p=p)
            rows.append(Sample(tuple(int(i) for i in items[:-1]), int(items[-1]), titles[items[-1]]))
        splits[split] = rows
    return Dataset(
        name=f"synthetic-zipf{zipf_a:g}",
        catalogue=Catalogue(titles, genres),
        splits=splits,
        genres=genre_names,
        wording=Wording.for_items("items"),
    )
