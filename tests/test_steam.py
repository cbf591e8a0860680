"""Steam genres joined from the UCSD metadata (a hand-made gzip here; the real file in test_real_folders)."""

import gzip
import json

import pytest

from sprec_lib.cli import main
from sprec_lib.data import DataFormatError
from sprec_lib.data.sprec_format import read_sprec_folder
from sprec_lib.data.steam import build_steam_genres, read_steam_games

LINES = [
    '{"app_name": NaN, "title": NaN, "genres": NaN, "id": NaN}',
    '{"app_name": "Alpha", "title": "Alpha", "genres": ["Action", "Indie"], "id": "1"}',
    "{'app_name': 'Beta', 'title': 'Beta: GOTY', 'genres': ['Indie'], 'id': '2'}",  # a Python literal
    '{"app_name": NaN, "title": "Gamma", "genres": ["RPG", "Indie"], "id": "3"}',  # only a title
    '{"app_name": "Delta", "title": "Delta", "genres": NaN, "id": "4"}',  # no genres
    '{"app_name": "Alpha", "title": "Alpha", "genres": ["Racing"], "id": "5"}',  # a later duplicate: ignored
]
TITLES = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]


def steam_folder(tmp_path, lines=LINES):
    folder = tmp_path / "Steam"
    (folder / "eval").mkdir(parents=True)
    (folder / "raw").mkdir()
    with gzip.open(folder / "raw" / "steam_games.json.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    (folder / "eval" / "id2name.json").write_text(json.dumps({str(i): t for i, t in enumerate(TITLES)}))
    (folder / "eval" / "name2id.json").write_text(json.dumps({t: i for i, t in enumerate(TITLES)}))
    head, tail = "The user has played the following games before: ", ", please write a new games that the user may bought"
    rows = [{"instruction": "i", "input": head + '"Alpha", "Beta"' + tail, "output": '"Gamma"\n'}]
    for split in ("train", "valid", "test"):
        (folder / f"{split}.json").write_text(json.dumps(rows))
    return folder


def test_read_steam_games_accepts_json_and_literals(tmp_path):
    games = read_steam_games(steam_folder(tmp_path) / "raw" / "steam_games.json.gz")
    assert games["Alpha"] == ["Action", "Indie"]  # first record of a name wins
    assert games["Beta"] == ["Indie"] and games["Beta: GOTY"] == ["Indie"]
    assert games["Gamma"] == ["RPG", "Indie"] and games["Delta"] == []


def test_build_and_in_memory_join_agree(tmp_path, capsys):
    folder = steam_folder(tmp_path)
    counts = build_steam_genres(folder, tmp_path / "genres", top_n=2)
    # 4 of 5 titles name a game (Epsilon does not), 3 with genres; Indie x3 then Action/RPG x1 -> Action by name.
    assert counts == {"catalogue": 5, "matched": 4, "with_genres": 3, "genres": 2}
    assert json.loads((tmp_path / "genres" / "genre_dict.json").read_text()) == {"Indie": 0, "Action": 0}
    in_memory = read_sprec_folder(folder)
    from_files = read_sprec_folder(folder, genre_dir=tmp_path / "genres")
    assert in_memory.catalogue == from_files.catalogue
    # In memory the default top 10 keeps all three genres: Indie (3), then Action and RPG (1 each) by name.
    assert in_memory.genres == ["Indie", "Action", "RPG"] and from_files.genres == ["Indie", "Action"]
    assert main(["data", "build-steam-genres", str(folder), "--out", str(tmp_path / "g2"), "--top", "2"]) == 0
    assert "4 of 5 catalogue titles" in capsys.readouterr().out


def test_bad_metadata_line(tmp_path):
    folder = steam_folder(tmp_path, LINES[:2] + ["this is not a record"])
    with pytest.raises(DataFormatError, match=r"steam_games.json.gz, row 2: expected a JSON or Python-literal dict"):
        read_steam_games(folder / "raw" / "steam_games.json.gz")


def test_bad_gzip_and_genres(tmp_path):
    folder = steam_folder(tmp_path)
    gz = folder / "raw" / "steam_games.json.gz"
    raw = gz.read_bytes()
    gz.write_bytes(raw[: len(raw) - 12])  # cut off the gzip trailer and some data
    with pytest.raises(DataFormatError, match=r"steam_games.json.gz: expected .*truncated"):
        read_steam_games(gz)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"steam_games.json.gz: expected .*not a valid gzip file"):
        read_sprec_folder(folder)
    folder = steam_folder(tmp_path / "b", LINES[:2] + ['{"app_name": "Beta", "genres": "Indie"}'])
    with pytest.raises(DataFormatError, match=r'steam_games.json.gz, row 2: expected "genres" to be a list of strings'):
        build_steam_genres(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
