# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The scorecard
#
# Every claim of the paper on every dataset, at a glance: one cell per claim and dataset, coloured
# by its verdict, with the number of seeds the verdict rests on. A cell links to the page that shows
# its runs; a claim links to {doc}`the claims page <06_results>`, which states each claim, the
# noise rule behind the verdicts and the paper's numbers beside ours.
#
# How to read a cell: **reproduced**, every part of the claim is clear of the noise in the claimed
# direction; **not reproduced**, a part is clearly against it; **inconclusive (within noise)**,
# nothing is against it but not every part is clear of the noise; **pending**, runs are missing;
# **degenerate baseline**, the model the claim is measured against is collapsed, so no difference
# against it means anything. A verdict on one seed is weaker than one on three: the seed count is
# in each cell. "Not claimed here": the paper's text does not make this claim on this dataset.
# "Not run here": the paper makes it, but this book runs the negative-sample sweeps on MovieLens
# (and, from before, on `ml-1m`) only.

# %% tags=["parameters", "hide-input"]
datasets: list = ["ml-1m", "MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam"]  # names or folders
sweeps: dict = {"MovieLens": [0, 1, 2], "ml-1m": [0]}  # the negative-sample sweeps' datasets and seeds (notebook 05)
sweep_ratios: list = [0.0, 0.25, 0.5, 0.75, 1.0]  # notebook 05's sweeps
sweep_n_negatives: list = [1, 2, 3, 4]
profile: str = "tiny"  # tiny | small | paper
seeds: list = [0, 1, 2]
quick: bool = False  # under runs/quick: the quick runs of notebooks 03, 04 and 05 (plumbing, not results)

# %% tags=["hide-input"]
from IPython.display import Markdown

from sprec_lib import book, claims, plots

quick = book.quick_mode(quick)
size = book.sizes("00_scorecard", quick, seeds=seeds, sweeps=sweeps, sweep_ratios=sweep_ratios, sweep_n_negatives=sweep_n_negatives)
seeds, sweeps, sweep_ratios, sweep_n_negatives = size.seeds, size.sweeps, size.sweep_ratios, size.sweep_n_negatives  # as the claims page

evidence = claims.gather_evidence(datasets, profile, seeds, sweeps,
                                  {"random_ratio": sweep_ratios, "n_negatives": sweep_n_negatives}, quick=quick)
checks = claims.evidence_checks(evidence, claims.book_rule(evidence.rows()))
cells = claims.scorecard(checks, evidence.datasets)
book.record("scorecard", {d: {r.id: [r.verdict, r.seeds] for r in part.itertuples()}
                          for d, part in cells.groupby("dataset", sort=False)})
book.record("scorecard_shape", [cells["id"].nunique(), cells["dataset"].nunique()])
if quick:
    display(Markdown("**Quick mode**: these runs have a handful of training steps each; their verdicts check "
                     "the plumbing and mean nothing as results."))
display(plots.scorecard_html(cells))

# %% tags=["hide-input"]
tally = cells["verdict"].value_counts()
display(Markdown("In all: " + ", ".join(f"**{tally[v]}** {v}" for v in claims.VERDICTS if v in tally)
                 + f", on {cells['dataset'].nunique()} datasets and {cells['id'].nunique()} claims."))
display(plots.missing_runs(evidence.asked, evidence.missing))

# %% [markdown]
# The verdicts follow the rule of the claims page; the numbers behind every cell, and the paper's
# own numbers beside ours, are there and on each dataset's page.
