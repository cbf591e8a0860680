"""`sprec data check`: validate a dataset and describe it in one table.

Reading a folder validates it (:func:`sprec_lib.data.sprec_format.read_sprec_folder` raises
:class:`~sprec_lib.data.DataFormatError` naming the file, the row and what was expected); the
table then says what a reader of the paper wants to know before training on it, and ends with
the loader's warnings (``Dataset.warnings``), one row each, shortened (:func:`warning_lines`
gives them in full for a caller to print). A dataset without evaluated genres
(``Dataset.genres == []``) reads "not applicable" for the genre rows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from . import SPLITS, Dataset

# The table shows each warning cut to this many characters; warning_lines gives them in full.
WARNING_WIDTH = 100


def head_items(ds: Dataset, top_share: float) -> set[int]:
    """The ``top_share`` most frequent catalogue items over every history and target (ties by id)."""
    counts = Counter(i for sp in ds.splits.values() for s in sp for i in (*s.history, s.target) if i is not None)
    n_top = max(1, int(round(top_share * len(ds.catalogue))))
    return {i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_top]}


def share_in(counts: Counter, items: set[int]) -> float:
    """Share of the interactions in ``counts`` that fall on ``items``."""
    total = sum(counts.values())
    return sum(c for i, c in counts.items() if i in items) / total if total else 0.0


def dataset_stats(ds: Dataset) -> pd.DataFrame:
    """One row per statistic, one column per split (and an ``all`` column where it makes sense).

    Popularity concentration: the head is the 1% (10%) of catalogue items most frequent over all
    histories and targets; each split's row says what share of its targets (histories) are head items.
    """
    rows: dict[str, dict[str, object]] = {}

    def put(name, split, value):
        rows.setdefault(name, {})[split] = value

    genres = set(ds.genres)
    n_items = len(ds.catalogue)
    covered_items = sum(bool(genres & set(g)) for g in ds.catalogue.genres)
    head1, head10 = head_items(ds, 0.01), head_items(ds, 0.10)
    for split in SPLITS:
        samples = ds.splits[split]
        lengths = np.array([len(s.history) for s in samples])
        targets = Counter(s.target for s in samples if s.target is not None)
        put("samples", split, len(samples))
        put("history length min / mean / max", split, f"{lengths.min()} / {lengths.mean():.2f} / {lengths.max()}")
        put("targets in catalogue", split, f"{sum(targets.values()) / len(samples):.1%}")
        put("distinct targets", split, len(targets))
        put("targets with an evaluated genre", split,
            f"{sum(c for i, c in targets.items() if genres & set(ds.catalogue.genres[i])) / max(1, sum(targets.values())):.1%}"
            if genres else "n/a")
        hist = Counter(i for s in samples for i in s.history)
        put("target share of top-1% items", split, f"{share_in(targets, head1):.1%}")
        put("target share of top-10% items", split, f"{share_in(targets, head10):.1%}")
        put("history share of top-1% items", split, f"{share_in(hist, head1):.1%}")
    put("catalogue items", "all", n_items)
    put("evaluated genres", "all", f"{len(ds.genres)}: {' | '.join(ds.genres)}" if ds.genres
        else "0 (none: MGU, DGU and GU are not applicable)")
    put("items with an evaluated genre", "all", f"{covered_items / n_items:.1%}" if ds.genres else "n/a")
    for key, value in ds.notes.items():
        put(key.replace("_", " "), "all", value)
    put("warnings", "all", len(ds.warnings))
    for n, text in enumerate(ds.warnings, 1):
        put(f"warning {n}", "all", _short(text))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*SPLITS, "all"])
    table.index.name = ds.name
    return table.fillna("")


def _short(text: str, width: int = WARNING_WIDTH) -> str:
    """A warning for the table: its file named from the dataset's folder on, cut to ``width`` characters."""
    head, sep, rest = text.partition(": ")  # every warning starts with the path of its file
    if sep:
        path = Path(head)
        text = f"{path.parent.name}/{path.name}" if path.parent.name in ("eval", "raw") else path.name
        text += sep + rest
    return text if len(text) <= width else text[: width - 1] + "…"


def warning_lines(ds: Dataset) -> list[str]:
    """The loader's warnings in full, one ``warning: ...`` line each, for a caller to print and log."""
    return [f"warning: {w}" for w in ds.warnings]


def format_stats(table: pd.DataFrame) -> str:
    return table.to_string()
