"""Negatives for preference training: uniformly random items, or the model's own recommendations.

SPRec's self-play (paper section 4.2): the negative of a row is what the current model recommends
for it, so DPO pushes down exactly the items the model over-recommends. Its public code
(``train/data_generate.py``) decodes greedily (128 new tokens), takes the first quoted title of
the generation, and keeps a pair even when the negative equals the positive (a pair with zero
gradient). Here: generation stops at the closing quote (same title, fewer tokens), and a pair whose
negative equals the positive, or whose generation names no title, is skipped and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import SPRecConfig
from .data import Dataset, Sample
from .prompts import completion, extract_title, prompt, target_completion


def positive_title(sample: Sample, ds: Dataset) -> str:
    return sample.target_title if sample.target is None else ds.catalogue.titles[sample.target]


def random_negatives(rows: list[Sample], ds: Dataset, n: int, rng: np.random.Generator) -> list[list[str]]:
    """``n`` distinct catalogue titles per row, uniformly at random, none in the history or the target."""
    out = []
    for s in rows:
        banned = set(s.history) | ({s.target} if s.target is not None else set())
        picks: list[int] = []
        while len(picks) < n:
            i = int(rng.integers(len(ds.catalogue)))
            if i not in banned and i not in picks:
                picks.append(i)
        out.append([ds.catalogue.titles[i] for i in picks])
    return out


def self_negatives(model, tokenizer, rows: list[Sample], ds: Dataset, cfg: SPRecConfig, batch_size: int,
                   journal=None) -> list[list[str]]:
    """The model's own recommendations for ``rows``: ``cfg.n_negatives`` titles per row (maybe fewer).
    ``journal``: a :class:`~sprec_lib.decoding.DecodeJournal`, to resume a decode cut short."""
    from . import decoding

    prompts = [prompt(s, ds.catalogue, ds.wording) for s in rows]
    n = cfg.n_negatives
    if cfg.decoding == "constrained":
        trie = decoding.TitleTrie.from_catalogue(ds.catalogue, tokenizer, ds.wording)
        beams = decoding.constrained_beam_search(model, tokenizer, prompts, trie, num_beams=1 if n == 1 else 2 * n,
                                                 batch_size=max(1, batch_size // max(1, 2 * n if n > 1 else 1)),
                                                 journal=journal)
        return [[ds.catalogue.titles[i] for i in b] for b in beams]
    if cfg.decoding != "free":
        raise ValueError(f"unknown decoding {cfg.decoding!r} (free or constrained)")
    if n == 1:
        gens = decoding.generate_free(model, tokenizer, prompts, max_new_tokens=cfg.negative_max_new_tokens,
                                      batch_size=batch_size, stop_at_quote=True, journal=journal)
        return [[t] if (t := extract_title(g)) is not None else [] for g in gens]
    # N > 1: beam search 2N candidates, de-duplicated, the N most probable kept (after dropping the positive).
    beams = decoding.generate_beams(model, tokenizer, prompts, num_beams=2 * n,
                                    max_new_tokens=cfg.negative_max_new_tokens, batch_size=max(1, batch_size // (2 * n)),
                                    journal=journal)
    out = []
    for cands in beams:
        titles = []
        for g in cands:
            t = extract_title(g)
            if t is not None and t not in titles:
                titles.append(t)
        out.append(titles)
    return out


def negatives_for(rows: list[Sample], ds: Dataset, cfg: SPRecConfig, rng: np.random.Generator, model=None,
                  tokenizer=None, batch_size: int = 16, journal=None) -> pd.DataFrame:
    """One row per sample: the positive, the negatives (after skipping), where they came from.
    ``journal``: for the self-play decode (:func:`self_negatives`)."""
    n = cfg.n_negatives
    if cfg.negatives == "random":
        use_random = np.ones(len(rows), dtype=bool)
    elif cfg.negatives == "self":
        use_random = np.zeros(len(rows), dtype=bool)
    elif cfg.negatives == "mix":
        use_random = rng.random(len(rows)) < cfg.random_ratio
    else:
        raise ValueError(f"unknown negatives {cfg.negatives!r} (self, random or mix)")
    negs: list[list[str]] = [[] for _ in rows]
    rand_idx = np.flatnonzero(use_random)
    for i, titles in zip(rand_idx, random_negatives([rows[i] for i in rand_idx], ds, n, rng)):
        negs[i] = titles
    self_idx = np.flatnonzero(~use_random)
    if len(self_idx):
        for i, titles in zip(self_idx, self_negatives(model, tokenizer, [rows[i] for i in self_idx], ds, cfg, batch_size,
                                                          journal)):
            negs[i] = titles
    positives = [positive_title(s, ds) for s in rows]
    kept = [[t for t in ts if t != pos][:n] for ts, pos in zip(negs, positives)]
    return pd.DataFrame({
        "positive": positives,
        "generated": negs,
        "negatives": kept,
        "source": np.where(use_random, "random", "self"),
        "in_catalogue": [[t in ds.catalogue.id_of for t in ts] for ts in kept],
    })


def preference_rows(rows: list[Sample], negatives: pd.DataFrame, ds: Dataset, n: int, template: str = "alpaca") -> tuple[list[dict], int]:
    """(prompt, chosen, rejected) rows for DPO (n = 1) or S-DPO (rejected a list of n); and how many
    samples were skipped for lack of a usable negative (equal to the positive, or none parsed)."""
    out, skipped = [], 0
    for s, negs in zip(rows, negatives["negatives"]):
        if len(negs) < n:
            skipped += 1
            continue
        rejected = [completion(t, ds.wording) for t in negs[:n]]
        out.append({
            "prompt": prompt(s, ds.catalogue, ds.wording, template),
            "chosen": target_completion(s, ds.catalogue, ds.wording),
            "rejected": rejected[0] if n == 1 else rejected,
        })
    return out, skipped


def sample_rows(rows: list[Sample], size: int | None, rng: np.random.Generator) -> list[Sample]:
    """``size`` rows drawn without replacement (all of them, shuffled, when size is None or larger)."""
    idx = rng.permutation(len(rows))
    if size is not None:
        idx = idx[:size]
    return [rows[i] for i in idx]
