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

# %% tags=["hide-input"]

# %% [markdown]
# # Ablations: which half of SPRec does the work (the paper's Table 2)
#
# Each SPRec iteration has two steps: SFT on the positives, then DPO against the model's own
# recommendations. The ablations drop or change one part:
#
# | variant | what changes |
# |---|---|
# | SPRec-noSFT | no SFT step: DPO alone, the reference being the previous iteration's model |
# | SPRec-noDPO | no DPO step: SFT alone (iterated SFT on fresh samples) |
# | SPRec-RN | DPO's negatives drawn uniformly at random instead of from the model |
#
# The paper finds that both steps are needed: without SFT the accuracy drops, without DPO the
# debiasing goes, and random negatives do not debias. The runs are found or trained with
# `sprec_lib.experiments` (variants in `experiments.ABLATIONS`); SPRec itself is the same run as
# in the training chapter.

# %% tags=["parameters", "hide-input"]
data_dir: str = "data/ml-1m"  # paper-format folder, relative to the repo root
profile: str = "tiny"  # tiny | small | paper
seeds: list = [0, 1, 2]
train: bool = False  # True: train the runs that are missing (hours on a CPU); False: use the runs that exist
quick: bool = False  # a few training steps per stage, one seed, under runs/quick (plumbing, not results)

# %% tags=["remove-output", "hide-input"]
from sprec_lib import book, experiments, plots, results

quick = book.quick_mode(quick)
seeds = book.sizes("04_ablations", quick, seeds=seeds).seeds
specs = experiments.specs(data_dir, ["sprec"], seeds, profile, variants=experiments.ABLATIONS)
specs += experiments.specs(data_dir, ["sft"], seeds, profile)  # the common start, for reference
pairs = experiments.obtain_all(specs, train=train, quick=quick)  # prints how many are finished
runs = [run for _, run in pairs]
book.record("runs_finished", len(runs))
book.record("runs_asked", len(specs))

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown

from sprec_lib import claims

pd.set_option("display.max_colwidth", None)  # whole tables, no "..."
pd.set_option("display.max_columns", None)
cfg = experiments.RunSpec(data_dir, "sprec", seeds[0], profile).config(quick)
test_rows = sorted({int(r) for r in results.run_rows(runs)["rows"].dropna()}) if runs else []
display(plots.setup_box(
    claims.setup_differences(cfg),
    f"Setup: the {cfg.profile} profile on {experiments.RunSpec(data_dir, 'sprec').dataset}" + (" (quick mode)" if quick else ""),
    "SPRec's settings; each ablation changes one (the table above). Ours against the paper's (Appendix C and "
    "its public scripts; the defaults of sprec_lib.config). Batches are per step x accumulation on one device; "
    "the paper's scripts run on four GPUs (see the reproducibility chapter). Test rows of these runs: "
    + (", ".join(f"{n:,}" for n in test_rows) or "none yet") + "."))
display(plots.missing_runs(specs, [spec for spec in specs if spec not in {s for s, _ in pairs}]))

# %% [markdown]
# ## The Table-2 rows
#
# Final-iteration metrics on the test split, mean ± std over seeds; `sft` is the model every
# variant starts from.

# %% tags=["hide-input"]
rows = results.run_rows(runs)
order = ["sft", "sprec", "sprec-nosft", "sprec-nodpo", "sprec-rn"]
table = results.summary_table(rows, order=order, by="label") if runs else rows
if runs:
    book.record("table_shape", list(table.shape))
    book.record("table_means", results.table_means(table))
    display(results.format_mean_std(table).droplevel(["dataset", "profile"]).T)  # one column per method

# %% [markdown]
# ## Beside the paper's numbers
#
# Each cell is *ours / the paper's* (the paper's Table 2, and its Table 1 for BIGRec): ours the
# mean over seeds, ± their standard deviation when there are several. The figure puts them side by
# side, one panel per metric, each with its own scale.

# %% tags=["hide-input"]
if runs:
    side, note = claims.paper_beside_page(rows)
    if note:
        display(Markdown(note))
    book.record("paper_beside_rows", int(side["paper"].notna().sum()))
    display(plots.html_table(claims.paper_beside_wide(side)))
    fig = plots.plot_paper_beside_ours(side, side["dataset"].iloc[0])

# %% [markdown]
# Each variant against SFT, paired by seed:

# %% tags=["hide-input"]
if runs and "sft" in set(rows["label"]):
    diffs = results.paired_differences(rows, base="sft")
    display(diffs.pivot(index="metric", columns="label", values="text").reindex(results.TABLE_COLUMNS))

# %% [markdown]
# ## Per iteration
#
# Iteration 0 is the SFT model. A variant whose `valid_ratio` falls has stopped writing catalogue
# titles: its DivRatio then counts the grounding of malformed text, not diversity.

# %% tags=["hide-input"]
sprec_runs = [run for spec, run in pairs if spec.method == "sprec"]
if sprec_runs:
    curves = results.curves(sprec_runs)
    fig = plots.plot_iteration_curves(curves, ["HR@5", "DivRatio@1", "ORRatio@1", "MGU@1", "valid_ratio"],
                                      title="SPRec and its ablations per iteration")
    book.record("curve_labels", sorted(curves["label"].unique()))

# %% [markdown]
# ## What self-play does to the favourite answer
#
# Each SPRec iteration's negatives are the previous model's own answers, and a model that has
# collapsed gives one answer far more often than any other: its *favourite*. Per run, the share of
# the test rows given the favourite, and the share still given, one and two iterations later, to
# the favourites of the iterations before, each averaged over iterations 1..T
# (`sprec_lib.results.favourite_answers`; an export keeps the per-iteration table as
# `answer_modes.json`, exports made before 2026-12-05 only where the run's predictions were still
# on the machine that added it). Self-play pushes down exactly the favourite: if the DPO step
# removes it and the SFT step lets it return, `previous` falls near zero while `two before` does
# not. Random negatives (SPRec-RN) and no DPO step (SPRec-noDPO) should leave the favourite
# where it was.

# %% tags=["hide-input"]
favourites = results.favourite_answers([(spec, run) for spec, run in pairs if spec.method == "sprec"])
favourites = favourites.sort_values(["label", "seed"], key=lambda c: c.map(order.index) if c.name == "label" else c)
if len(favourites):
    book.record("favourite_shares", {label: {c: round(float(part[c].mean()), 4) for c in
                                             ("top1_share", "previous_top1_share", "earlier_top1_share")}
                                     for label, part in favourites.groupby("label", sort=False)})
    fig = plots.plot_favourite_answers(favourites, title=f"{favourites['dataset'].iloc[0]}: the favourite answer")
    display(plots.html_table(favourites.round(3), caption="the favourite answer's share of the test rows, and the "
                             "shares of the favourites of one and two iterations before (means over iterations 1..T)"))
else:
    display(Markdown("None of these runs keeps its answers' summary: their exports were made before 2026-12-05, "
                     "and their predictions are not on the machine that added it."))

# %% [markdown]
# ## Summary

# %% tags=["hide-input"]
book.summary()
