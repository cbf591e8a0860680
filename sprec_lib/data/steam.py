"""Steam genres: the released Steam folder ships no genre files, so join them from the UCSD metadata.

``raw/steam_games.json.gz`` holds one dict per line (JSON with ``NaN``; older copies are Python
literals, so both are accepted) with ``app_name``, ``title`` and ``genres``. A catalogue title is
matched to ``app_name`` first, then ``title``, exactly (6,184 of the 6,187 titles in the released
splits name a game; 54 of those games list no genres and so get none: we do not fall back to
``tags``). The evaluated genres are the ``top_n`` most frequent among catalogue items (10 of 22;
counting over the titles of the splits instead gives the same ten).

A file that is not gzip, is truncated, is not UTF-8, or holds a line that is no dict, or a
``genres`` that is neither a list of strings nor missing (NaN), raises
:class:`~sprec_lib.data.DataFormatError` naming the file and the line (0-based).
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import zlib
from collections import Counter
from pathlib import Path

from . import DataFormatError
from .io import describe, os_error_expected, read_titles

STEAM_GAMES = Path("raw") / "steam_games.json.gz"
_WHAT = "the UCSD Steam metadata, a gzip file of one dict per line"


def _genres(path: Path, n: int, genres) -> list[str]:
    if genres is None or (isinstance(genres, float) and math.isnan(genres)):
        return []  # a game without genres
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        raise DataFormatError(path, n, f'expected "genres" to be a list of strings (or NaN), got {describe(genres)}')
    return list(genres)


def read_steam_games(path: Path) -> dict[str, list[str]]:
    """Game name -> genres, from ``steam_games.json.gz`` (first record of a name wins)."""
    path = Path(path)
    by_app, by_title = {}, {}
    read = 0  # lines read so far, for the errors of the gzip stream itself
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f):
                read = n + 1
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        rec = ast.literal_eval(line)
                    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                        raise DataFormatError(path, n, "expected a JSON or Python-literal dict per line") from None
                except (ValueError, RecursionError) as e:  # e.g. an integer too long to convert
                    raise DataFormatError(path, n, f"expected a JSON or Python-literal dict per line ({e})") from None
                if not isinstance(rec, dict):
                    raise DataFormatError(path, n, f"expected a dict per line, got {describe(rec)}")
                genres = _genres(path, n, rec.get("genres"))
                for key, table in (("app_name", by_app), ("title", by_title)):
                    name = rec.get(key)
                    if isinstance(name, str):  # missing names are NaN floats
                        table.setdefault(name, genres)
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(path, None, f"expected {_WHAT}; it is not a valid gzip file ({e}; after {read} lines)") from None
    except EOFError:
        raise DataFormatError(path, None, f"expected {_WHAT}; the gzip stream is truncated (the file ends early, "
                              f"after {read} lines)") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"expected UTF-8 text inside the gzip file ({e.reason}; after {read} lines)") from None
    except OSError as e:
        raise DataFormatError(path, None, os_error_expected(e, _WHAT)) from None
    return {**by_title, **by_app}  # app_name wins over title


def steam_genres(folder: Path, top_n: int = 10, titles=None) -> tuple[dict[str, list[str]], dict[str, int]]:
    """``(name2genre, genre_dict)`` for the catalogue of a Steam folder of the paper's format.

    ``titles``: the catalogue's titles when the caller has read them already.
    """
    titles = load_titles(folder) if titles is None else titles
    games = read_steam_games(Path(folder) / STEAM_GAMES)
    name2genre = {t: games[t] for t in titles if t in games}
    counts = Counter(g for t in titles for g in name2genre.get(t, ()))
    top = [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]
    return name2genre, {g: 0 for g in top}


def build_steam_genres(folder: str | Path, out: str | Path, top_n: int = 10) -> dict[str, int]:
    """Write ``name2genre.json`` and ``genre_dict.json`` for a Steam folder into ``out``; return counts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "expected a Steam folder of the paper's format (eval/id2name.json, "
                              "raw/steam_games.json.gz)")
    titles = load_titles(folder)
    name2genre, genre_dict = steam_genres(folder, top_n, titles=titles)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, obj in (("name2genre.json", name2genre), ("genre_dict.json", genre_dict)):
            tmp = out / f".{name}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(obj, f, ensure_ascii=False, indent=1)
            tmp.replace(out / name)
    except OSError as e:
        raise DataFormatError(out, None, f"expected a folder that can be written to ({e.strerror or e})") from None
    return {"catalogue": len(titles), "matched": len(name2genre), "with_genres": sum(bool(g) for g in name2genre.values()),
            "genres": len(genre_dict)}


def load_titles(folder) -> list[str]:
    """The catalogue's titles, in id order, from ``eval/id2name.json`` (checked as read_sprec_folder does)."""
    return list(read_titles(Path(folder) / "eval" / "id2name.json"))
