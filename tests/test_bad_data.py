"""Corrupted dataset folders (issue 12, section 1): every one gives a clear error or a recorded warning.

Each case builds a folder (from the synthetic generator, or a copy of one of the paper's folders in
``../shared/data/sprec`` when present: never the folder itself) and corrupts it. An error case
must raise :class:`DataFormatError` whose message names the file, the row or key where there is
one, and what was expected; ``sprec data check`` on it must exit 2 with ``error: ...`` on stderr
and no traceback. A warning case must read, with the warning (naming the file) in
``Dataset.warnings``, and ``sprec data check`` must exit 0 and show it.

Also: the history split is linear in the history's length (counted, not timed; the wall-clock
figure is ``benchmarks/parse_history.py``), and it splits exactly as the split before issue 12.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sprec_lib.cli import main
from sprec_lib.data import Catalogue, DataFormatError
from sprec_lib.data.check import warning_lines
from sprec_lib.data.sprec_format import _TitleResolver, read_sprec_folder, repair_mojibake, write_sprec_folder
from sprec_lib.data.steam import build_steam_genres
from sprec_lib.data.synthetic import make_synthetic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sprec"
SEP = '", "'


# ---------------------------------------------------------------------------------------------
# Building and corrupting folders


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")  # NaN stays NaN


def edit(path: Path, fn: Callable) -> None:
    """Load ``path``, let ``fn`` change the object in place (what it returns is ignored), write it back."""
    obj = load(path)
    fn(obj)
    dump(path, obj)


def rewrite(path: Path, fn: Callable) -> None:
    """Load ``path`` and write ``fn(object)`` in its place."""
    dump(path, fn(load(path)))


def synthetic_folder(root: Path, n_items: int = 30) -> Path:
    ds = make_synthetic(n_items=n_items, sizes=(20, 5, 5), seed=1)
    return write_sprec_folder(ds, root / "synthetic")


def steam_records(titles) -> list[str]:
    genres = ["Action", "Indie", "RPG"]
    return [json.dumps({"app_name": t, "title": t, "genres": [genres[i % 3]], "id": str(i)}) for i, t in enumerate(titles)]


def write_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def steam_folder(root: Path) -> Path:
    """A synthetic folder laid out like the released Steam one: no genre files, raw/steam_games.json.gz."""
    folder = synthetic_folder(root)
    (folder / "eval" / "name2genre.json").unlink()
    (folder / "eval" / "genre_dict.json").unlink()
    titles = list(load(folder / "eval" / "id2name.json").values())
    write_gz(folder / "raw" / "steam_games.json.gz", steam_records(titles))
    return folder


def real_folder(root: Path, name: str) -> Path:
    """A writable copy of one of the paper's folders (the shared ones are read-only)."""
    if not (SHARED / name).is_dir():
        pytest.skip(f"the paper's {name} folder is not on this machine")
    dest = root / name
    shutil.copytree(SHARED / name, dest, copy_function=shutil.copyfile)
    for d, _, _ in os.walk(dest):
        os.chmod(d, 0o755)
    return dest


def replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.json").write_text("[]")


def self_loop(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    os.symlink(path.name, path)  # a link to itself


def set_row_field(split: str, r: int, key: str, value):
    def corrupt(folder: Path):
        edit(folder / f"{split}.json", lambda rows: rows[r].__setitem__(key, value))
    return corrupt


def quoted(titles) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def all_outside(split: str, histories: bool, targets: bool):
    """Every history title and/or target of ``split`` replaced by a title outside the catalogue."""
    def corrupt(folder: Path):
        def fn(rows):
            for r, row in enumerate(rows):
                if histories:
                    head, tail = row["input"].split('"', 1)[0], row["input"].rsplit('"', 1)[1]
                    row["input"] = head + quoted([f"Nowhere {r}-{k}" for k in range(3)]) + tail
                if targets:
                    row["output"] = f'"Nobody\'s Title {r}"\n'
        edit(folder / f"{split}.json", fn)
    return corrupt


def set_title(key: str, value):
    def corrupt(folder: Path):
        edit(folder / "eval" / "id2name.json", lambda d: d.__setitem__(key, value))
    return corrupt


def rename_key(key: str, new: str):
    def corrupt(folder: Path):
        rewrite(folder / "eval" / "id2name.json", lambda d: {(new if k == key else k): v for k, v in d.items()})
    return corrupt


def first_genre_title(folder: Path) -> str:
    return next(iter(load(folder / "eval" / "name2genre.json")))


def write_text(rel: str, text: str):
    def corrupt(folder: Path):
        (folder / rel).write_text(text, encoding="utf-8")
    return corrupt


def write_bytes(rel: str, data: bytes):
    def corrupt(folder: Path):
        (folder / rel).write_bytes(data)
    return corrupt


def prepend_bytes(rel: str, data: bytes):
    def corrupt(folder: Path):
        (folder / rel).write_bytes(data + (folder / rel).read_bytes())
    return corrupt


def not_utf8_inside(rel: str):
    """Replace one character inside the first string of the file by a byte that is not UTF-8."""
    def corrupt(folder: Path):
        raw = (folder / rel).read_bytes()
        at = raw.index(b'"', raw.index(b'":') + 3) + 1  # inside the first value string
        (folder / rel).write_bytes(raw[:at] + b"\xe9t\xe9" + raw[at:])
    return corrupt


def one_item_catalogue(folder: Path):
    shutil.rmtree(folder)
    write_sprec_folder(make_synthetic(n_items=1, sizes=(4, 2, 2), seed=0), folder)


def sequences(obj):
    return write_text("train_sequences.json", json.dumps(obj))


def steam_gz_lines(lines: list[str]):
    def corrupt(folder: Path):
        write_gz(folder / "raw" / "steam_games.json.gz", lines)
    return corrupt


def steam_truncated(folder: Path):
    path = folder / "raw" / "steam_games.json.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def steam_not_utf8(folder: Path):
    path = folder / "raw" / "steam_games.json.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"app_name": "Caf\xe9", "genres": ["Indie"]}\n')


def rename_catalogue(folder: Path):
    """Every catalogue title renamed in id2name.json only (name2genre.json keeps the old titles)."""
    rewrite(folder / "eval" / "id2name.json", lambda d: {k: v + " [ed.]" for k, v in d.items()})


def bad_genre_in_first_list(folder: Path):
    title = first_genre_title(folder)
    edit(folder / "eval" / "name2genre.json", lambda d: d[title].append(None))
    return {"key": title}


def genre_value(value):
    def corrupt(folder: Path):
        title = first_genre_title(folder)
        edit(folder / "eval" / "name2genre.json", lambda d: d.__setitem__(title, value))
        return {"key": title}
    return corrupt


def long_history_row(n: int):
    """Row 0 of train.json lists ``n`` catalogue titles (a history no real row has; it must not hang)."""
    def corrupt(folder: Path):
        titles = list(load(folder / "eval" / "id2name.json").values())
        def fn(rows):
            head, tail = rows[0]["input"].split('"', 1)[0], rows[0]["input"].rsplit('"', 1)[1]
            rows[0]["input"] = head + quoted(titles[k % len(titles)] for k in range(n)) + tail
        edit(folder / "train.json", fn)
    return corrupt


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class Case:
    id: str
    source: str  # "synthetic", "steam" (synthetic, Steam layout) or one of the paper's folder names
    corrupt: Callable
    outcome: str  # "error" or "warning"
    file: str  # the file (or folder) the message must name
    where: str | None  # "row 3", "key '5'" (None: no row or key); "{key}" is filled by corrupt's return
    words: tuple[str, ...] = ()
    genre_dir: str | None = None  # passed as genre_dir / --genre-dir, relative to the folder
    needs_non_root: bool = False
    extra: dict = field(default_factory=dict)


E, W = "error", "warning"
ROW_FIELD = "to be a string"
CASES = [
    # Row fields of the wrong type (tracebacks before issue 12).
    Case("input-int", "synthetic", set_row_field("train", 3, "input", 42), E, "train.json", "row 3",
         ('"input"', ROW_FIELD, "int 42")),
    Case("output-list", "synthetic", set_row_field("valid", 1, "output", ["a", "b"]), E, "valid.json", "row 1",
         ('"output"', ROW_FIELD, "list")),
    Case("output-nan", "synthetic", set_row_field("test", 0, "output", math.nan), E, "test.json", "row 0",
         ('"output"', ROW_FIELD, "NaN")),
    Case("instruction-null", "synthetic", set_row_field("train", 0, "instruction", None), E, "train.json", "row 0",
         ('"instruction"', ROW_FIELD, "null")),
    Case("input-dict", "synthetic", set_row_field("valid", 4, "input", {"titles": []}), E, "valid.json", "row 4",
         ('"input"', ROW_FIELD, "dict")),
    Case("row-not-object", "synthetic",
         lambda f: edit(f / "valid.json", lambda rows: rows.__setitem__(2, "just a string")), E, "valid.json", "row 2",
         ("an object with keys", "str")),
    Case("split-not-list", "synthetic", write_text("test.json", '{"rows": []}'), E, "test.json", None,
         ("a JSON list of rows", "dict")),
    Case("split-empty", "synthetic", write_text("train.json", "[]"), E, "train.json", None, ("non-empty split",)),
    Case("key-missing", "synthetic", lambda f: edit(f / "train.json", lambda rows: rows[4].__delitem__("output")), E,
         "train.json", "row 4", ("missing ['output']",)),
    Case("input-unquoted", "synthetic", set_row_field("valid", 0, "input", "no titles at all"), E, "valid.json",
         "row 0", ("quoted titles",)),
    Case("output-unquoted", "synthetic", set_row_field("test", 2, "output", "plain text"), E, "test.json", "row 2",
         ("double quotes",)),
    # Files that cannot be read.
    Case("json-truncated", "synthetic", lambda f: (f / "valid.json").write_text((f / "valid.json").read_text()[:200]),
         E, "valid.json", None, ("valid JSON", "line")),
    Case("json-too-deep", "synthetic", write_text("train.json", "[" * 100_000 + "]" * 100_000), E, "train.json", None,
         ("valid JSON", "nested")),
    Case("json-huge-int", "synthetic", write_text("test.json", "[" + "1" * 5000 + "]"), E, "test.json", None,
         ("valid JSON", "digits")),
    Case("split-not-utf8", "synthetic", prepend_bytes("train.json", b"\xff\xfe"), E, "train.json", None, ("UTF-8",)),
    Case("id2name-not-utf8", "synthetic", not_utf8_inside("eval/id2name.json"), E, "id2name.json", None, ("UTF-8",)),
    Case("split-symlink-loop", "synthetic", lambda f: self_loop(f / "test.json"), E, "test.json", None,
         ("symlink loop",)),
    Case("genre-symlink-loop", "synthetic", lambda f: self_loop(f / "eval" / "name2genre.json"), E,
         "name2genre.json", None, ("symlink loop",)),
    Case("eval-symlink-loop", "synthetic", lambda f: self_loop(f / "eval"), E, "eval", None, ("expected a folder eval/",)),
    Case("split-dangling-symlink", "synthetic",
         lambda f: ((f / "valid.json").unlink(), os.symlink("gone.json", f / "valid.json")), E, "valid.json", None,
         ("not found",)),
    Case("split-is-directory", "synthetic", lambda f: replace_with_dir(f / "train.json"), E, "train.json", None,
         ("found a directory",)),
    Case("id2name-is-directory", "synthetic", lambda f: replace_with_dir(f / "eval" / "id2name.json"), E,
         "id2name.json", None, ("found a directory",)),
    Case("eval-is-file", "synthetic", lambda f: (shutil.rmtree(f / "eval"), (f / "eval").write_text("x")), E, "eval",
         None, ("expected a folder eval/", "found a file")),
    Case("eval-missing", "synthetic", lambda f: shutil.rmtree(f / "eval"), E, "eval", None,
         ("expected a folder eval/", "missing")),
    Case("split-unreadable", "synthetic", lambda f: os.chmod(f / "train.json", 0), E, "train.json", None,
         ("permission denied",), needs_non_root=True),
    Case("folder-missing", "synthetic", lambda f: shutil.rmtree(f), E, "synthetic", None, ("does not exist",)),
    Case("folder-is-file", "synthetic", lambda f: (shutil.rmtree(f), f.write_text("x")), E, "synthetic", None,
         ("expected a folder", "found a file")),
    Case("genre-dir-missing", "synthetic", lambda f: None, E, "no-such-genres", None, ("genre folder",),
         genre_dir="no-such-genres"),
    Case("genre-dir-empty", "synthetic", lambda f: (f / "genres").mkdir(), E, "genres", None,
         ("genre folder given", "neither is there"), genre_dir="genres"),
    # The catalogue.
    Case("id2name-missing", "synthetic", lambda f: (f / "eval" / "id2name.json").unlink(), E, "id2name.json", None,
         ("not found", "the catalogue")),
    Case("id2name-list", "synthetic", write_text("eval/id2name.json", '["a", "b"]'), E, "id2name.json", None,
         ("non-empty object", "list")),
    Case("id2name-empty", "synthetic", write_text("eval/id2name.json", "{}"), E, "id2name.json", None,
         ("non-empty object", "empty object")),
    Case("id2name-key-not-int", "synthetic", rename_key("3", "abc"), E, "id2name.json", "key 'abc'", ("integer ids",)),
    Case("id2name-key-leading-zero", "synthetic", rename_key("5", "05"), E, "id2name.json", "key '05'",
         ("leading zeros",)),
    Case("id2name-gap", "synthetic", lambda f: edit(f / "eval" / "id2name.json", lambda d: d.__delitem__("7")), E,
         "id2name.json", None, ("without gaps", "missing [7]")),
    Case("title-nan", "synthetic", set_title("3", math.nan), E, "id2name.json", "key '3'", ("title string", "NaN")),
    Case("title-int", "synthetic", set_title("4", 1234), E, "id2name.json", "key '4'", ("title string", "int 1234")),
    Case("title-list", "synthetic", set_title("5", ["a", "b"]), E, "id2name.json", "key '5'", ("title string", "list")),
    Case("title-blank", "synthetic", set_title("6", "  "), E, "id2name.json", "key '6'", ("non-empty title", "blank")),
    Case("one-item-catalogue", "synthetic", one_item_catalogue, E, "id2name.json", None, ("at least 2 items", "found 1")),
    # Genre files.
    Case("genres-not-a-list", "synthetic", genre_value("genre0"), E, "name2genre.json", "key {key!r}",
         ("list of genres", "str")),
    Case("genres-holding-int", "synthetic", genre_value(["genre0", 7]), E, "name2genre.json", "key {key!r}",
         ("genre strings", "int 7")),
    Case("name2genre-not-object", "synthetic", write_text("eval/name2genre.json", "[]"), E, "name2genre.json", None,
         ("an object", "list")),
    Case("name2genre-empty", "synthetic", write_text("eval/name2genre.json", "{}"), E, "name2genre.json", None,
         ("genres of the catalogue's items", "empty")),
    Case("catalogue-renamed", "synthetic", rename_catalogue, E, "name2genre.json", None,
         ("catalogue's titles", "id2name.json", "Synthetic item 0000 [ed.]", "renamed")),
    Case("genre-dict-list", "synthetic", write_text("eval/genre_dict.json", '["genre0"]'), E, "genre_dict.json", None,
         ("an object", "list")),
    Case("genre-dict-unknown", "synthetic", write_text("eval/genre_dict.json", '{"Western": 0, "Musical": 0}'), E,
         "genre_dict.json", None, ("genres that items carry", "Western")),
    Case("genre-dict-alone", "synthetic", lambda f: (f / "eval" / "name2genre.json").unlink(), E, "name2genre.json",
         None, ("not found", "genre_dict.json")),
    Case("name2genre-alone", "synthetic", lambda f: (f / "eval" / "genre_dict.json").unlink(), E, "genre_dict.json",
         None, ("not found", "name2genre.json")),
    # Splits that would give meaningless numbers.
    Case("train-all-outside", "synthetic", all_outside("train", True, True), E, "train.json", None,
         ("histories that name catalogue items", "Nowhere 0-0")),
    Case("valid-histories-outside", "synthetic", all_outside("valid", True, False), E, "valid.json", None,
         ("histories that name catalogue items",)),
    Case("test-targets-unknown", "synthetic", all_outside("test", False, True), E, "test.json", None,
         ("targets", "in the catalogue", "Nobody's Title 0", "HR")),
    # train_sequences.json.
    Case("sequences-str-id", "synthetic", sequences([[0, 1, "x"]]), E, "train_sequences.json", "row 0",
         ("integer item ids", "str 'x'")),
    Case("sequences-float-id", "synthetic", sequences([[0, 1], [2, 1.5]]), E, "train_sequences.json", "row 1",
         ("integer item ids", "float 1.5")),
    Case("sequences-bool-id", "synthetic", sequences([[True]]), E, "train_sequences.json", "row 0",
         ("integer item ids", "bool True")),
    Case("sequences-out-of-range", "synthetic", sequences([[0], [0, 999]]), E, "train_sequences.json", "row 1",
         ("within 0..29", "999")),
    Case("sequences-not-lists", "synthetic", sequences([1, 2, 3]), E, "train_sequences.json", "row 0",
         ("a list of item ids", "int 1")),
    Case("sequences-object", "synthetic", sequences({"0": [1]}), E, "train_sequences.json", None,
         ("a list of item-id lists", "dict")),
    # Steam metadata (read_sprec_folder joins genres from it; build-steam-genres too).
    Case("steam-not-gzip", "steam", write_text("raw/steam_games.json.gz", "plain text, not gzip"), E,
         "steam_games.json.gz", None, ("not a valid gzip file",)),
    Case("steam-truncated", "steam", steam_truncated, E, "steam_games.json.gz", None, ("truncated",)),
    Case("steam-not-utf8", "steam", steam_not_utf8, E, "steam_games.json.gz", None, ("UTF-8",)),
    Case("steam-genres-str", "steam", steam_gz_lines([json.dumps({"app_name": "A", "genres": ["Indie"]}),
                                                      json.dumps({"app_name": "B", "genres": "Action"})]), E,
         "steam_games.json.gz", "row 1", ('"genres"', "list of strings", "str 'Action'")),
    Case("steam-genres-int", "steam", steam_gz_lines([json.dumps({"app_name": "A", "genres": ["Indie", 3]})]), E,
         "steam_games.json.gz", "row 0", ('"genres"', "list of strings")),
    Case("steam-bad-line", "steam", steam_gz_lines(['{"app_name": "A", "genres": []}', "", "not a record"]), E,
         "steam_games.json.gz", "row 2", ("a JSON or Python-literal dict per line",)),
    Case("steam-line-not-dict", "steam", steam_gz_lines(["[1, 2]"]), E, "steam_games.json.gz", "row 0",
         ("a dict per line", "list")),
    Case("steam-is-directory", "steam",
         lambda f: replace_with_dir(f / "raw" / "steam_games.json.gz"), E, "steam_games.json.gz", None,
         ("found a directory",)),
    # Copies of the paper's folders.
    Case("real-movielens-input-int", "MovieLens", set_row_field("train", 17, "input", 7), E, "train.json", "row 17",
         ('"input"', ROW_FIELD, "int 7")),
    Case("real-movielens-title-nan", "MovieLens", set_title("100", math.nan), E, "id2name.json", "key '100'",
         ("title string", "NaN")),
    Case("real-movielens-valid-not-utf8", "MovieLens", not_utf8_inside("valid.json"), E, "valid.json", None,
         ("UTF-8",)),
    Case("real-movielens-sequences-str", "MovieLens", sequences([[1, 2], [3, "4"]]), E, "train_sequences.json",
         "row 1", ("integer item ids",)),
    Case("real-goodreads-renamed", "Goodreads", rename_catalogue, E, "name2genre.json", None,
         ("catalogue's titles", "[ed.]", "renamed")),
    Case("real-goodreads-targets-unknown", "Goodreads", all_outside("test", False, True), E, "test.json", None,
         ("targets", "in the catalogue")),
    Case("real-goodreads-id2name-loop", "Goodreads", lambda f: self_loop(f / "eval" / "id2name.json"), E,
         "id2name.json", None, ("symlink loop",)),
    Case("real-cds-genre-none", "CDs_and_Vinyl", bad_genre_in_first_list, E, "name2genre.json", "key {key!r}",
         ("genre strings", "null")),
    Case("real-cds-train-all-outside", "CDs_and_Vinyl", all_outside("train", True, True), E, "train.json", None,
         ("histories that name catalogue items",)),
    Case("real-steam-truncated", "Steam", steam_truncated, E, "steam_games.json.gz", None, ("truncated",)),
    Case("real-steam-not-gzip", "Steam", write_bytes("raw/steam_games.json.gz", b"{}\n"), E, "steam_games.json.gz",
         None, ("not a valid gzip file",)),
    Case("real-steam-eval-is-file", "Steam", lambda f: (shutil.rmtree(f / "eval"), (f / "eval").write_text("x")), E,
         "eval", None, ("expected a folder eval/", "found a file")),
    # Accepted with a warning.
    Case("title-twice", "synthetic", set_title("9", "Synthetic item 0002"), W, "id2name.json", None,
         ("more than one id", "'Synthetic item 0002'", "[2, 9]", "never be a target")),
    Case("no-genre-files", "synthetic",
         lambda f: ((f / "eval" / "name2genre.json").unlink(), (f / "eval" / "genre_dict.json").unlink()), W,
         "eval", None, ("no genre files", "not applicable"), extra={"genres": []}),
    Case("genre-dict-empty", "synthetic", write_text("eval/genre_dict.json", "{}"), W, "genre_dict.json", None,
         ("no genres to evaluate", "not applicable"), extra={"genres": []}),
    Case("steam-no-game-matches", "steam", steam_gz_lines(steam_records(["Other game", "Another"])), W,
         "steam_games.json.gz", None, ("no genres to evaluate", "not applicable"), extra={"genres": []}),
    Case("genre-dict-unused-genre", "synthetic",
         lambda f: edit(f / "eval" / "genre_dict.json", lambda d: d.__setitem__("Western", 0)), W, "genre_dict.json",
         None, ("carried by no catalogue item", "Western")),
    Case("name2genre-extra-title", "synthetic",
         lambda f: edit(f / "eval" / "name2genre.json", lambda d: d.__setitem__("Ghost Title", ["genre0"])), W,
         "name2genre.json", None, ("not catalogue titles", "Ghost Title")),
    Case("test-targets-partly-unknown", "synthetic",
         lambda f: edit(f / "test.json", lambda rows: [r.__setitem__("output", f'"Gone {i}"\n') for i, r in
                                                       enumerate(rows[:2])]), W,
         "test.json", None, ("2 of 5 targets", "misses")),
    Case("valid-histories-partly-outside", "synthetic",
         lambda f: edit(f / "valid.json", lambda rows: [r.__setitem__("input", "Seen: " + quoted(["Lost A", "Lost B"]))
                                                        for r in rows[:2]]), W,
         "valid.json", None, ("2 of 5 rows", "keep no history title")),
    Case("other-wording", "synthetic", set_row_field("train", 0, "instruction", "Recommend something."), W,
         "train.json", None, ("row 0", "word the prompt differently")),
    Case("real-movielens-long-history", "MovieLens", long_history_row(3000), W, "id2name.json", None,
         ("War of the Worlds (2005)", "[9147, 10669]"), extra={"history0": 3000}),
    Case("real-cds-no-genre-files", "CDs_and_Vinyl",
         lambda f: ((f / "eval" / "name2genre.json").unlink(), (f / "eval" / "genre_dict.json").unlink()), W,
         "eval", None, ("no genre files", "not applicable"), extra={"genres": []}),
]
ERRORS = [c for c in CASES if c.outcome == E]
WARNINGS = [c for c in CASES if c.outcome == W]


def test_the_table_is_large_enough():
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) >= 40 and len(ERRORS) >= 40


def build(case: Case, tmp_path: Path) -> tuple[Path, dict, list[str]]:
    """The corrupted folder, read_sprec_folder's keyword arguments, and the extra CLI arguments."""
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    if case.source == "synthetic":
        folder = synthetic_folder(tmp_path)
    elif case.source == "steam":
        folder = steam_folder(tmp_path)
    else:
        folder = real_folder(tmp_path, case.source)
    filled = case.corrupt(folder) or {}
    where = case.where.format(**filled) if case.where else None
    kwargs, cli = {}, []
    if case.genre_dir:
        kwargs["genre_dir"] = folder / case.genre_dir
        cli = ["--genre-dir", str(folder / case.genre_dir)]
    return folder, {"kwargs": kwargs, "where": where}, cli


def check_message(msg: str, case: Case, where: str | None) -> None:
    assert case.file in msg, msg
    if where is not None:
        assert where in msg, msg
    assert "expected" in msg, msg
    for w in case.words:
        assert w in msg, msg


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error(case, tmp_path, capsys):
    folder, got, cli = build(case, tmp_path)
    with pytest.raises(DataFormatError) as e:
        read_sprec_folder(folder, **got["kwargs"])
    check_message(str(e.value), case, got["where"])
    # The CLI: exit 2, one "error: ..." line naming the same file, no traceback.
    assert main(["data", "check", str(folder), *cli]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err + captured.out
    check_message(captured.err, case, got["where"])
    if case.source in ("steam", "Steam") and case.file == "steam_games.json.gz":
        # build-steam-genres reads the same file: the same clear error, and nothing written.
        out = tmp_path / "genres-out"
        with pytest.raises(DataFormatError) as e:
            build_steam_genres(folder, out)
        check_message(str(e.value), case, got["where"])
        assert main(["data", "build-steam-genres", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("case", WARNINGS, ids=[c.id for c in WARNINGS])
def test_warning(case, tmp_path, capsys):
    folder, got, cli = build(case, tmp_path)
    ds = read_sprec_folder(folder, **got["kwargs"])
    mine = [w for w in ds.warnings if case.file in w and all(word in w for word in case.words)]
    assert mine, ds.warnings
    if "genres" in case.extra:
        assert ds.genres == case.extra["genres"]
    if "history0" in case.extra:
        assert len(ds.train[0].history) == case.extra["history0"]
    assert warning_lines(ds) == [f"warning: {w}" for w in ds.warnings]
    assert main(["data", "check", str(folder), *cli]) == 0
    out = capsys.readouterr().out
    assert "warning 1" in out and "ok:" in out
    if not ds.genres:
        assert "not applicable" in out


def test_build_steam_genres_into_a_file(tmp_path, capsys):
    folder = steam_folder(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataFormatError, match="a-file: expected a folder that can be written to"):
        build_steam_genres(folder, tmp_path / "a-file")
    assert main(["data", "build-steam-genres", str(folder), "--out", str(tmp_path / "a-file")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_build_steam_genres_bad_catalogue(tmp_path, capsys):
    folder = steam_folder(tmp_path)
    set_title("2", ["not", "a", "title"])(folder)
    assert main(["data", "build-steam-genres", str(folder), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "id2name.json, key '2'" in err and not (tmp_path / "g").exists()


def test_clean_synthetic_folder_has_no_warnings(tmp_path):
    assert read_sprec_folder(synthetic_folder(tmp_path)).warnings == []


def test_real_folders_warn_only_about_the_title_listed_twice():
    if not SHARED.is_dir():
        pytest.skip("the paper's folders are not on this machine")
    warnings = {n: read_sprec_folder(SHARED / n).warnings for n in ("MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam")}
    assert warnings["Goodreads"] == warnings["CDs_and_Vinyl"] == warnings["Steam"] == []
    assert len(warnings["MovieLens"]) == 1 and "'War of the Worlds (2005)' under ids [9147, 10669]" in warnings["MovieLens"][0]


# ---------------------------------------------------------------------------------------------
# The history split: linear, and the same split as before issue 12


def old_split_history(resolve: _TitleResolver, body: str) -> list[str]:
    """The split before issue 12, verbatim (cubic in the history's length)."""
    pieces = body.split('", "')
    titles, i = [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            joined = '", "'.join(pieces[i:j])
            if j == i + 1 or resolve.lookup(joined) is not None:
                break
        titles.append(joined)
        i = j
    return titles


QUIRKY = (
    "Plain (1999)",
    'Rock, Paper", "Scissors',
    'A", "B", "C',
    'A", "B',
    'Ends with a quote"',
    '", "starts with the separator',
    "Amélie (2001)",
    'Café", "Crème',  # a multi-piece title that histories may carry as mojibake
    'x", ", "y',
    'x"',
    "WALL·E (2008)",
)


def quirky_resolver() -> _TitleResolver:
    return _TitleResolver(Catalogue(QUIRKY, tuple(() for _ in QUIRKY)))


def mojibake(t: str) -> str:
    return t.encode("utf-8").decode("latin-1")


def test_split_is_linear_in_the_history_length():
    resolve = quirky_resolver()
    assert resolve.max_pieces == 3
    counts = {}
    for n in (100, 1000):
        titles = [QUIRKY[k % len(QUIRKY)] for k in range(n)]
        before = resolve.candidates
        assert resolve.split_history(SEP.join(titles)) == titles
        counts[n] = resolve.candidates - before
    assert 9 <= counts[1000] / counts[100] <= 11, counts  # the old split tried ~n^2 runs, each joined in O(n)
    assert counts[1000] <= resolve.max_pieces * 1000


def test_split_equals_the_old_split_on_quirky_histories():
    resolve = quirky_resolver()
    pool = list(QUIRKY) + [mojibake(t) for t in QUIRKY if repair_mojibake(mojibake(t))] + [
        "Not in the catalogue", "A", "B", "C", 'Rock, Paper"', '"Scissors', "", '"', "x", "y"]
    rng = random.Random(0)
    for _ in range(2000):
        body = SEP.join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        assert resolve.split_history(body) == old_split_history(resolve, body), body


def test_split_equals_the_old_split_on_the_real_folders():
    if not SHARED.is_dir():
        pytest.skip("the paper's folders are not on this machine")
    for name in ("MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam"):
        ds = read_sprec_folder(SHARED / name)
        resolve = _TitleResolver(ds.catalogue)
        for split in ("train", "valid", "test"):
            for row in load(SHARED / name / f"{split}.json"):
                body = row["input"][row["input"].index('"') + 1: row["input"].rindex('"')]
                assert resolve.split_history(body) == old_split_history(resolve, body)


def test_unreadable_file_message(tmp_path, monkeypatch):
    """Permission denied (the table's case skips under root, which reads any file): the message still says so."""
    folder = synthetic_folder(tmp_path)
    import builtins

    from sprec_lib.data import io

    real_open = builtins.open

    def deny(path, *args, **kwargs):
        if Path(path).name == "valid.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io, "open", deny, raising=False)
    with pytest.raises(DataFormatError, match=r"valid.json: expected .* that can be read \(permission denied\)"):
        read_sprec_folder(folder)
