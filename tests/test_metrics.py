"""Tests for sprec_lib.metrics: hand-worked examples plus a naive exact re-implementation."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from sprec_lib.metrics import ranking_metrics, valid_ratio

GENRES = ["Action", "Comedy", "Drama"]
# 5 has one genre outside the evaluated list, 6 has none, 7 only outside ones, 8 and 11 are
# missing from the mapping; 12 is only recommended on the row whose target is None.
ITEM_GENRES = {
    1: ["Action"],
    2: ["Comedy"],
    3: ["Action", "Comedy"],
    4: ["Drama"],
    5: ["Drama", "Horror"],
    6: [],
    7: ["Horror"],
    9: ["Comedy", "Drama"],
    12: ["Action"],
}
TOPK = [
    [1, 2, 3, 4, 5, 11],  # longer than 5: item 11 must be dropped at K=5
    [2, 1, 6, 7, 8],
    [4, 1, 2, 9, 3],
    [12, 1, 2, 3, 4],  # target None: ignored by DivRatio, ORRatio and GP
]
TARGETS = [3, 2, 3, None]
HISTORIES = [[1, 2], [4], [9, 6], [3, 8, 7]]  # the None row's history still counts in GH

# GH over all four histories: 1 -> A+1; 2 -> C+1; 4 -> D+1; 9 -> C+1/2, D+1/2; 6 -> nothing;
# 3 -> A+1/2, C+1/2; 8 (missing) and 7 (Horror only) -> nothing.
# A = 1.5, C = 2, D = 1.5, total 5  ->  GH = (0.3, 0.4, 0.3).


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_hand_example_k5():
    m = ranking_metrics(TOPK, TARGETS, HISTORIES, ITEM_GENRES, GENRES, 5)
    assert m["valid"] == 3  # row 3 has target None
    # hits: row0 target 3 at r=2, row1 target 2 at r=0, row2 target 3 at r=4; N = 4
    assert m["HR"] == approx(3 / 4)
    # NDCG = (1/log2(4) + 1/log2(2) + 1/log2(6)) / 4 = (0.5 + 1 + 1/log2 6) / 4
    assert m["NDCG"] == approx((0.5 + 1.0 + 1.0 / math.log2(6)) / 4)
    # union of the valid rows' top-5 = {1,...,9} (11 truncated, 12 on the None row): 9 / (3*5)
    assert m["DivRatio"] == approx(9 / 15)
    # counts: 1->3, 2->3, 3->2, 4->2, others 1; top three 3+3+2 = 8 over 15 slots
    assert m["ORRatio"] == approx(8 / 15)
    # GP mass: item1 x3 -> A+3; item2 x3 -> C+3; item3 x2 -> A+1, C+1; item4 x2 -> D+2;
    # item5 -> D+1 (Horror dropped); item9 -> C+1/2, D+1/2; items 6, 7, 8 -> nothing.
    # A = 4, C = 4.5, D = 3.5, total 12 -> GP = (1/3, 3/8, 7/24)
    # d = GP - GH = (1/3 - 3/10, 3/8 - 2/5, 7/24 - 3/10) = (1/30, -1/40, -1/120)
    assert m["GU"] == {"Action": approx(1 / 30), "Comedy": approx(1 / 40), "Drama": approx(1 / 120)}
    # MGU = (4/120 + 3/120 + 1/120) / 3 = 1/45
    assert m["MGU"] == approx(1 / 45)
    # DGU = 1/30 - (-1/40) = 7/120
    assert m["DGU"] == approx(7 / 120)


def test_hand_example_k1():
    m = ranking_metrics(TOPK, TARGETS, HISTORIES, ITEM_GENRES, GENRES, 1)
    assert m["valid"] == 3
    # top-1 of the valid rows: 1, 2, 4; only row1 (target 2) hits, at r=0; N = 4
    assert m["HR"] == approx(1 / 4)
    assert m["NDCG"] == approx((1 / math.log2(2)) / 4)  # = 0.25
    # 3 distinct items in 3*1 slots
    assert m["DivRatio"] == approx(3 / 3)
    # counts 1, 1, 1 -> 3 / 3
    assert m["ORRatio"] == approx(3 / 3)
    # GP = (1/3, 1/3, 1/3); GH = (0.3, 0.4, 0.3); d = (1/30, -1/15, 1/30)
    assert m["GU"] == {"Action": approx(1 / 30), "Comedy": approx(1 / 15), "Drama": approx(1 / 30)}
    # MGU = (1/30 + 2/30 + 1/30) / 3 = 2/45
    assert m["MGU"] == approx(2 / 45)
    # DGU = 1/30 - (-1/15) = 1/10
    assert m["DGU"] == approx(1 / 10)


def test_return_keys_and_types():
    m = ranking_metrics(TOPK, TARGETS, HISTORIES, ITEM_GENRES, GENRES, 5)
    assert set(m) == {"HR", "NDCG", "DivRatio", "ORRatio", "MGU", "DGU", "GU", "valid"}
    assert isinstance(m["valid"], int)
    assert list(m["GU"]) == GENRES


@pytest.mark.parametrize(
    "topk, k, expected",
    [
        # four items each recommended once: 1+1+1 = 3 over 2*2 slots
        ([[1, 2], [3, 4]], 2, 3 / 4),
        # four items each recommended twice: 2+2+2 = 6 over 4*2 slots
        ([[1, 2], [2, 3], [3, 4], [4, 1]], 2, 6 / 8),
        # ties below the top: counts 1->3, 2,3,4->1 each: 3+1+1 = 5 over 3*2 slots
        ([[1, 2], [1, 3], [1, 4]], 2, 5 / 6),
        # only two distinct items: 2+2 = 4 over 4 slots
        ([[1, 2], [2, 1]], 2, 4 / 4),
        # a single distinct item: 2 over 2 slots
        ([[7], [7]], 1, 2 / 2),
    ],
)
def test_orratio_ties_and_few_items(topk, k, expected):
    n = len(topk)
    m = ranking_metrics(topk, [0] * n, [[] for _ in range(n)], {}, ["A"], k)
    assert m["ORRatio"] == approx(expected)


def test_unknown_targets():
    topk = [[1, 2], [3, 4], [5, 6]]
    targets = [2, None, None]
    histories = [[1], [2], [2]]
    item_genres = {1: ["A"], 2: ["B"], 3: ["A"], 4: ["A"], 5: ["A"], 6: ["A"]}
    m = ranking_metrics(topk, targets, histories, item_genres, ["A", "B"], 2)
    assert m["valid"] == 1
    # one hit at r=1 over N = 3 rows
    assert m["HR"] == approx(1 / 3)
    assert m["NDCG"] == approx((1 / math.log2(3)) / 3)
    # only row0's list counts: 2 distinct over 1*2 slots; counts 1+1 = 2 over 2 slots
    assert m["DivRatio"] == approx(2 / 2)
    assert m["ORRatio"] == approx(2 / 2)
    # GP from row0 only: A 1/2, B 1/2. GH from all rows: A 1, B 2 -> (1/3, 2/3)
    # d = (1/2 - 1/3, 1/2 - 2/3) = (1/6, -1/6)
    assert m["GU"] == {"A": approx(1 / 6), "B": approx(1 / 6)}
    assert m["MGU"] == approx(1 / 6)
    assert m["DGU"] == approx(1 / 3)


def test_all_targets_unknown():
    m = ranking_metrics([[1], [2]], [None, None], [[1], [2]], {1: ["A"], 2: ["B"]}, ["A", "B"], 1)
    assert m["valid"] == 0
    assert m["HR"] == 0.0 and m["NDCG"] == 0.0  # N = 2, no valid row can hit
    assert m["DivRatio"] == 0.0 and m["ORRatio"] == 0.0  # V*K = 0
    # GP all zeros (no mass); GH = (1/2, 1/2); d = (-1/2, -1/2)
    assert m["GU"] == {"A": approx(0.5), "B": approx(0.5)}
    assert m["MGU"] == approx(0.5)
    assert m["DGU"] == approx(0.0)


def test_empty_input():
    m = ranking_metrics([], [], [], {}, ["A", "B"], 5)
    assert m == {
        "HR": 0.0,
        "NDCG": 0.0,
        "DivRatio": 0.0,
        "ORRatio": 0.0,
        "MGU": 0.0,
        "DGU": 0.0,
        "GU": {"A": 0.0, "B": 0.0},
        "valid": 0,
    }


def test_no_evaluated_genres_anywhere():
    # item 1 has no genres, 2 only a non-evaluated one, 3 is missing from the mapping
    item_genres = {1: [], 2: ["Horror"]}
    m = ranking_metrics([[1, 2, 3]], [3], [[1, 2, 3]], item_genres, ["A", "B"], 3)
    # both share vectors have zero mass -> all zeros
    assert m["GU"] == {"A": 0.0, "B": 0.0}
    assert m["MGU"] == 0.0 and m["DGU"] == 0.0
    # accuracy still works: hit at r=2
    assert m["HR"] == approx(1.0)
    assert m["NDCG"] == approx(1 / math.log2(4))


def test_empty_genre_list_is_not_applicable():
    """No genres evaluated (a dataset without genre files): the fairness metrics are None, never a
    0.0 that would read as perfectly fair; tables show them as missing."""
    from sprec_lib.evaluation import flat_metrics

    m = ranking_metrics([[1]], [1], [[1]], {1: ["A"]}, [], 1)
    assert m["GU"] is None and m["MGU"] is None and m["DGU"] is None
    flat = flat_metrics({"valid_ratio": 1.0, "@1": m})
    assert math.isnan(flat["MGU@1"]) and math.isnan(flat["DGU@1"]) and flat["HR@1"] == 1.0


def test_genre_mass_split_evenly_over_evaluated_genres_only():
    # rec item 1 has genres A, B, X (X not evaluated): A+1/2, B+1/2 -> GP = (1/2, 1/2, 0)
    # history item 2 has genre C only -> GH = (0, 0, 1)
    # d = (1/2, 1/2, -1): GU = (1/2, 1/2, 1), MGU = 2/3, DGU = 1/2 - (-1) = 3/2
    item_genres = {1: ["A", "B", "X"], 2: ["C"]}
    m = ranking_metrics([[1]], [1], [[2]], item_genres, ["A", "B", "C"], 1)
    assert m["GU"] == {"A": approx(0.5), "B": approx(0.5), "C": approx(1.0)}
    assert m["MGU"] == approx(2 / 3)
    assert m["DGU"] == approx(1.5)


def test_topk_longer_than_k_is_truncated():
    # the target sits at position 2 (0-based) of a 4-long list
    m2 = ranking_metrics([[5, 6, 7, 8]], [7], [[]], {}, ["A"], 2)
    assert m2["HR"] == 0.0 and m2["NDCG"] == 0.0
    assert m2["DivRatio"] == approx(2 / 2)  # only 5, 6 count
    m3 = ranking_metrics([[5, 6, 7, 8]], [7], [[]], {}, ["A"], 3)
    assert m3["HR"] == approx(1.0)
    assert m3["NDCG"] == approx(1 / math.log2(4))  # = 0.5


def test_topk_shorter_than_k_and_repeats():
    # a 2-long list at K=4 with a repeated id: union {5} over V*K = 4 slots, count 2 over 4
    m = ranking_metrics([[5, 5]], [5], [[]], {5: ["A"]}, ["A"], 4)
    assert m["HR"] == approx(1.0)  # first occurrence, r = 0
    assert m["NDCG"] == approx(1.0)
    assert m["DivRatio"] == approx(1 / 4)
    assert m["ORRatio"] == approx(2 / 4)


def test_numpy_inputs_match_lists():
    arr_topk = [np.asarray(r, dtype=np.int64) for r in TOPK]
    arr_hist = [np.asarray(h, dtype=np.int64) for h in HISTORIES]
    a = ranking_metrics(arr_topk, TARGETS, arr_hist, ITEM_GENRES, GENRES, 5)
    b = ranking_metrics(TOPK, TARGETS, HISTORIES, ITEM_GENRES, GENRES, 5)
    assert a == b


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        ranking_metrics([[1]], [1], [[1]], {}, ["A"], k)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match=r"len\(topk\)=2.*len\(targets\)=1.*len\(histories\)=2"):
        ranking_metrics([[1], [2]], [1], [[1], [2]], {}, ["A"], 1)
    with pytest.raises(ValueError, match=r"len\(histories\)=3"):
        ranking_metrics([[1], [2]], [1, 2], [[1], [2], [3]], {}, ["A"], 1)


def test_large_input_is_fast():
    rng = np.random.default_rng(1)
    n, k = 1000, 5
    topk = rng.integers(0, 500, size=(n, 20)).tolist()
    targets = rng.integers(0, 500, size=n).tolist()
    histories = rng.integers(0, 500, size=(n, 10)).tolist()
    item_genres = {i: [f"g{i % 7}", f"g{i % 3}"] for i in range(500)}
    import time

    t0 = time.perf_counter()
    ranking_metrics(topk, targets, histories, item_genres, [f"g{j}" for j in range(7)], k)
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------- naive cross-check


def naive_metrics(topk, targets, histories, item_genres, genres, k):
    """Deliberately naive: explicit count arrays, Counter, and exact Fractions for genre mass."""
    n = len(targets)
    max_id = max([0] + [x for row in topk for x in row] + [x for row in histories for x in row])
    count = [0] * (max_id + 1)
    hr = 0.0
    ndcg = 0.0
    v = 0
    for i in range(n):
        if targets[i] is None:
            continue
        v += 1
        for j in range(min(k, len(topk[i]))):
            count[topk[i][j]] += 1
        for j in range(min(k, len(topk[i]))):
            if topk[i][j] == targets[i]:
                hr += 1
                ndcg += 1 / math.log2(j + 2)
                break
    distinct = sum(1 for c in count if c > 0)
    top3 = sum(sorted(count, reverse=True)[:3])

    def shares(items):
        mass = Counter()
        for item in items:
            gs = sorted(set(item_genres[item]) & set(genres)) if item in item_genres else []
            for g in gs:
                mass[g] += Fraction(1, len(gs))
        total = sum(mass.values(), Fraction(0))
        return {g: (mass[g] / total if total else Fraction(0)) for g in genres}

    rec_items = [
        topk[i][j] for i in range(n) if targets[i] is not None for j in range(min(k, len(topk[i])))
    ]
    hist_items = [x for h in histories for x in h]
    gp, gh = shares(rec_items), shares(hist_items)
    d = {g: gp[g] - gh[g] for g in genres}
    return {
        "HR": hr / n if n else 0.0,
        "NDCG": ndcg / n if n else 0.0,
        "DivRatio": distinct / (v * k) if v else 0.0,
        "ORRatio": top3 / (v * k) if v else 0.0,
        "MGU": float(sum((abs(x) for x in d.values()), Fraction(0)) / len(d)) if d else None,
        "DGU": float(max(d.values()) - min(d.values())) if d else None,
        "GU": {g: float(abs(x)) for g, x in d.items()} if d else None,
        "valid": v,
    }


def random_case(rng):
    n = int(rng.integers(0, 40))
    k = int(rng.integers(1, 8))
    n_items = int(rng.integers(1, 20))
    pool = [f"g{j}" for j in range(6)]
    genres = [g for g in pool if rng.random() < 0.6]
    item_genres = {}
    for item in range(n_items):
        if rng.random() < 0.15:
            continue  # missing from the mapping
        n_g = int(rng.integers(0, 4))
        item_genres[item] = list(rng.choice(pool, size=n_g, replace=False))
    topk, targets, histories = [], [], []
    for _ in range(n):
        length = int(rng.integers(max(0, k - 2), k + 4))
        topk.append([int(x) for x in rng.integers(0, n_items, size=length)])
        r = rng.random()
        targets.append(None if r < 0.2 else int(rng.integers(0, n_items + 3)))
        histories.append([int(x) for x in rng.integers(0, n_items, size=int(rng.integers(0, 6)))])
    return topk, targets, histories, item_genres, genres, k


@pytest.mark.parametrize("seed", range(50))
def test_matches_naive_implementation(seed):
    args = random_case(np.random.default_rng(seed))
    got = ranking_metrics(*args)
    want = naive_metrics(*args)
    assert got["valid"] == want["valid"]
    for key in ["HR", "NDCG", "DivRatio", "ORRatio", "MGU", "DGU"]:
        if want[key] is None:  # no genres evaluated in this case
            assert got[key] is None, key
            continue
        assert got[key] == pytest.approx(want[key], abs=1e-12, rel=0), key
    assert (got["GU"] is None) == (want["GU"] is None) and list(got["GU"] or []) == list(want["GU"] or [])
    for g in want["GU"] or []:
        assert got["GU"][g] == pytest.approx(want["GU"][g], abs=1e-12, rel=0), g


# ---------------------------------------------------------------- valid_ratio


def test_valid_ratio_with_none():
    cat = {"Heat (1995)", "Toy Story (1995)"}
    titles = ["Heat (1995)", None, "toy story (1995)", "Toy Story (1995)", " Heat (1995)"]
    # exact matches only: entries 0 and 3 -> 2/5 (case and whitespace differences don't count)
    assert valid_ratio(titles, cat) == approx(2 / 5)


@pytest.mark.parametrize("container", [list, set, lambda xs: dict.fromkeys(xs).keys(), dict.fromkeys])
def test_valid_ratio_containers(container):
    cat = container(["A", "B"])
    assert valid_ratio(["A", "B", "C", None], cat) == approx(2 / 4)


def test_valid_ratio_empty():
    assert valid_ratio([], {"A"}) == 0.0
    assert valid_ratio([None, None], {"A"}) == 0.0
    assert valid_ratio(["A"], set()) == 0.0
