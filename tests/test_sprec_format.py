"""Reading and writing folders of the paper's format: every quirk, every error, the round trip."""

import json
from pathlib import Path

import pytest

from sprec_lib.cli import main
from sprec_lib.data import DataFormatError, Wording
from sprec_lib.data.sprec_format import read_sprec_folder, repair_mojibake, write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic

W = Wording.for_items("movies")
CATALOGUE = [
    "Plain (1999)",
    'Rock, Paper", "Scissors',  # a title that looks like two when split on '", "'
    'A "Quoted" #1',
    "Amélie (2001)",
    "WALL·E (2008)",
    "Second (2000)",
]
GENRES = {
    "Plain (1999)": ["Root", "Drama"],
    'Rock, Paper", "Scissors': ["Root", "Comedy"],
    'A "Quoted" #1': ["Root"],
    "Amélie (2001)": ["Root", "Comedy", "Romance"],
    "WALL·E (2008)": ["Root", "Animation"],
    "Second (2000)": ["Root", "Drama", "Comedy"],
}


def row(history, target, wording=W):
    return {
        "instruction": wording.instruction,
        "input": wording.input_head + ", ".join(f'"{t}"' for t in history) + wording.input_tail,
        "output": f'"{target}"\n',
    }


def make_folder(tmp_path: Path, splits=None, genre_dict=("Drama", "Comedy", "Romance")) -> Path:
    folder = tmp_path / "ds"
    (folder / "eval").mkdir(parents=True)
    mojibake = "WALL·E (2008)".encode("utf-8").decode("latin-1")  # 'WALLÂ·E (2008)'
    splits = splits or {
        "train": [
            row(["Plain (1999)", 'Rock, Paper", "Scissors', 'A "Quoted" #1'], "Second (2000)"),
            row(["Plain (1999)", "Plain (1999)", mojibake], "Amélie (2001)"),  # repeat + mojibake
        ],
        "valid": [row(["Second (2000)", "Not In Catalogue"], "Plain (1999)")],
        "test": [row(['A "Quoted" #1'], "Unknown Target (2020)"), row(["Plain (1999)"], mojibake)],
    }
    for split, rows in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "eval" / "id2name.json").write_text(json.dumps({str(i): t for i, t in enumerate(CATALOGUE)}))
    (folder / "eval" / "name2id.json").write_text(json.dumps({t: i for i, t in enumerate(CATALOGUE)}))
    (folder / "eval" / "name2genre.json").write_text(json.dumps(GENRES))
    (folder / "eval" / "genre_dict.json").write_text(json.dumps({g: 0 for g in genre_dict}))
    return folder


def test_reads_every_quirk(tmp_path):
    ds = read_sprec_folder(make_folder(tmp_path))
    train, valid, test = ds.train, ds.valid, ds.test
    # Titles with commas, quotes and '#' resolve to their ids (1 and 2), not to split pieces.
    assert train[0].history == (0, 1, 2) and train[0].target == 5
    # A repeated title stays repeated; the mojibake 'WALLÂ·E' is repaired to item 4.
    assert train[1].history == (0, 0, 4) and train[1].target == 3
    # A history title outside the catalogue is dropped and counted.
    assert valid[0].history == (5,) and ds.notes["history_titles_outside_catalogue"] == 1
    # A target outside the catalogue is kept as None with its text; a mojibake target is repaired.
    assert test[0].target is None and test[0].target_title == "Unknown Target (2020)"
    assert test[1].target == 4 and test[1].target_title == "WALL·E (2008)"
    assert ds.notes["titles_repaired"] == 2 and ds.notes["targets_outside_catalogue"] == 1
    # "Root" is on every item: a root label, not a genre.
    assert ds.catalogue.genres[0] == ("Drama",) and ds.notes["root_labels_dropped"] == 1
    assert ds.catalogue.genres[2] == ()
    assert ds.genres == ["Drama", "Comedy", "Romance"]
    assert ds.wording == W


def test_mojibake_repair_only_where_it_round_trips():
    assert repair_mojibake("WALLÂ·E") == "WALL·E"
    assert repair_mojibake("AmÃ©lie") == "Amélie"
    assert repair_mojibake("Plain") is None  # nothing to repair
    assert repair_mojibake("Amélie") is None  # 'é' alone is not valid UTF-8 when re-encoded
    assert repair_mojibake("日本") is None  # not Latin-1 at all


def test_round_trip_synthetic(tmp_path):
    ds = make_synthetic(n_items=30, sizes=(20, 5, 5), seed=3)
    back = read_sprec_folder(write_sprec_folder(ds, tmp_path / "out"))
    assert back.same_content(ds)


def test_round_trip_with_quirky_titles(tmp_path):
    ds = read_sprec_folder(make_folder(tmp_path))
    back = read_sprec_folder(write_sprec_folder(ds, tmp_path / "again"))
    # Dropped history titles stay dropped; the target outside the catalogue keeps its text.
    assert back.splits == ds.splits and back.catalogue == ds.catalogue and back.genres == ds.genres


def _expect_error(folder, file_name, row, words):
    with pytest.raises(DataFormatError) as e:
        read_sprec_folder(folder)
    msg = str(e.value)
    assert file_name in msg, msg
    if row is not None:
        assert f"row {row}" in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_malformed_json(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "valid.json").write_text('[{"instruction": "x",')
    _expect_error(folder, "valid.json", None, ["valid JSON", "line 1"])


def test_missing_keys(tmp_path):
    folder = make_folder(tmp_path)
    rows = json.loads((folder / "train.json").read_text())
    del rows[1]["output"]
    (folder / "train.json").write_text(json.dumps(rows))
    _expect_error(folder, "train.json", 1, ["missing ['output']"])


def test_input_without_quoted_titles(tmp_path):
    folder = make_folder(tmp_path)
    rows = json.loads((folder / "test.json").read_text())
    rows[1]["input"] = "The user has watched nothing in particular"
    (folder / "test.json").write_text(json.dumps(rows))
    _expect_error(folder, "test.json", 1, ["quoted titles"])


def test_empty_history(tmp_path):
    folder = make_folder(tmp_path)
    rows = json.loads((folder / "train.json").read_text())
    rows[0]["input"] = W.input_head + '""' + W.input_tail
    (folder / "train.json").write_text(json.dumps(rows))
    _expect_error(folder, "train.json", 0, ["non-empty history"])


def test_bad_output(tmp_path):
    folder = make_folder(tmp_path)
    rows = json.loads((folder / "valid.json").read_text())
    rows[0]["output"] = "no quotes here"
    (folder / "valid.json").write_text(json.dumps(rows))
    _expect_error(folder, "valid.json", 0, ["output"])


def test_genre_map_naming_no_known_genre(tmp_path):
    folder = make_folder(tmp_path, genre_dict=("Western", "Musical"))
    _expect_error(folder, "genre_dict.json", None, ["Western"])


def test_empty_split(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "test.json").write_text("[]")
    _expect_error(folder, "test.json", None, ["non-empty split"])


def test_missing_file(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "eval" / "id2name.json").unlink()
    _expect_error(folder, "id2name.json", None, ["not found"])


def test_cli_check_good_and_bad(tmp_path, capsys):
    folder = make_folder(tmp_path)
    assert main(["data", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "catalogue items" in out and "ok:" in out
    (folder / "train.json").write_text("{not json")
    assert main(["data", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "train.json" in err and "valid JSON" in err


def test_load_json_is_still_importable_here_and_messages_name_a_key(tmp_path):
    from sprec_lib.data import io, sprec_format

    assert sprec_format.load_json is io.load_json
    assert str(DataFormatError("f.json", None, "expected x", key="k")) == "f.json, key 'k': expected x"
    assert str(DataFormatError("f.json", 3, "expected x")) == "f.json, row 3: expected x"


def test_quirky_folder_warnings(tmp_path):
    # Half the test targets and half of valid's history titles are outside this tiny catalogue:
    # accepted (the released folders have a few such), with warnings naming the file.
    ds = read_sprec_folder(make_folder(tmp_path))
    assert any("test.json: 1 of 2 targets" in w for w in ds.warnings), ds.warnings
    assert any("valid.json: 1 of 2 history titles" in w for w in ds.warnings), ds.warnings


def test_split_history_rejoins_a_multi_piece_mojibake_title_and_counts_it_once(tmp_path):
    title = 'Café", "Crème'
    catalogue = [title, "Plain (1999)"]
    folder = tmp_path / "ds"
    (folder / "eval").mkdir(parents=True)
    moji = title.encode("utf-8").decode("latin-1")
    rows = [row([moji, "Plain (1999)"], "Plain (1999)")]
    for split in ("train", "valid", "test"):
        (folder / f"{split}.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "eval" / "id2name.json").write_text(json.dumps({str(i): t for i, t in enumerate(catalogue)}))
    ds = read_sprec_folder(folder)
    assert ds.train[0].history == (0, 1)
    # One repaired title per split (the split before issue 12 counted the re-joined one twice).
    assert ds.notes["titles_repaired"] == 3
    assert ds.genres == [] and any("not applicable" in w for w in ds.warnings)
