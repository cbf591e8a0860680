"""Read and write folders in the SPRec paper's on-disk format.

```
DIR/train.json, valid.json, test.json   lists of {"instruction", "input", "output"}
DIR/eval/id2name.json                    {"<id>": "<title>"}       the catalogue
DIR/eval/name2id.json                    {"<title>": <id>}
DIR/eval/name2genre.json                 {"<title>": ["genre", ...]}
DIR/eval/genre_dict.json                 {"<genre>": 0, ...}       the genres MGU/GU evaluate
```

``input`` reads ``<head>"t1", "t2", ..., "tn"<tail>``; ``output`` reads ``"<title>"`` plus an
optional newline. The quirks of the four released folders, each handled here:

* Mojibake: some MovieLens titles in the splits are UTF-8 bytes read as Latin-1 (``WALLÂ·E``).
  A title not in the catalogue is repaired with ``s.encode("latin-1").decode("utf-8")`` only
  where that round-trips and the repaired title is in the catalogue.
* Titles contain commas, quotes and ``#`` (CDs titles even end in ``" />``), so a history cannot
  be split on ``", "`` blindly: pieces are re-joined greedily, longest first, wherever the
  joined text is a catalogue title. Only runs of at most ``1 + max(title.count('", "'))``
  pieces can name a title, and only runs whose length is a multi-piece title's (or its UTF-8
  byte length, for mojibake): so the split is linear in the history's length (the released
  catalogues have no multi-piece title at all).
* Histories may repeat a title (Steam, CDs): kept, as the sequence the user saw.
* A history title not in the catalogue (e.g. Steam's ``Spy Fox in "Dry Cereal``, whose catalogue
  entry was cut at the quote) has no item id: it is dropped from ``history`` and counted in
  ``notes["history_titles_outside_catalogue"]``. A target not in the catalogue is kept with
  ``target=None``; the metrics count such rows in N (the paper's code divides HR/NDCG by all rows).
* A label that every catalogue item carries (CDs' "CDs & Vinyl") is a root, not a genre: dropped.
* ``train_sequences.json`` (ours, optional): each user's item ids up to their last training
  target, written by ``sprec data prepare`` for sources with full logs.
* Steam ships no genre files: when ``eval/name2genre.json`` is missing and ``raw/steam_games.json.gz``
  is present, genres are joined from it in memory (see :mod:`sprec_lib.data.steam`).
* A title listed under two ids (MovieLens' ``War of the Worlds (2005)``) resolves to its first id,
  as the paper's ``name2id``; the second id can never be a target: a warning says so.

Every malformed folder raises :class:`~sprec_lib.data.DataFormatError` naming the file, the row
(0-based) or key, and what was expected. What is suspicious but can be read is accepted with a
sentence in ``Dataset.warnings`` (callers print and record them).

Errors (each names the file, and the row or key where there is one):

* a row field (``instruction``, ``input``, ``output``) that is not a string (names the field and
  the type found); a row that is no object or lacks a field; an ``input``/``output`` not quoted;
* a file missing, a directory or a symlink loop where a file should be, bytes that are not UTF-8,
  invalid JSON; ``eval/`` a file or missing; a ``genre_dir`` that is no folder or holds neither file;
* ``id2name.json``: ids not ``0..n-1`` written plainly, a title that is no non-empty string (NaN,
  an int, a list), fewer than 2 items;
* ``name2genre.json``: a value that is no list of strings; no key that is a catalogue title
  (titles renamed in one file only); only one of ``name2genre.json`` / ``genre_dict.json``;
* ``genre_dict.json``: no genre that any item carries;
* a split where no row keeps a history title, or where every target is outside the catalogue;
* ``train_sequences.json``: ids that are not integers of the catalogue.

Warnings (accepted; each names the file):

* a title listed under two ids;
* no genre files, or no genre to evaluate: ``Dataset.genres == []``, and MGU, DGU and GU are not
  applicable (n/a);
* ``name2genre.json`` titles outside the catalogue, ``genre_dict.json`` genres no item carries;
* over 10% of a split's targets, history titles or histories outside the catalogue (the released
  folders reach at most 1.0%: CDs' targets);
* rows whose prompt wording differs from the most common one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from . import SPLITS, Catalogue, DataFormatError, Dataset, Sample, Wording
from .io import describe, load_json, present, read_titles
from .steam import STEAM_GAMES, steam_genres

__all__ = ["SEQUENCES", "format_row", "load_json", "parse_rows", "read_catalogue", "read_sprec_folder", "repair_mojibake",
           "write_sprec_folder"]

_ROW_KEYS = ("instruction", "input", "output")
# Not part of the paper's format: written by `sprec data prepare` for sources with full logs.
SEQUENCES = "train_sequences.json"
_INPUT_RE = re.compile(r'^(?P<head>[^"]*)"(?P<body>.*)"(?P<tail>[^"]*)$', re.S)
_OUTPUT_RE = re.compile(r'^"(?P<title>.*)"(?P<tail>\s*)$', re.S)
SEP = '", "'
# A split with more than this share of its targets, history titles or histories outside the
# catalogue gets a warning (the released folders reach at most 1.0%: CDs_and_Vinyl's targets).
WARN_SHARE = 0.10


def repair_mojibake(title: str) -> str | None:
    """The UTF-8 reading of a title that was decoded as Latin-1, or None if that does not round-trip."""
    try:
        fixed = title.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    return fixed if fixed != title and fixed.encode("utf-8").decode("latin-1") == title else None


class _TitleResolver:
    """Title text -> item id, with the mojibake repair; counts what it repaired.

    For :meth:`split_history`: a run of ``k >= 2`` pieces re-joined with ``'", "'`` holds at
    least ``k - 1`` separate separators, and so does its mojibake repair (the repair keeps every
    ASCII character and its neighbours), so it can only name a catalogue title with at least
    ``k - 1`` separators: ``k <= max_pieces``. It must also be as long as such a title, or as
    its UTF-8 bytes (a mojibake reading has one character per byte): ``multi_lengths``. Both
    only skip runs that cannot resolve, so the split is the exhaustive longest-first one.
    """

    def __init__(self, catalogue: Catalogue):
        self.id_of, self.titles, self.repaired = catalogue.id_of, catalogue.titles, 0
        multi = [t for t in self.id_of if SEP in t]
        self.max_pieces = 1 + max((t.count(SEP) for t in multi), default=0)
        self.multi_lengths = frozenset(len(t) for t in multi) | frozenset(len(t.encode("utf-8")) for t in multi)
        self.candidates = 0  # runs of pieces considered by split_history (the linear-size test counts them)

    def lookup(self, title: str) -> int | None:
        """The id of ``title`` (or of its mojibake repair), without counting the repair."""
        if title in self.id_of:
            return self.id_of[title]
        fixed = repair_mojibake(title)
        if fixed is not None and fixed in self.id_of:
            return self.id_of[fixed]
        return None

    def __call__(self, title: str) -> int | None:
        if title in self.id_of:
            return self.id_of[title]
        i = self.lookup(title)
        if i is not None:
            self.repaired += 1
        return i

    def split_history(self, body: str) -> list[str]:
        """Split ``t1", "t2", "t3`` into titles, re-joining pieces that form a catalogue title."""
        pieces = body.split(SEP)
        n = len(pieces)
        if self.max_pieces == 1:  # no catalogue title holds the separator: every piece is a title
            self.candidates += n
            return pieces
        start = list(accumulate((len(p) for p in pieces), initial=0))  # start[j]: length of pieces[:j]
        titles, i = [], 0
        while i < n:
            # Longest run of pieces starting at i that names a catalogue item; else the lone piece.
            j = i + 1
            for k in range(min(n, i + self.max_pieces), i + 1, -1):
                self.candidates += 1
                if start[k] - start[i] + len(SEP) * (k - i - 1) in self.multi_lengths \
                        and self.lookup(SEP.join(pieces[i:k])) is not None:
                    j = k
                    break
            self.candidates += j == i + 1
            titles.append(SEP.join(pieces[i:j]))
            i = j
        return titles


@dataclass
class _Split:
    """One split read: its samples, each row's wording, and what fell outside the catalogue."""

    samples: list[Sample]
    wordings: list[tuple[str, str, str, str]]
    history_titles: int = 0
    history_outside: int = 0
    example_outside: str | None = None  # a history title not in the catalogue


def parse_rows(path: Path, rows, resolve: _TitleResolver) -> _Split:
    """Rows of one split -> samples, each row's wording, and the history titles that had no id."""
    if not isinstance(rows, list):
        raise DataFormatError(path, None, f'expected a JSON list of rows {{"instruction", "input", "output"}}, '
                              f"got {describe(rows)}")
    if not rows:
        raise DataFormatError(path, None, "expected a non-empty split (the file holds no rows)")
    out = _Split([], [])
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFormatError(path, r, f"expected an object with keys {list(_ROW_KEYS)}, got {describe(row)}")
        missing = [k for k in _ROW_KEYS if k not in row]
        if missing:
            raise DataFormatError(path, r, f"expected an object with keys {list(_ROW_KEYS)} (missing {missing})")
        for k in _ROW_KEYS:
            if not isinstance(row[k], str):
                raise DataFormatError(path, r, f'expected "{k}" to be a string, got {describe(row[k])}')
        m = _INPUT_RE.match(row["input"])
        if m is None:
            raise DataFormatError(path, r, f'expected an "input" with quoted titles, got {row["input"][:80]!r}')
        if not m["body"].strip():
            raise DataFormatError(path, r, 'expected a non-empty history in "input"')
        om = _OUTPUT_RE.match(row["output"])
        if om is None:
            raise DataFormatError(path, r, f'expected an "output" that is a title in double quotes (then optional whitespace), '
                                  f'got {row["output"][:80]!r}')
        titles = resolve.split_history(m["body"])
        ids = [resolve(t) for t in titles]
        if out.example_outside is None:
            out.example_outside = next((t for t, i in zip(titles, ids) if i is None), None)
        out.history_titles += len(ids)
        out.history_outside += sum(i is None for i in ids)
        history = tuple(i for i in ids if i is not None)
        target = resolve(om["title"])
        out.samples.append(Sample(history, target, om["title"] if target is None else resolve.titles[target]))
        out.wordings.append((row["instruction"], m["head"], m["tail"], om["tail"]))
    return out


def _read_genre_files(gdir: Path) -> tuple[dict, dict, Path, Path]:
    genre_file, genre_dict_file = gdir / "name2genre.json", gdir / "genre_dict.json"
    name2genre = load_json(genre_file, 'the items\' genres {"<title>": ["<genre>", ...]} '
                           "(it goes with genre_dict.json)")
    if not isinstance(name2genre, dict):
        raise DataFormatError(genre_file, None, f'expected an object {{"<title>": ["<genre>", ...]}}, got {describe(name2genre)}')
    genre_dict = load_json(genre_dict_file, 'the evaluated genres {"<genre>": 0, ...} (it goes with name2genre.json)')
    if not isinstance(genre_dict, dict):
        raise DataFormatError(genre_dict_file, None, f'expected an object {{"<genre>": 0, ...}}, got {describe(genre_dict)}')
    return name2genre, genre_dict, genre_file, genre_dict_file


def read_catalogue(folder: Path, genre_dir: Path | None = None,
                   warnings: list[str] | None = None) -> tuple[Catalogue, list[str], dict[str, int]]:
    """The catalogue (with genres), the evaluated genre list, and notes.

    Genre files are taken from ``genre_dir`` when given (e.g. the output of
    ``sprec data build-steam-genres``), else from ``eval/``. Warnings are appended to ``warnings``.
    """
    warnings = [] if warnings is None else warnings
    folder = Path(folder)
    ev = folder / "eval"
    if not ev.is_dir():
        found = "it is missing" if not present(ev) else "found a file" if ev.is_file() else "found no folder (a broken link?)"
        raise DataFormatError(ev, None, "expected a folder eval/ holding id2name.json, name2genre.json and "
                              f"genre_dict.json; {found}")
    id2name = ev / "id2name.json"
    titles = read_titles(id2name)
    if len(titles) < 2:
        raise DataFormatError(id2name, None, f"expected a catalogue of at least 2 items, found {len(titles)} "
                              "(every recommendation would be that item)")
    ids_of: dict[str, list[int]] = {}
    for i, t in enumerate(titles):
        ids_of.setdefault(t, []).append(i)
    twice = {t: ids for t, ids in ids_of.items() if len(ids) > 1}
    if twice:
        t, ids = next(iter(twice.items()))
        warnings.append(f"{id2name}: {len(twice)} title(s) listed under more than one id, e.g. {t!r} under ids {ids}; "
                        f"a title resolves to its first id, so id(s) {ids[1:]} can never be a target or a recommendation")

    notes: dict[str, int] = {}
    gdir = Path(genre_dir) if genre_dir is not None else ev
    no_genres = None  # why there are no genres to evaluate, when there are none
    if genre_dir is not None and not gdir.is_dir():
        raise DataFormatError(gdir, None, "expected a folder holding name2genre.json and genre_dict.json "
                              "(the genre folder given)")
    if present(gdir / "name2genre.json") or present(gdir / "genre_dict.json"):
        name2genre, genre_dict, genre_file, genre_dict_file = _read_genre_files(gdir)
    elif genre_dir is not None:
        raise DataFormatError(gdir, None, "expected name2genre.json and genre_dict.json in the genre folder given; "
                              "neither is there")
    elif present(folder / STEAM_GAMES):
        name2genre, genre_dict = steam_genres(folder, titles=titles)
        genre_file = genre_dict_file = folder / STEAM_GAMES
    else:
        name2genre, genre_dict, genre_file, genre_dict_file = {}, {}, gdir / "name2genre.json", gdir / "genre_dict.json"
        no_genres = f"{gdir}: no genre files (name2genre.json, genre_dict.json) and no raw/steam_games.json.gz"
    for t, gs in name2genre.items():
        if not isinstance(gs, list):
            raise DataFormatError(genre_file, None, f"expected a list of genres, got {describe(gs)}", key=t)
        bad = [g for g in gs if not isinstance(g, str)]
        if bad:
            raise DataFormatError(genre_file, None, f"expected a list of genre strings, got {describe(bad[0])} in it", key=t)
    if genre_dict and not name2genre:
        raise DataFormatError(genre_file, None, "expected the genres of the catalogue's items; the object is empty")
    if name2genre:
        known_titles = set(titles)
        unknown = [t for t in name2genre if t not in known_titles]
        if len(unknown) == len(name2genre):
            raise DataFormatError(genre_file, None, f"expected the catalogue's titles ({id2name}) as keys; none of its "
                                  f"{len(name2genre)} titles is a catalogue title (e.g. {unknown[0]!r}, while the "
                                  f"catalogue has {titles[0]!r}): were the titles renamed in one file only?")
        if unknown:
            warnings.append(f"{genre_file}: {len(unknown)} of its {len(name2genre)} titles are not catalogue titles "
                            f"(e.g. {unknown[0]!r}); their genres are unused")
    genres = [tuple(name2genre.get(t, ())) for t in titles]

    # A label carried by every item is the catalogue's root ("CDs & Vinyl"), not a genre.
    counts = Counter(g for gs in genres for g in set(gs))
    roots = {g for g, c in counts.items() if c == len(titles)}
    if roots:
        genres = [tuple(g for g in gs if g not in roots) for gs in genres]
        notes["root_labels_dropped"] = len(roots)
    evaluated = list(genre_dict)
    no_genres = no_genres or f"{genre_dict_file}: no genres to evaluate"
    known = {g for gs in genres for g in gs}
    if evaluated and not set(evaluated) & known:
        raise DataFormatError(genre_dict_file, None,
                              f"expected genres that items carry; none of {evaluated[:5]} is an item's genre")
    if not evaluated:
        warnings.append(f"{no_genres}: the dataset has no evaluated genres, so MGU, DGU and GU are not applicable (n/a)")
    unused = [g for g in evaluated if g not in known]
    if unused:
        warnings.append(f"{genre_dict_file}: {len(unused)} of its {len(evaluated)} genres are carried by no catalogue item "
                        f"({unused[:5]}); their GU is always 0")
    return Catalogue(titles, tuple(genres)), evaluated, notes


def _read_sequences(path: Path, n_items: int) -> list[tuple[int, ...]]:
    raw = load_json(path, "a list of item-id lists")
    if not isinstance(raw, list):
        raise DataFormatError(path, None, f"expected a list of item-id lists, got {describe(raw)}")
    for r, q in enumerate(raw):
        if not isinstance(q, list):
            raise DataFormatError(path, r, f"expected a list of item ids, got {describe(q)}")
        if all(type(i) is int and 0 <= i < n_items for i in q):
            continue
        for i in q:
            if type(i) is not int:
                raise DataFormatError(path, r, f"expected integer item ids, got {describe(i)}")
            if not 0 <= i < n_items:
                raise DataFormatError(path, r, f"expected item ids within 0..{n_items - 1}, got {i}")
    return [tuple(q) for q in raw]


def read_sprec_folder(folder: str | Path, name: str | None = None, genre_dir: str | Path | None = None) -> Dataset:
    """Read a folder of the paper's format (see the module docstring for the quirks handled).

    Raises :class:`DataFormatError` for a malformed folder; ``Dataset.warnings`` lists what was
    accepted but should be read (see the module docstring's table).
    """
    folder = Path(folder)
    if not folder.is_dir():
        found = "it does not exist" if not present(folder) else "found a file" if folder.is_file() else "found no folder"
        raise DataFormatError(folder, None, f"expected a folder with train.json, valid.json, test.json and eval/; {found}")
    warnings: list[str] = []
    catalogue, evaluated, notes = read_catalogue(folder, genre_dir, warnings)
    resolve = _TitleResolver(catalogue)
    splits, parsed = {}, {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        sp = parse_rows(path, load_json(path, 'a JSON list of rows {"instruction", "input", "output"}'), resolve)
        n, empty = len(sp.samples), sum(not s.history for s in sp.samples)
        outside = [s.target_title for s in sp.samples if s.target is None]
        if empty == n:
            raise DataFormatError(path, None, f"expected histories that name catalogue items; no history title of its {n} "
                                  f"rows is in the catalogue (eval/id2name.json), e.g. {sp.example_outside!r}")
        if len(outside) == n:
            raise DataFormatError(path, None, f'expected targets ("output") in the catalogue; all {n} are outside '
                                  f"eval/id2name.json, e.g. {outside[0]!r} (HR and NDCG would be 0 by construction)")
        if len(outside) > WARN_SHARE * n:
            warnings.append(f"{path}: {len(outside)} of {n} targets ({len(outside) / n:.0%}) are not catalogue titles "
                            f"(e.g. {outside[0]!r}); they count as misses in HR and NDCG")
        if sp.history_outside > WARN_SHARE * sp.history_titles:
            warnings.append(f"{path}: {sp.history_outside} of {sp.history_titles} history titles "
                            f"({sp.history_outside / sp.history_titles:.0%}) are not catalogue titles "
                            f"(e.g. {sp.example_outside!r}); they are dropped from the histories")
        if empty > WARN_SHARE * n:
            warnings.append(f"{path}: {empty} of {n} rows ({empty / n:.0%}) keep no history title in the catalogue "
                            "(their history is empty)")
        splits[split], parsed[split] = sp.samples, sp
    wordings = Counter(w for sp in parsed.values() for w in sp.wordings)
    (instruction, head, tail, out_tail), n_common = wordings.most_common(1)[0]
    for split, sp in parsed.items():
        other = [r for r, w in enumerate(sp.wordings) if w != (instruction, head, tail, out_tail)]
        if other:
            warnings.append(f"{folder / f'{split}.json'}: {len(other)} row(s) (e.g. row {other[0]}) word the prompt "
                            "differently from the most common wording; prompts are rebuilt with the most common one")
    notes.update(
        titles_repaired=resolve.repaired,
        history_titles_outside_catalogue=sum(sp.history_outside for sp in parsed.values()),
        targets_outside_catalogue=sum(s.target is None for sp in splits.values() for s in sp),
        rows_left_with_empty_history=sum(not s.history for sp in splits.values() for s in sp),
        rows_with_other_wording=sum(wordings.values()) - n_common,
    )
    sequences = _read_sequences(folder / SEQUENCES, len(catalogue)) if present(folder / SEQUENCES) else None
    return Dataset(
        name=name or folder.name,
        catalogue=catalogue,
        splits=splits,
        genres=evaluated,
        wording=Wording(instruction, head, tail, out_tail),
        notes=notes,
        sequences=sequences,
        warnings=warnings,
    )


def format_row(sample: Sample, catalogue: Catalogue, wording: Wording) -> dict[str, str]:
    history = ", ".join(f'"{catalogue.titles[i]}"' for i in sample.history)
    title = sample.target_title if sample.target is None else catalogue.titles[sample.target]
    return {
        "instruction": wording.instruction,
        "input": f"{wording.input_head}{history}{wording.input_tail}",
        "output": f'"{title}"{wording.output_tail}',
    }


def write_sprec_folder(dataset: Dataset, folder: str | Path) -> Path:
    """Write ``dataset`` as a folder of the paper's format that :func:`read_sprec_folder` reads back."""
    folder = Path(folder)
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    cat = dataset.catalogue

    def dump(obj, path):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        tmp.replace(path)  # a crash never leaves a half-written file behind

    for split in SPLITS:
        dump([format_row(s, cat, dataset.wording) for s in dataset.splits[split]], folder / f"{split}.json")
    dump({str(i): t for i, t in enumerate(cat.titles)}, folder / "eval" / "id2name.json")
    dump(cat.id_of, folder / "eval" / "name2id.json")
    dump({t: list(cat.genres[i]) for t, i in cat.id_of.items()}, folder / "eval" / "name2genre.json")
    dump({g: 0 for g in dataset.genres}, folder / "eval" / "genre_dict.json")
    if dataset.sequences is not None:
        with open(folder / SEQUENCES, "w", encoding="utf-8") as f:
            json.dump([list(q) for q in dataset.sequences], f, separators=(",", ":"))
    return folder
