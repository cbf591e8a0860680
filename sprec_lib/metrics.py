"""Ranking, diversity and genre-fairness metrics, as SPRec's public evaluation computes them.

Notation: ``N`` is the number of test rows; ``V`` the number of *valid* rows, those whose
target item is in the catalogue (``target is not None``); ``K`` the cut-off. Only the first
``K`` entries of each row's ranked list count; repeated ids are kept as given.

Accuracy (denominator is **all** ``N`` rows, like the paper's public code, so rows whose
target is not in the catalogue count as misses)::

    HR@K   = (1/N) * sum_{valid rows} 1[r < K]
    NDCG@K = (1/N) * sum_{valid rows} 1[r < K] / log2(r + 2)

where ``r`` is the 0-based position of the target in the row's top-K list (absent: no hit).

Diversity (over valid rows' top-K lists only)::

    DivRatio@K = |union of top-K item ids| / (V * K)
    ORRatio@K  = (sum of the 3 largest per-item recommendation counts) / (V * K)

Ties in counts do not matter for ORRatio (the sum of the 3 largest counts is well defined);
with fewer than 3 distinct items, the available counts are summed.

Genre fairness: every recommended item (each top-K entry of a valid row) spreads a mass of 1
*evenly* over those of its genres that are in the evaluated list ``genres``; an item with none
of them (no genres, only other genres, or missing from ``item_genres``) adds nothing. ``GP``
is that mass normalised to sum to 1 over ``genres``. ``GH`` is the same over every item in
every row's history (all ``N`` rows, valid or not). A share vector with zero total mass is
taken as all zeros. With ``d_g = GP_g - GH_g``::

    MGU@K = mean_g |d_g|      DGU@K = max_g d_g - min_g d_g      GU_g = |d_g|

Edge cases: ``N = 0`` gives HR = NDCG = 0.0; ``V = 0`` gives DivRatio = ORRatio = 0.0 and
GP = 0; an empty ``genres`` list (a dataset without genre information) gives MGU = DGU = GU = None:
not applicable, never a 0.0 that would read as "perfectly fair".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

__all__ = ["ranking_metrics", "valid_ratio"]


def genre_mass(its_genres: Iterable[str], evaluated: Collection[str]) -> dict[str, float]:
    """One item's genre mass: 1 split evenly over those of ``its_genres`` that are ``evaluated``
    (nothing for an item with none of them)."""
    mine = {g for g in its_genres if g in evaluated}
    return {g: 1.0 / len(mine) for g in mine}


def genre_shares(
    items: Iterable[int], item_genres: Mapping[int, Iterable[str]], genres: Sequence[str]
) -> dict[str, float]:
    """Per-genre share of ``items``: the sum of their :func:`genre_mass`, normalised to 1."""
    evaluated = set(genres)
    mass = {g: 0.0 for g in genres}
    for item in items:
        for g, m in genre_mass(item_genres.get(item, ()), evaluated).items():
            mass[g] += m
    total = sum(mass.values())
    if total == 0:
        return {g: 0.0 for g in genres}
    return {g: m / total for g, m in mass.items()}


def ranking_metrics(
    topk: Sequence[Sequence[int]],
    targets: Sequence[int | None],
    histories: Sequence[Sequence[int]],
    item_genres: Mapping[int, Iterable[str]],
    genres: Sequence[str],
    k: int,
) -> dict:
    """Compute HR, NDCG, DivRatio, ORRatio, MGU, DGU and per-genre GU at cut-off ``k``.

    See the module docstring for the definitions. Returns a dict with keys ``HR``, ``NDCG``,
    ``DivRatio``, ``ORRatio``, ``MGU``, ``DGU`` (floats), ``GU`` (dict genre -> float) and
    ``valid`` (V, the number of rows whose target is not None). Ratios whose denominator
    would be zero (N = 0 or V = 0) are returned as 0.0.

    Raises ValueError if ``k < 1`` or if ``topk``, ``targets`` and ``histories`` differ in length.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (len(topk) == len(targets) == len(histories)):
        raise ValueError(
            f"length mismatch: len(topk)={len(topk)}, len(targets)={len(targets)}, "
            f"len(histories)={len(histories)}"
        )
    n = len(targets)
    valid_lists = [list(row)[:k] for row, t in zip(topk, targets) if t is not None]
    v = len(valid_lists)

    hits = 0.0
    gains = 0.0
    for row, target in zip(topk, targets):
        if target is None:
            continue
        head = list(row)[:k]
        if target in head:
            r = head.index(target)
            hits += 1.0
            gains += 1.0 / math.log2(r + 2)

    counts = Counter(item for row in valid_lists for item in row)
    slots = v * k
    top3 = sum(c for _, c in counts.most_common(3))

    gp = genre_shares((item for row in valid_lists for item in row), item_genres, genres)
    gh = genre_shares((item for row in histories for item in row), item_genres, genres)
    d = {g: gp[g] - gh[g] for g in genres}

    return {
        "HR": hits / n if n else 0.0,
        "NDCG": gains / n if n else 0.0,
        "DivRatio": len(counts) / slots if slots else 0.0,
        "ORRatio": top3 / slots if slots else 0.0,
        "MGU": sum(abs(x) for x in d.values()) / len(d) if d else None,
        "DGU": max(d.values()) - min(d.values()) if d else None,
        "GU": {g: abs(x) for g, x in d.items()} if d else None,
        "valid": v,
    }


def valid_ratio(titles: Sequence[str | None], catalogue_titles: Collection[str]) -> float:
    """Share of generated titles that exactly name a catalogue title (before grounding).

    ``None`` (an unparseable generation) never matches. Returns 0.0 for an empty list.
    ``catalogue_titles`` may be any container of str (set, list, dict keys).
    """
    if not titles:
        return 0.0
    catalogue = set(catalogue_titles)
    return sum(1 for t in titles if t is not None and t in catalogue) / len(titles)
