"""Steam genres: the released Steam folder ships no genre files, so join them from the UCSD metadata.

``raw/steam_games.json.gz`` holds one dict per line (JSON with ``NaN``; older copies are Python
literals, so both are accepted) with ``app_name``, ``title`` and ``genres``. A catalogue title is
matched to ``app_name`` first, then ``title``, exactly (6,184 of the 6,187 titles in the released
splits name a game; 54 of those games list no genres and so get none: we do not fall back to
``tags``). The evaluated genres are the ``top_n`` most frequent among catalogue items (10 of 22;
counting over the titles of the splits instead gives the same ten).
"""

from __future__ import annotations

import ast
import gzip
import json
from collections import Counter
from pathlib import Path

from . import DataFormatError

STEAM_GAMES = Path("raw") / "steam_games.json.gz"


def read_steam_games(path: Path) -> dict[str, list[str]]:
    """Game name -> genres, from ``steam_games.json.gz`` (first record of a name wins)."""
    by_app, by_title = {}, {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                try:
                    rec = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataFormatError(path, n, "a JSON or Python-literal dict per line") from None
            if not isinstance(rec, dict):
                raise DataFormatError(path, n, "a dict per line")
            genres = rec.get("genres")
            genres = list(genres) if isinstance(genres, list) else []
            for key, table in (("app_name", by_app), ("title", by_title)):
                name = rec.get(key)
                if isinstance(name, str):  # missing names are NaN floats
                    table.setdefault(name, genres)
    return {**by_title, **by_app}  # app_name wins over title


def steam_genres(folder: Path, top_n: int = 10) -> tuple[dict[str, list[str]], dict[str, int]]:
    """``(name2genre, genre_dict)`` for the catalogue of a Steam folder of the paper's format."""
    games = read_steam_games(Path(folder) / STEAM_GAMES)
    titles = load_titles(folder)
    name2genre = {t: games[t] for t in titles if t in games}
    counts = Counter(g for t in titles for g in name2genre.get(t, ()))
    top = [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]
    return name2genre, {g: 0 for g in top}


def build_steam_genres(folder: str | Path, out: str | Path, top_n: int = 10) -> dict[str, int]:
    """Write ``name2genre.json`` and ``genre_dict.json`` for a Steam folder into ``out``; return counts."""
    name2genre, genre_dict = steam_genres(Path(folder), top_n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("name2genre.json", name2genre), ("genre_dict.json", genre_dict)):
        with open(out / name, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
    return {"catalogue": len(load_titles(folder)), "matched": len(name2genre), "with_genres": sum(bool(g) for g in name2genre.values()),
            "genres": len(genre_dict)}


def load_titles(folder) -> list[str]:
    from .sprec_format import load_json

    return list(load_json(Path(folder) / "eval" / "id2name.json").values())
