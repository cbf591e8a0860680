"""The paper's evaluation of a model on a split: predictions and the metrics at every K.

``grounded`` (the paper's ``eval/inference.py`` + ``evaluate.py``): greedy generation of up to 32
new tokens; the text after the first ``"`` up to the next ``"`` (or the end) is the recommended
title; ``valid_ratio`` is the share of those titles that name a catalogue item exactly; the title
is embedded and the K nearest catalogue titles (L2) are the top-K. Generation stops at the closing
quote: the parsed title is the same as with 32 tokens, and the rest was thrown away anyway.

``constrained`` (D3): prefix-trie beam search with max(K) beams, length_penalty 0; the top-K are the
beams in order, so every recommendation is a real item and ``valid_ratio`` is 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .config import EvalConfig
from .data import Dataset
from .metrics import ranking_metrics, valid_ratio
from .prompts import extract_title, prompt


def eval_rows(ds: Dataset, cfg: EvalConfig):
    rows = ds.splits[cfg.split]
    return rows if cfg.rows is None else rows[: cfg.rows]


def evaluate(model, tokenizer, ds: Dataset, cfg: EvalConfig, cache_dir=None, grounder=None,
             journal=None) -> tuple[pd.DataFrame, dict]:
    """Predictions (one row per sample) and ``{"valid_ratio": ..., "@1": {...}, "@5": {...}}``.
    ``journal``: a :class:`~sprec_lib.decoding.DecodeJournal`, to resume a decode cut short."""
    from . import decoding

    rows = eval_rows(ds, cfg)
    prompts = [prompt(s, ds.catalogue, ds.wording) for s in rows]
    k_max = max(cfg.ks)
    if cfg.mode == "grounded":
        generations = decoding.generate_free(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens,
                                             batch_size=cfg.batch_size, stop_at_quote=True, journal=journal)
        titles = [extract_title(g) for g in generations]
        grounder = grounder or Grounder(ds, cache_dir)
        topk = grounder(generations, k_max)
        valid = valid_ratio(titles, ds.catalogue.id_of)
    elif cfg.mode == "constrained":
        trie = decoding.TitleTrie.from_catalogue(ds.catalogue, tokenizer, ds.wording)
        topk = decoding.constrained_beam_search(model, tokenizer, prompts, trie, num_beams=k_max,
                                                batch_size=max(1, cfg.batch_size // k_max), journal=journal)
        generations = [ds.catalogue.titles[t[0]] if t else "" for t in topk]
        titles = generations
        valid = valid_ratio(titles, ds.catalogue.id_of)
    else:
        raise ValueError(f"unknown evaluation mode {cfg.mode!r} (grounded or constrained)")

    targets = [s.target for s in rows]
    histories = [list(s.history) for s in rows]
    metrics: dict = {"valid_ratio": valid, "rows": len(rows), "mode": cfg.mode, "split": cfg.split}
    for k in cfg.ks:
        m = ranking_metrics(topk, targets, histories, ds.item_genres(), ds.genres, k)
        metrics[f"@{k}"] = m
    predictions = pd.DataFrame({
        "target": pd.array(targets, dtype="Int64"),
        "generation": generations,
        "title": titles,
        "valid": [t is not None and t in ds.catalogue.id_of for t in titles],
        "topk": [list(map(int, t)) for t in topk],
    })
    return predictions, metrics


class Grounder:
    """Generations -> K nearest catalogue items, with the catalogue's embeddings computed once."""

    def __init__(self, ds: Dataset, cache_dir=None):
        from .grounding import TitleEmbedder, catalogue_embeddings

        self.embedder = TitleEmbedder()
        self.catalogue_emb = catalogue_embeddings(ds.catalogue, self.embedder, cache_dir=cache_dir)

    def __call__(self, generations: list[str], k: int) -> list[list[int]]:
        from .grounding import ground

        return ground(generations, self.catalogue_emb, self.embedder, k)


def flat_metrics(metrics: dict) -> dict[str, float]:
    """``{"HR@5": ..., "DivRatio@1": ..., "valid_ratio": ...}`` for tables; a metric that does not
    apply (MGU without genres: None) is NaN, so means skip it and tables show it as missing."""
    out = {"valid_ratio": metrics["valid_ratio"]}
    for key, m in metrics.items():
        if key.startswith("@"):
            for name, value in m.items():
                if value is None and name in ("MGU", "DGU"):
                    out[f"{name}{key}"] = float("nan")
                elif isinstance(value, (int, float, np.floating)) and name != "valid":
                    out[f"{name}{key}"] = float(value)
    return out


# What a free answer was, beside valid_ratio's yes or no (sprec_lib.pretrained.orratio_by_answer):
# a pretrained model after DPO names MovieLens titles with another year in the parentheses far more
# often than it names no title at all, and grounding mostly sends those to the title meant.
ANSWER_KINDS = ("title", "wrong year", "wrong year, grounded elsewhere", "other")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def answer_kinds(titles: Sequence[str | None], top1: Sequence[int | None], catalogue) -> list[str]:
    """Each answer's kind (:data:`ANSWER_KINDS`): ``title``, it names a catalogue title exactly (the
    rows that ``valid_ratio`` counts); ``wrong year``, it does not, but without its trailing
    ``(yyyy)`` it is the name of a catalogue title that has one (a year in its title: MovieLens), and
    grounding's first pick ``top1`` (an item id) has that name; ``wrong year, grounded elsewhere``,
    the same with a first pick of another name; ``other``, anything else (no title parsed, a name
    not in the catalogue). ``titles``: the parsed titles, as in the predictions' ``title`` column."""
    name = lambda title: _YEAR.sub("", title)  # noqa: E731
    names = {name(t) for t in catalogue.titles if _YEAR.search(t)}
    out = []
    for title, first in zip(titles, top1):
        if title is not None and title in catalogue.id_of:
            out.append("title")
        elif title is not None and _YEAR.search(title) and name(title) in names:
            meant = first is not None and name(catalogue.titles[first]) == name(title)
            out.append("wrong year" if meant else "wrong year, grounded elsewhere")
        else:
            out.append("other")
    return out
