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
  joined text is a catalogue title.
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
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from . import SPLITS, Catalogue, DataFormatError, Dataset, Sample, Wording

_ROW_KEYS = ("instruction", "input", "output")
# Not part of the paper's format: written by `sprec data prepare` for sources with full logs.
SEQUENCES = "train_sequences.json"
_INPUT_RE = re.compile(r'^(?P<head>[^"]*)"(?P<body>.*)"(?P<tail>[^"]*)$', re.S)


def load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, None, f"valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def repair_mojibake(title: str) -> str | None:
    """The UTF-8 reading of a title that was decoded as Latin-1, or None if that does not round-trip."""
    try:
        fixed = title.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    return fixed if fixed != title and fixed.encode("utf-8").decode("latin-1") == title else None


class _TitleResolver:
    """Title text -> item id, with the mojibake repair; counts what it repaired."""

    def __init__(self, catalogue: Catalogue):
        self.id_of, self.titles, self.repaired = catalogue.id_of, catalogue.titles, 0

    def __call__(self, title: str) -> int | None:
        if title in self.id_of:
            return self.id_of[title]
        fixed = repair_mojibake(title)
        if fixed is not None and fixed in self.id_of:
            self.repaired += 1
            return self.id_of[fixed]
        return None

    def split_history(self, body: str) -> list[str]:
        """Split ``t1", "t2", "t3`` into titles, re-joining pieces that form a catalogue title."""
        pieces = body.split('", "')
        titles, i = [], 0
        while i < len(pieces):
            # Longest run of pieces starting at i that names a catalogue item; else the lone piece.
            for j in range(len(pieces), i, -1):
                joined = '", "'.join(pieces[i:j])
                if j == i + 1 or self(joined) is not None:
                    break
            titles.append(joined)
            i = j
        return titles


def parse_rows(path: Path, rows, resolve: _TitleResolver) -> tuple[list[Sample], Counter, int]:
    """Rows of one split -> samples, the wordings seen, and how many history titles had no id."""
    if not isinstance(rows, list):
        raise DataFormatError(path, None, "a JSON list of rows")
    if not rows:
        raise DataFormatError(path, None, "a non-empty split (the file holds no rows)")
    samples, wordings, outside = [], Counter(), 0
    for r, row in enumerate(rows):
        if not isinstance(row, dict) or any(k not in row for k in _ROW_KEYS):
            missing = [k for k in _ROW_KEYS if not isinstance(row, dict) or k not in row]
            raise DataFormatError(path, r, f"an object with keys {list(_ROW_KEYS)} (missing {missing})")
        m = _INPUT_RE.match(row["input"])
        if m is None:
            raise DataFormatError(path, r, f'an "input" with quoted titles, got {row["input"][:80]!r}')
        if not m["body"].strip():
            raise DataFormatError(path, r, "a non-empty history in \"input\"")
        out = row["output"]
        om = re.match(r'^"(?P<title>.*)"(?P<tail>\s*)$', out, re.S)
        if om is None:
            raise DataFormatError(path, r, f'an "output" of the form "\\"<title>\\"", got {out[:80]!r}')
        titles = resolve.split_history(m["body"])
        ids = [resolve(t) for t in titles]
        outside += sum(i is None for i in ids)
        history = tuple(i for i in ids if i is not None)
        target = resolve(om["title"])
        samples.append(Sample(history, target, om["title"] if target is None else resolve.titles[target]))
        wordings[(row["instruction"], m["head"], m["tail"], om["tail"])] += 1
    return samples, wordings, outside


def read_catalogue(folder: Path, genre_dir: Path | None = None) -> tuple[Catalogue, list[str], dict[str, int]]:
    """The catalogue (with genres), the evaluated genre list, and notes.

    Genre files are taken from ``genre_dir`` when given (e.g. the output of
    ``sprec data build-steam-genres``), else from ``eval/``.
    """
    ev = folder / "eval"
    id2name = load_json(ev / "id2name.json")
    if not isinstance(id2name, dict) or not id2name:
        raise DataFormatError(ev / "id2name.json", None, 'a non-empty object {"<id>": "<title>"}')
    try:
        ids = sorted(int(k) for k in id2name)
    except ValueError as e:
        raise DataFormatError(ev / "id2name.json", None, f"integer ids as keys ({e})") from None
    if ids != list(range(len(ids))):
        raise DataFormatError(ev / "id2name.json", None, f"ids 0..{len(ids) - 1} without gaps")
    titles = tuple(str(id2name[str(i)]) for i in ids)

    notes: dict[str, int] = {}
    gdir = Path(genre_dir) if genre_dir is not None else ev
    genre_file, genre_dict_file = gdir / "name2genre.json", gdir / "genre_dict.json"
    if genre_file.exists():
        name2genre = load_json(genre_file)
        if not isinstance(name2genre, dict):
            raise DataFormatError(genre_file, None, 'an object {"<title>": ["genre", ...]}')
        genre_dict = load_json(genre_dict_file)
    elif (folder / "raw" / "steam_games.json.gz").exists():
        from .steam import steam_genres

        name2genre, genre_dict = steam_genres(folder)
    else:
        name2genre, genre_dict = {}, {}
    if not isinstance(genre_dict, dict):
        raise DataFormatError(genre_dict_file, None, 'an object {"<genre>": 0, ...}')
    for t, gs in name2genre.items():
        if not isinstance(gs, list):
            raise DataFormatError(genre_file, None, f"a list of genres for {t!r}, got {type(gs).__name__}")
    genres = [tuple(name2genre.get(t, ())) for t in titles]

    # A label carried by every item is the catalogue's root ("CDs & Vinyl"), not a genre.
    counts = Counter(g for gs in genres for g in set(gs))
    roots = {g for g, c in counts.items() if c == len(titles)} if len(titles) > 1 else set()
    if roots:
        genres = [tuple(g for g in gs if g not in roots) for gs in genres]
        notes["root_labels_dropped"] = len(roots)
    evaluated = list(genre_dict)
    known = {g for gs in genres for g in gs}
    if evaluated and not set(evaluated) & known:
        raise DataFormatError(genre_dict_file, None, f"genres that items carry; none of {evaluated[:5]} is an item's genre")
    return Catalogue(titles, tuple(genres)), evaluated, notes


def read_sprec_folder(folder: str | Path, name: str | None = None, genre_dir: str | Path | None = None) -> Dataset:
    """Read a folder of the paper's format (see the module docstring for the quirks handled)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "a folder with train.json, valid.json, test.json and eval/")
    catalogue, evaluated, notes = read_catalogue(folder, genre_dir)
    resolve = _TitleResolver(catalogue)
    splits, wordings, outside = {}, Counter(), 0
    for split in SPLITS:
        path = folder / f"{split}.json"
        samples, seen, out = parse_rows(path, load_json(path), resolve)
        splits[split], outside = samples, outside + out
        wordings.update(seen)
    (instruction, head, tail, out_tail), _ = wordings.most_common(1)[0]
    notes.update(
        titles_repaired=resolve.repaired,
        history_titles_outside_catalogue=outside,
        targets_outside_catalogue=sum(s.target is None for sp in splits.values() for s in sp),
        rows_left_with_empty_history=sum(not s.history for sp in splits.values() for s in sp),
        rows_with_other_wording=sum(wordings.values()) - wordings.most_common(1)[0][1],
    )
    sequences = None
    if (folder / SEQUENCES).exists():
        raw = load_json(folder / SEQUENCES)
        if not isinstance(raw, list) or not all(isinstance(q, list) for q in raw):
            raise DataFormatError(folder / SEQUENCES, None, "a list of item-id lists")
        sequences = [tuple(int(i) for i in q) for q in raw]
        if any(not 0 <= i < len(catalogue) for q in sequences for i in q):
            raise DataFormatError(folder / SEQUENCES, None, f"item ids within 0..{len(catalogue) - 1}")
    return Dataset(
        name=name or folder.name,
        catalogue=catalogue,
        splits=splits,
        genres=evaluated,
        wording=Wording(instruction, head, tail, out_tail),
        notes=notes,
        sequences=sequences,
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
