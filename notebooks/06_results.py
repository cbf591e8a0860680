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
# # The paper's claims against our runs
#
# Each claim of the paper is stored as data in `sprec_lib.claims`: the section of the paper it
# restates, its parts (a method, a metric and the direction expected against a base model), the
# datasets on which the paper's text makes it, and how our runs test it. The claims, by section:
#
# * **(a1) §4.1, Theorem 1**: the theory that DPO with uniformly random negatives sharpens the
#   popularity of the training data (its optimum is $\pi_\mathrm{ref} (p_D/q)^{1/\beta}$, with
#   $0 < \beta < 1$), which after SFT is what the model already prefers. Tested on our plain `dpo` against its SFT start; the paper has no DPO
#   row, so its tables cannot check this one.
# * **(a2) §5.2.2**: the random-negative DPO methods of Table 1 (S-DPO, DMPO) hardly change
#   diversity and over-recommendation against BIGRec on MovieLens and Goodreads, and on CDs and
#   Steam lower over-recommendation without adding diversity. Tested on whichever of the two our
#   runs have; a method without runs leaves the claim pending.
# * **(a3) §5.2.2**: RosePO, with semantically distant negatives, does well on CDs: more diverse and
#   less over-recommending than BIGRec there.
# * **(b) §5.2.3**: SPRec beats BIGRec on DivRatio and ORRatio on every dataset, and does not lose
#   accuracy.
# * **(b2) §5.2.3**: SPRec beats most LLM-based baselines (RW, D3, S-DPO, DMPO, RosePO) on DivRatio@1
#   and ORRatio@1.
# * **(b3) §5.2.3**: SPRec is fairer than BIGRec: a lower MGU@1, the gap between the genre shares of
#   its top-1 recommendations and of the users' histories. MGU has no bound from its value alone, so
#   a part is clear only through the row bootstrap (per-row data and the dataset's genres).
# * **(c), (d), (e) §5.3, Table 2**: the ablations. Dropping SPRec's SFT step costs accuracy;
#   dropping its DPO step, or using random instead of self-play negatives, costs the debiasing (and,
#   for random negatives, fairness: a higher MGU@1).
# * **(f) §5.4.1, Fig. 5** and **(g) §5.4.2, Fig. 6**: trends over two sweeps of SPRec, the share
#   of random negatives and the number of self-play negatives.
#
# **The noise rule.** A direction counts only when it stands clear of the noise. With three seeds
# or more, every seed's paired difference (method − base, same seed) must have the claimed sign,
# their mean must exceed the seeds' standard deviation, and a 95% interval of that mean over the
# test rows must exclude zero: the seeds share their test rows, so their spread shows the training
# noise but not the rows' sampling noise (a paired bootstrap of the seeds' mean, every seed
# resampled on the same rows; the column `rule` says `seeds+bootstrap`). With fewer seeds, each seed's
# difference needs a 95% interval that excludes zero: a paired bootstrap over the test rows when
# both runs' per-row predictions are at hand, else a bound on the standard error computed from the
# two values. Either interval is widened by the training noise of one run, estimated here from
# every method that has several seeds: a re-run of the same seed on another machine moves the
# metrics as much as a change of seed does (see the reproducibility chapter).
#
# **Paired with the model it started from.** A method is compared with the SFT evaluation inside
# its own run: the model it actually trained from. Usually that is the committed `sft` run's model.
# Some runs, though (baselines, and SPRec's T = 5 runs), reused an SFT stage trained later, by newer code at one thread, from the
# same config: a second SFT model for the same seed, which can differ from the first by as much
# as a method does (the table after Table 1's parts lists them). Comparing such a baseline with the
# other SFT would charge that difference to the method. The column `paired` says which was used
# (`own start` or `seed`); `claims.check_claims(..., pairing="seed")` gives the other reading.
#
# **The verdicts.** *reproduced*: every part holds. *not reproduced*: a part is clearly against
# the claim. *inconclusive (within noise)*: no part is against it, but some are within the noise.
# *pending*: runs are missing. *degenerate baseline*: the base model is collapsed (no hit in the
# top 5, and more than 90% of its top-1 slots on three items), so nothing measured against it
# means anything. A claim that something "barely moves" holds when the change is within the
# noise: our runs can refute it, not prove it beyond their resolution.
#
# This page reads the committed runs under `results/runs` for every dataset that has any, and
# trains nothing. It reads a dataset folder only for the genres of MGU's row bootstrap
# (`claims.genre_context`); without the folder, MGU differences are never clear.

# %% tags=["parameters", "hide-input"]
datasets: list = ["ml-1m", "MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam"]  # names or folders
sweeps: dict = {"MovieLens": [0, 1, 2], "ml-1m": [0]}  # the negative-sample sweeps' datasets and seeds (notebook 05)
sweep_ratios: list = [0.0, 0.25, 0.5, 0.75, 1.0]  # notebook 05's sweeps
sweep_n_negatives: list = [1, 2, 3, 4]
profile: str = "tiny"  # tiny | small | paper
seeds: list = [0, 1, 2]
quick: bool = False  # under runs/quick: the quick runs of notebooks 03, 04 and 05 (plumbing, not results)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown

from sprec_lib import book, claims, methods, plots

pd.set_option("display.max_colwidth", None)
pd.set_option("display.max_columns", None)
pd.set_option("display.max_rows", None)

quick = book.quick_mode(quick)
size = book.sizes("06_results", quick, seeds=seeds, sweeps=sweeps, sweep_ratios=sweep_ratios, sweep_n_negatives=sweep_n_negatives)
seeds, sweeps, sweep_ratios, sweep_n_negatives = size.seeds, size.sweeps, size.sweep_ratios, size.sweep_n_negatives

evidence = claims.gather_evidence(datasets, profile, seeds, sweeps,
                                  {"random_ratio": sweep_ratios, "n_negatives": sweep_n_negatives}, quick=quick)
rule = claims.book_rule(evidence.rows())
checks = claims.evidence_checks(evidence, rule)
cells = claims.scorecard(checks, evidence.datasets)
grid = {d: {r.id: r.verdict for r in part.itertuples() if r.verdict in claims.VERDICTS}
        for d, part in cells.groupby("dataset", sort=False)}
book.record("verdict_grid", grid)
book.record("verdict_seeds", {d: {r.id: r.seeds for r in part.itertuples() if r.verdict in claims.VERDICTS}
                              for d, part in cells.groupby("dataset", sort=False)})
book.record("datasets_with_runs", sorted(set(evidence.rows()["dataset"])) if len(evidence.rows()) else [])
book.record("runs_asked", len(evidence.asked))
book.record("runs_missing", len(evidence.missing))
if quick:
    display(Markdown("**Quick mode**: these runs have a handful of training steps each; their numbers check "
                     "the plumbing and mean nothing as results."))
display(plots.missing_runs(evidence.asked, evidence.missing))

# %% [markdown]
# ## The verdicts, claim by dataset
#
# One cell per claim and dataset: the verdict and the number of seeds it rests on (the fewest
# among the claim's parts that have runs). Our `ml-1m` (MovieLens-1M prepared with the paper's preprocessing) is
# held to what the paper says of its MovieLens. The ablations are asked of every dataset and the
# sweeps of MovieLens (three seeds) and `ml-1m` (one); at present only `ml-1m` has them, and the
# other cells wait on runs (pending). "Not claimed here" marks a dataset on which the paper's text
# does not make the claim.

# %% tags=["hide-input"]
display(plots.scorecard_html(cells, table_id="sprec-verdict-grid"))
tally = cells["verdict"].value_counts()
display(Markdown(", ".join(f"**{n}** {v}" for v, n in tally.items() if v in claims.VERDICTS) + "."))

# %% [markdown]
# The training noise added to every interval with fewer than three seeds (the pooled standard
# deviation over seeds of the methods that have several):

# %% tags=["hide-input"]
display(plots.html_table(pd.DataFrame({"metric": list(rule.run_std), "std of one run": list(rule.run_std.values())}))
        if rule.run_std else Markdown("No method has two seeds yet: the intervals count the test rows' noise only."))
book.record("run_std", {m: round(v, 4) for m, v in rule.run_std.items()})

# %% [markdown]
# It is pooled over every method and dataset that has several seeds, so one method whose seeds
# disagree wildly (a run that broke its output format, say) widens the intervals of every
# single-seed verdict, of other methods too. This is conservative: it can turn a verdict
# inconclusive, never make one hold. Where the pooled spread comes from, group by group
# (`claims.seed_spread_by_group`; the shares of a metric add up to 1):

# %% tags=["hide-input"]
by_group = claims.seed_spread_by_group(evidence.rows())
if len(by_group):
    share = "ORRatio@1 share"
    by_group = by_group.sort_values(share, ascending=False).reset_index(drop=True)
    top = by_group.iloc[0]
    book.record("run_std_top_group", {"group": f"{top['dataset']}/{top['label']}", "seeds": int(top["seeds"]),
                                      **{c: round(float(top[c]), 3) for c in by_group.columns if "share" in c}})
    display(Markdown(f"The largest part of the ORRatio@1 spread, {top[share]:.0%}, comes from "
                     f"{top['dataset']} {top['label']} ({int(top['seeds'])} seeds; its HR@5 share "
                     f"{top['HR@5 share']:.0%}, its DivRatio@1 share {top['DivRatio@1 share']:.0%})."))
    display(plots.html_table(by_group.round(4)))

# %% [markdown]
# ### What the later seeds changed
#
# Every cell whose verdict rests on more than seed 0: the verdict seed 0's runs get alone, under
# the same noise rule, beside the verdict now (`claims.verdict_changes`). The rule's training noise
# is measured on all the seeds, so the first column is what seed 0 says today, not what the book
# printed when it had seed 0 only. (A cell on one seed can change too, when that pooled noise
# moves: see below.)

# %% tags=["hide-input"]
changes = claims.verdict_changes(evidence, checks, rule, seeds=seeds[:1])
book.record("verdict_changes", {d: {r.id: [r.alone, r.verdict, int(r.seeds)] for r in part.itertuples()}
                                for d, part in changes.groupby("dataset", sort=False)})
if len(changes):
    shown = changes.rename(columns={"alone": f"seed {seeds[0]} alone", "verdict": "now", "seeds": "seeds now"})
    display(plots.html_table(shown.drop(columns=["seeds_alone"])))
    display(Markdown(f"**{int(changes['changed'].sum())}** of {len(changes)} verdicts changed with the later seeds."))
else:
    display(Markdown("No verdict rests on more than one seed yet."))

# %% [markdown]
# ## The claims
#
# Each claim in our words, what it is measured against, how our runs test it, and where the paper's
# own numbers made us narrow it (the note):

# %% tags=["hide-input"]
lines = []
for c in claims.claims_table().to_dict("records"):
    where, table = c["paper's datasets"], c["paper's table"]
    note = f" *Note*: {c['note']}." if c["note"] else ""
    lines.append(f"* **({c['id']}) {c['section']}**: {c['claim']}. *Against* {c['against']}; *tested by* "
                 f"{c['tested by']}. *The paper's text makes it on* {where}; *numbers in* {table}.{note}")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Table 1: the parts, dataset by dataset
#
# Every part of claims (a1), (a2), (a3), (b), (b2) and (b3): the mean paired difference, its interval (`low`, `high`:
# with three seeds, the wider of mean ± the seeds' spread and the rows' 95% interval of the mean;
# else the widest 95% interval over the seeds), which rule made it (`seeds+bootstrap`,
# `seeds+bound`, `bootstrap` or `bound`) and the outcome.

# %% tags=["hide-input"]
PART_COLUMNS = ["dataset", "id", "method", "metric", "expected", "difference", "low", "high", "seeds", "rule",
                "outcome", "paired"]
table1_ids = [c.id for c in claims.CLAIMS.values()]
display(plots.html_table(checks[checks["id"].isin(table1_ids)][PART_COLUMNS]))

# %% [markdown]
# ### The SFT model each method started from
#
# Every run of Table 1 that began from an SFT stage evaluated that stage first. `same model: no`
# marks a run whose start is not the committed `sft` run's model (a stage made again by newer code
# from the same config); its parts above are paired with its own start. The gap between the two
# SFT models of one seed is a measure of how much SFT alone varies under a change of numerics.

# %% tags=["hide-input"]
started = claims.starts(evidence.table1) if len(evidence.table1) else pd.DataFrame()
display(plots.html_table(started) if len(started) else Markdown("No run has an SFT start of its own."))

# %% [markdown]
# ## Table 2: the ablations, against SPRec
#
# Claims (c), (d) and (e) on every dataset: each variant against SPRec on the same seed
# (`paired: own start` where some seed's two runs began from different SFT models; next section).

# %% tags=["hide-input"]
ablation_ids = [c.id for c in claims.ABLATION_CLAIMS.values()]
display(plots.html_table(checks[checks["id"].isin(ablation_ids)][PART_COLUMNS]))

# %% [markdown]
# Each variant is paired with SPRec of its seed, and the two should have begun from the same SFT
# model, as in the paper. `same model: no` marks a variant whose SFT start is not SPRec's (the
# stage was made again, by newer code or on another machine, from the same config; `claims.starts`
# with `reference="sprec"`). A plain difference of final values would mix in the gap between the
# two SFT models, so those seeds are paired by the change from each run's own start: the
# variant's final value minus its start plus SPRec's start, against SPRec (`claims.Moved`, in
# `claims._pairs`). Their per-row bootstrap resamples all four evaluations on the same rows, and
# the training noise added to a one-seed interval counts four trained models instead of two.

# %% tags=["hide-input"]
ablation_starts = claims.starts(evidence.ablations, reference="sprec") if len(evidence.ablations) else pd.DataFrame()
book.record("ablation_starts_differ", int((ablation_starts["same model"] == "no").sum()) if len(ablation_starts) else 0)
display(plots.html_table(ablation_starts) if len(ablation_starts) else Markdown("No ablation run has an SFT start of its own."))

# %% [markdown]
# ## §5.4: the negative-sample sweeps, as trends
#
# Claims (f) and (g) on the sweeps (notebook 05): the least-squares slope of each
# metric against the swept setting, as the change it predicts over the whole sweep (`difference`),
# for each seed that has every point of the sweep.

# %% tags=["hide-input"]
sweep_ids = [c.id for c in claims.SWEEP_CLAIMS.values()]
display(plots.html_table(checks[checks["id"].isin(sweep_ids)][PART_COLUMNS]))

# %% [markdown]
# ## The paper's numbers beside ours
#
# The paper's Table 1 and Table 2 (`sprec_lib/paper/sprec_tables.csv`, transcribed from the paper)
# beside our runs on the same datasets: each cell is *ours / the paper's*, ours the mean over
# seeds (± their standard deviation when there are several). The paper has no plain-DPO row.

# %% tags=["hide-input"]
paper = claims.paper_numbers()
book.record("paper_numbers", len(paper))
side = claims.paper_beside_ours(evidence.table1, paper) if len(evidence.table1) else pd.DataFrame()
on_paper = side[side["dataset"].isin(claims.PAPER_DATASETS)] if len(side) else side
display(plots.html_table(claims.paper_beside_wide(on_paper)))

# %% [markdown]
# One figure per dataset of the paper: per method, our value beside the paper's, one panel per
# metric, each with its own scale.

# %% tags=["hide-input"]
for dataset in [d for d in evidence.datasets if len(on_paper) and d in set(on_paper["dataset"])]:
    fig = plots.plot_paper_beside_ours(on_paper, dataset)

# %% [markdown]
# ### Do we move in the paper's direction?
#
# For each dataset, method and metric that both the paper and our runs have: the sign of
# (method − BIGRec) in the paper's table and in ours (the mean paired difference against our SFT),
# whether they agree, and whether ours is clear of the noise by the rule above.

# %% tags=["hide-input"]
agreement = (claims.direction_agreement(evidence.table1, paper, rule=rule) if len(evidence.table1)
             else pd.DataFrame(columns=["method", "agree", "clear"]))
counts = claims.agreement_counts(agreement) if len(agreement) else pd.DataFrame()
book.record("agreement_counts", {m: {k: int(v) for k, v in row.items()} for m, row in counts.iterrows()})
display(plots.html_table(counts.reset_index(names="method")) if len(counts) else Markdown("Nothing to compare yet."))
if len(agreement):
    display(plots.details(f"The {len(agreement)} comparisons, one by one (click to open)", html=plots.html_table(agreement)))

# %% [markdown]
# ### The scale gap
#
# Our models are not the paper's: the `tiny` profile trains a model of a few million parameters
# from scratch on a CPU, where the paper fine-tunes Llama-3.2-1B-Instruct. How far apart the numbers are:

# %% tags=["hide-input"]
gap = claims.scale_gap(evidence.table1, paper) if len(on_paper) else pd.DataFrame()
display(Markdown(claims.scale_gap_text(gap) or "No dataset of the paper has runs yet."))
if len(gap):
    book.record("hr_ratio_range", [float(gap["HR@5 ours/paper, lowest"].min()), float(gap["HR@5 ours/paper, highest"].max())])

# %% [markdown]
# ## Table 1 and Table 2 as figures
#
# Our runs, grouped by dataset: the mean over seeds, and the range of the seeds as a line on each
# bar (a bar without one has a single seed).

# %% tags=["hide-input"]
if len(evidence.table1):
    fig = plots.plot_table_bars(evidence.table1, list(methods.table1()), title="Table 1: our runs")
if len(evidence.ablations):
    fig = plots.plot_table_bars(evidence.ablations, ["sprec", "sprec-nosft", "sprec-nodpo", "sprec-rn"],
                                title="Table 2: SPRec and its ablations, our runs")

# %% [markdown]
# ## How stable is this?
#
# SPRec − SFT, dataset by dataset: the effect (the bar; the mean over seeds), the spread of the
# seeds' differences (black, ±1 std, where there are 2 seeds or more) and the noise of one run's
# training alone (the grey band: ±√2 × the seed spread the book measures on its groups of two seeds
# or more, pooled over methods) and, in orange, the test rows' 95% interval of the effect: the
# seeds share their 1,000 test rows, so their spread cannot show how much another draw of test
# rows would move the effect (a paired bootstrap of the seeds' mean where every run kept its
# per-row predictions, else the bound; the noise rule asks the effect to clear both). An
# effect inside the grey band is within what re-training one seed can do; "n=" is the number of seeds.

# %% tags=["hide-input"]
stable = claims.stability(evidence.table1, "sprec", "sft", rule=rule, row_data=claims.load_row_data)
if len(stable):
    fig = plots.plot_stability(stable, title="SPRec − SFT: effect, seed spread, one-run noise")
    book.record("stability_seeds", {f"{r.dataset} {r.metric}": int(r.seeds) for r in stable.itertuples()})

# %% [markdown]
# ### At T, or at T − 1?
#
# SPRec's per-iteration curves swing on these runs: up at odd iterations, back at even ones (the
# training pages' "Does the curve settle, or swing?", `sprec_lib.results.alternation`; the theorem
# chapter's Result 3 predicts such swings for the exact self-play iteration). Table 1 reads SPRec at
# its last iteration, T = 5 as in the paper, so the verdicts above may hang on T being odd. The same
# effect as above, SPRec − SFT, at T (filled) and read again at T − 1 from the same runs (hatched;
# `sprec_lib.claims.endpoint_stability`). An effect that holds at T but falls inside the grey band at
# T − 1 is a property of the swing's phase as much as of self-play.

# %% tags=["hide-input"]
endpoints = claims.endpoint_stability(evidence.table1, rule)
if len(endpoints):
    fig = plots.plot_stability(endpoints, title="SPRec − SFT at the last iteration T and at T − 1")
    book.record("endpoint_effects", {f"{r.dataset} {r.metric}": [round(r.effect, 4), round(r.effect_before, 4)]
                                     for r in endpoints.itertuples()})

# %% [markdown]
# ## Compute spent
#
# Lane-hours of every committed run (`results/runs`), summed over seeds and variants, from the run
# logs (`sprec_lib.results.compute_spent`; the same table: `sprec runs cost --by method`). One thread
# per run, beside another run on a 2-core machine, for the later runs; the early ones ran at
# torch's default thread count (the config's `model.torch_threads` is empty), and the caption
# counts the runs per CPU. These are lower bounds: the time a killed process
# spent after its last log line is not known (the upper bound, as if every killed process had run
# until the next restart, is recorded beside). A pretraining or SFT stage reused from the shared
# cache is counted in the run that trained it, so the methods that start from SFT look cheaper than
# a run from scratch would be.

# %% tags=["hide-input"]
from sprec_lib import results

spent = results.compute_spent(book.resolve("results/runs"))
if len(spent):
    hours = results.compute_table(spent, by="method").round(2)
    book.record("lane_hours_total", round(float(spent["hours"].sum()), 1))
    book.record("lane_hours_at_most", round(float(spent["hours_at_most"].sum()), 1))
    cpus = results.cpus_text(spent)
    book.record("lane_hours_cpus", cpus)
    display(plots.html_table(hours.reset_index(), caption=f"lane-hours per dataset and method, committed runs (lower bounds; "
                                                          f"runs started on: {cpus})"))

# %% [markdown]
# ## The paper against its own claims
#
# Each claim as coded, checked on the paper's own numbers, one value per cell and no spread, so a
# direction is a plain sign. The paper must pass each claim on every dataset its text names: where
# a first reading of the text failed on the paper's own table, the claim was narrowed and the note
# says how.

# %% tags=["hide-input"]
summary = claims.paper_summary(paper=paper)
book.record("paper_passes", summary.set_index("id")["paper passes on"].to_dict())
display(plots.html_table(summary))

# %% [markdown]
# ## Summary
#
# The values this page recorded; the tests read them back.

# %% tags=["hide-input"]
book.summary()
