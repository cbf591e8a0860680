"""What a notebook's kernel needs: quick mode, and recording values for the book and the tests.

Notebooks record the values that tests and the book's prose read with :func:`record`
(``myst_nb.glue``: the value is stored as an output of the executed notebook, and the book can
cite it with ``{glue:text}`name```); :func:`recorded` reads them back from an executed copy.
"""

from __future__ import annotations

import ast
import os
from typing import Any

from ..quick import quick_mode, sizes  # noqa: F401  (the notebooks' one quick switch)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, tuples and mappings -> plain Python (literal_eval round-trips it)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) or isinstance(value, int | bool | str) or value is None:
        return value
    raise TypeError(f"record: {type(value).__name__} is not a number, string, list or dict")


_RECORDED: dict[str, Any] = {}  # what record() stored in this process (a notebook's kernel)


def record(name: str, value: Any, display: bool = False) -> Any:
    """Store ``value`` (a number, string, list or dict of them) under ``name`` in the executed notebook.

    Uses ``myst_nb.glue``: the value becomes an output of the cell, tagged with its name, so the
    book can cite it (``{glue:text}`name```) and :func:`recorded` can read it back. Returns the
    plain value.
    """
    from myst_nb import glue

    plain = _plain(value)
    glue(name, plain, display=display)
    _RECORDED[name] = plain
    return plain


def recorded_here() -> dict[str, Any]:
    """The values :func:`record` stored so far in this process, by name."""
    return dict(_RECORDED)


def summary():
    """A table of the values recorded so far in this process (a notebook's last cell): one row per
    name, numbers with 4 significant digits, so that 3.7e-09 does not read as 0."""
    import pandas as pd

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    return pd.DataFrame({"value": {k: fmt(v) for k, v in _RECORDED.items()}}).rename_axis("recorded as")


def recorded(notebook: str | os.PathLike | dict) -> dict[str, Any]:
    """The values an executed notebook stored with :func:`record`, by name."""
    import nbformat

    nb = notebook if isinstance(notebook, dict) else nbformat.read(str(notebook), as_version=4)
    values = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            text = out.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
            text = "".join(text) if isinstance(text, list) else text
            try:
                values[meta["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[meta["name"]] = text
    return values


