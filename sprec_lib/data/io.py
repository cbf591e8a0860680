"""Reading the JSON files of a dataset folder: every failure is a :class:`DataFormatError`.

Shared by :mod:`sprec_lib.data.sprec_format` and :mod:`sprec_lib.data.steam` (kept here so that
neither imports the other for it). Each error names the file and what was expected there:
a missing file, a directory or a symlink loop where a file should be, bytes that are not UTF-8,
unreadable or invalid JSON.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

from . import DataFormatError


def present(path: Path) -> bool:
    """Whether anything is at ``path``: a file, a folder, or a link (a broken or looping one too).

    ``Path.exists`` says False for a symlink loop, which would make a looping genre file read as
    "no genre file" instead of an error.
    """
    return os.path.lexists(path)


def describe(value) -> str:
    """A value's type and a short form of it, for an error message (``int 5``, ``list ['a', 'b']``)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def os_error_expected(e: OSError, what: str) -> str:
    """What was expected at a path that could not be opened, in words (for a DataFormatError)."""
    if isinstance(e, FileNotFoundError):
        return f"file not found (expected {what})"
    if isinstance(e, IsADirectoryError):
        return f"expected {what}, found a directory"
    if isinstance(e, NotADirectoryError):
        return f"expected {what}; a folder on its path is a file, not a directory"
    if isinstance(e, PermissionError):
        return f"expected {what} that can be read (permission denied)"
    if e.errno == errno.ELOOP:
        return f"expected {what}, found a symlink loop (a link that points to itself or to a cycle of links)"
    return f"expected {what} that can be read ({e.strerror or e})"


def load_json(path: Path, what: str = "a JSON file"):
    """The parsed JSON of ``path``; :class:`DataFormatError` naming the file for any failure."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise DataFormatError(path, None, os_error_expected(e, what)) from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"expected UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, None, f"expected valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise DataFormatError(path, None, "expected valid JSON (it is nested too deeply to read)") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise DataFormatError(path, None, f"expected valid JSON ({e})") from None


def read_titles(path: Path) -> tuple[str, ...]:
    """The catalogue's titles from ``eval/id2name.json``: ``{"0": "<title>", "1": ...}``, ids 0..n-1."""
    id2name = load_json(path, 'the catalogue {"<id>": "<title>"}')
    if not isinstance(id2name, dict) or not id2name:
        got = "an empty object" if isinstance(id2name, dict) else describe(id2name)
        raise DataFormatError(path, None, f'expected a non-empty object {{"<id>": "<title>"}}, got {got}')
    ids = {}
    for key in id2name:
        try:
            i = int(key)
        except ValueError:
            i = None
        if i is None or str(i) != key or i < 0:
            raise DataFormatError(path, None, "expected integer ids 0, 1, 2, ... as keys (written without "
                                  "signs, spaces or leading zeros)", key=key)
        ids[i] = key
    if sorted(ids) != list(range(len(ids))):
        missing = sorted(set(range(len(ids))) - set(ids))
        raise DataFormatError(path, None, f"expected ids 0..{len(ids) - 1} without gaps (missing {missing[:5]})")
    titles = []
    for i in range(len(ids)):
        title = id2name[ids[i]]
        if not isinstance(title, str) or not title.strip():
            got = (("an empty string" if not title else f"a blank string {title!r}") if isinstance(title, str)
                   else describe(title))
            raise DataFormatError(path, None, f"expected a non-empty title string, got {got}", key=ids[i])
        titles.append(title)
    return tuple(titles)
