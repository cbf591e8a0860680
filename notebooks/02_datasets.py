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
# # A dataset as the models see it
#
# A folder of the paper's format: `train.json`, `valid.json`, `test.json` (prompts whose history
# lists 5 to 10 titles and whose target is the next one) and `eval/` (the catalogue and the
# genres the fairness metrics evaluate). This notebook describes one folder: the stats table of
# `sprec data check`, how skewed the popularity of the targets is (the bias SPRec wants to undo),
# and whether the targets and the histories spread over the genres in the same way (what the
# genre-fairness metrics MGU and DGU compare a model's recommendations with).

# %% tags=["parameters"]
data_dir: str = "data/ml-1m"  # paper-format folder, relative to the repo root
split: str = "train"  # the split whose popularity and genres are drawn
quick: bool = False  # reading is fast: quick mode changes nothing here

# %%
from sprec_lib import book, plots
from sprec_lib.data.check import dataset_stats
from sprec_lib.data.sprec_format import read_sprec_folder

quick = book.quick_mode(quick)
ds = read_sprec_folder(book.resolve(data_dir))
rows_text = ", ".join(f"{len(v)} {k} rows" for k, v in ds.splits.items())
print(f"{ds.name}: {len(ds.catalogue)} catalogue items, {rows_text}")

# %% [markdown]
# ## The stats table
#
# The same table `sprec data check` prints. The *head* is the 1% (10%) of catalogue items most
# frequent over all histories and targets; a row such as "target share of top-1% items" says how
# much of a split's targets fall on them.

# %%
stats = dataset_stats(ds)
book.record("dataset_name", ds.name)
book.record("stats_shape", list(stats.shape))
book.record("split_sizes", {k: len(v) for k, v in ds.splits.items()})
book.record("catalogue_items", len(ds.catalogue))
stats

# %% [markdown]
# ## The long tail
#
# Items ranked by how often they are the target of a row, on log-log axes: a straight line is a
# power law, the Zipf skew of the toy in the theorem chapter. A recommender that learns this
# distribution and then sharpens it (as DPO with random negatives does) recommends the few items
# on the left to almost everyone.

# %%
fig = plots.plot_popularity(ds, splits=(split,))
counts = plots.popularity_counts(ds, split)
book.record("popularity_counts_top", counts[:10])
book.record("distinct_targets", len(counts))
n_top = max(1, len(ds.catalogue) // 100)  # 1% of the catalogue
top_share = book.record("top_1pct_target_share",
                        counts[:n_top].sum() / counts.sum())
print(f"{len(counts)} distinct targets; the {n_top} most frequent "
      f"(1% of the catalogue) are the targets of {top_share:.1%} "
      f"of the {split} rows")

# %% [markdown]
# ## Genres: histories vs targets
#
# Each item spreads a mass of 1 evenly over its evaluated genres; the bars are each genre's share
# of that mass over the items of the histories and over the targets. The fairness metrics compare
# a model's recommendations with the history shares, genre by genre ($\mathrm{GU}_g =
# |\mathrm{GP}_g - \mathrm{GH}_g|$, MGU its mean, DGU its range), so the gap between the two bars
# of a genre is what an ideal next-item predictor would already score.

# %%
shares = plots.genre_shares(ds, split)
fig = plots.plot_genre_shares(shares, ds.name, split)
book.record("genre_history_shares", shares["history"].to_dict())
book.record("genre_target_shares", shares["target"].to_dict())
gap = (shares["target"] - shares["history"]).abs()
book.record("genre_mgu_of_targets", gap.mean())
shares.style.format("{:.1%}")

# %% [markdown]
# ## Summary
#
# The values this notebook recorded (`sprec_lib.book.record`); the tests and the book read them
# from the executed notebook.

# %%
book.summary()
