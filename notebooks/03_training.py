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
# # Training and evaluation: the Table-1 rows of one dataset
#
# Every method of the registry's Table 1 (`sprec_lib.methods`, one recipe file each), after the
# same start (for the `tiny` profile: domain pretraining, then the paper's SFT on 4,096 rows):
#
# | method | what it trains on | paper |
# |---|---|---|
# | `sasrec` | a sequential recommender of its own (no LLM), BCE with random negatives | SASRec |
# | `sft` (BIGRec) | the positives, cross-entropy | the baseline of Table 1 |
# | `rw` | SFT with per-row weights that balance the genres | RW |
# | `d3` | no training: the SFT model decoded with D3's rule and a SASRec assistant | D3 |
# | `dmpo` | (positive, K random negatives), DMPO's loss | DMPO |
# | `sdpo` | (positive, K random negatives), softmax loss | S-DPO |
# | `dpo` | (positive, one uniformly random negative) | DPO with random negatives (ours: §4.1's setting) |
# | `rosepo` | (positive, a semantic negative), smoothed DPO loss | RosePO |
# | `sprec` | per iteration: SFT on positives, then DPO against the model's own top recommendation | SPRec |
#
# Every run is found or trained through `sprec_lib.experiments.obtain`: the committed copy under
# `results/runs/` first, then a finished local run under `runs/`, then (when `train` is true) a
# new or resumed run. So this notebook loads what exists and trains only what is missing. The
# headline metrics of a run are those of its final stage (SPRec: its last iteration), on the test
# split, mean ± std over seeds.

# %% tags=["parameters", "hide-input"]
data_dir: str = "data/ml-1m"  # paper-format folder, relative to the repo root
profile: str = "tiny"  # tiny | small | paper
methods: list = []  # empty: every Table-1 method of the registry (sprec_lib/methods)
seeds: list = [0, 1, 2]
train: bool = False  # True: train the runs that are missing (hours on a CPU); False: use the runs that exist
quick: bool = False  # a few training steps per stage, one seed, under runs/quick (plumbing, not results)

# %% tags=["remove-output", "hide-input"]
import pandas as pd

from sprec_lib import book, experiments, plots, results
from sprec_lib.data.sprec_format import read_sprec_folder

quick = book.quick_mode(quick)
seeds = book.sizes("03_training", quick, seeds=seeds).seeds
methods = methods or list(experiments.table1_methods())
specs = experiments.specs(data_dir, methods, seeds, profile)
pairs = experiments.obtain_all(specs, train=train, quick=quick)  # prints how many are finished
runs = [run for _, run in pairs]
book.record("runs_finished", len(runs))
book.record("runs_asked", len(specs))

# %% tags=["hide-input"]
from IPython.display import Markdown

from sprec_lib import claims

pd.set_option("display.max_colwidth", None)  # whole tables, no "..."
pd.set_option("display.max_columns", None)
cfg = experiments.RunSpec(data_dir, "sprec", seeds[0], profile).config(quick)  # SPRec's config holds every stage's
test_rows = sorted({int(r) for r in results.run_rows(runs)["rows"].dropna()}) if runs else []
display(plots.setup_box(
    claims.setup_differences(cfg),
    f"Setup: the {cfg.profile} profile on {experiments.RunSpec(data_dir, 'sprec').dataset}" + (" (quick mode)" if quick else ""),
    "Ours against the paper's (Appendix C and its public scripts; the defaults of sprec_lib.config). Batches "
    "are per step x accumulation on one device; the paper's scripts run on four GPUs (see the reproducibility "
    "chapter). Test rows of these runs: " + (", ".join(f"{n:,}" for n in test_rows) or "none yet") + "."))
display(plots.missing_runs(specs, [spec for spec in specs if spec not in {s for s, _ in pairs}]))

# %% [markdown]
# ## The Table-1 rows
#
# HR@5 and NDCG@5 say how often the held-out next item is among the top 5; DivRatio@K is the
# share of distinct items among all top-K lists (higher: less concentrated); ORRatio@K is the share
# of recommendations taken by the three most recommended items (lower: less over-recommendation);
# MGU@K is the mean gap between a genre's share of the recommendations and of the histories (lower:
# fairer); `valid_ratio` is the share of generations that name a catalogue title (grounding maps
# the others to their nearest title, so a model that stops writing titles would look "diverse").

# %% tags=["hide-input"]
rows = results.run_rows(runs)
table = results.summary_table(rows) if runs else rows
if runs:
    book.record("table_shape", list(table.shape))
    book.record("table_means", results.table_means(table))
    display(results.format_mean_std(table).droplevel(["dataset", "profile"]).T)  # one column per method

# %% [markdown]
# ## Beside the paper's numbers
#
# Each cell is *ours / the paper's* (`sprec_lib/paper/sprec_tables.csv`, the paper's Table 1): ours
# the mean over seeds, ± their standard deviation when there are several. The figure puts them side by
# side per method, one panel per metric, each with its own scale: our model is far smaller than the
# paper's, so the pattern across methods is what can be compared, not the values.

# %% tags=["hide-input"]
if runs:
    side, note = claims.paper_beside_page(rows)
    if note:
        display(Markdown(note))
    book.record("paper_beside_rows", int(side["paper"].notna().sum()))
    display(plots.html_table(claims.paper_beside_wide(side)))
    fig = plots.plot_paper_beside_ours(side, side["dataset"].iloc[0])

# %% [markdown]
# Against SFT, seed by seed: the paired difference (method − SFT, same seed, so the shared
# pretraining and SFT cancel), its mean and its std over seeds. The paper's directional claims are
# that DPO with random negatives raises ORRatio and lowers DivRatio, and that SPRec does the
# opposite without losing HR.

# %% tags=["hide-input"]
if runs and "sft" in set(rows["method"]):
    diffs = results.paired_differences(rows, base="sft")
    book.record("differences_vs_sft", {f"{r.label} {r.metric}": r.mean for r in diffs.itertuples()})
    display(diffs.pivot(index="metric", columns="label", values="text").reindex(results.TABLE_COLUMNS))

# %% [markdown]
# ## SPRec iteration by iteration (the paper's Fig. 4)
#
# Iteration 0 is the SFT model every method starts from; the lines are the mean over seeds, the
# shading their range; the dotted lines are DPO's and S-DPO's final values (mean over seeds).

# %% tags=["hide-input"]
sprec_runs = [run for spec, run in pairs if spec.method == "sprec"]
if sprec_runs:
    curves = results.curves(sprec_runs)
    others = rows[~rows["method"].isin(["sft", "sprec"])].groupby("method")[results.TABLE_COLUMNS].mean()
    fig = plots.plot_iteration_curves(curves, ["HR@5", "NDCG@5", "DivRatio@1", "ORRatio@1", "MGU@1", "valid_ratio"],
                                      title=f"{experiments.RunSpec(data_dir, 'sprec').dataset}: SPRec per iteration ({profile})",
                                      references=others)
    book.record("iterations", int(curves["iteration"].max()))

# %% [markdown]
# ### Does the curve settle, or swing?
#
# The theorem chapter's Result 3 predicts that iterating DPO's exact optimum with self-play
# negatives at β = 0.1 swings between the head and the tail every iteration; short DPO steps should
# damp the swing. Here, per metric: how many of the T − 1 chances to turn (an up step followed by a
# down step, or the reverse) each run's curve took, and the mean over odd and over even iterations
# (`sprec_lib.results.alternation`). Where the curves swing, the run's last iteration (the value of
# Table 1) lands on one phase of the swing, and T = 4 would have given another picture than T = 5.

# %% tags=["hide-input"]
if sprec_runs:
    swing = results.alternation(curves, ["DivRatio@1", "ORRatio@1", "HR@5", "valid_ratio"])
    swing_table = results.alternation_summary(swing, by=["metric"])
    book.record("turns", {m: f"{int(r.turns)}/{int(r.possible)}" for m, r in swing_table.iterrows()})
    display(swing_table.round(4))

# %% [markdown]
# ### Which step makes the swing? (ours)
#
# Each iteration has two steps: SFT on the positives, then DPO against the negatives. The public
# script evaluates the model after both; the book's curves show the model that ends each iteration.
# Runs made with `sprec.eval_sft_steps=true` keep both evaluations (it changes no trained weight);
# a finished run keeps its SFT-step models, so `sprec eval RUN --stage it<t>-sft` adds them later.
# For them, the curve step by step (iteration t − 0.5: the model after iteration t's SFT step), and
# what each step changed, the mean over those runs (`sprec_lib.results.step_curves`,
# `step_changes`). If the SFT steps undo the last DPO step while the DPO steps push by turns harder
# and softer, the swing is in the DPO step, and the negatives' popularity is the lead to follow; if
# the DPO steps push alike and the SFT steps pull back by turns, it is the SFT step's.

# %% tags=["hide-input"]
steps = results.step_curves(sprec_runs)  # empty without such runs
if len(steps):
    step_metrics = ["DivRatio@1", "ORRatio@1", "HR@5", "valid_ratio"]
    fig = plots.plot_iteration_curves(steps, step_metrics, title="SPRec step by step (t − 0.5: after iteration t's SFT step)")
    changes = results.step_changes(steps, step_metrics)
    by_step = changes.groupby(["metric", "iteration"], sort=False)[["sft_step", "dpo_step"]].mean()
    book.record("step_changes", {f"{m} it{t}": {k: round(float(v), 4) for k, v in r.items()} for (m, t), r in by_step.iterrows()})
    display(Markdown(f"{steps.groupby(['label', 'seed']).ngroups} run(s) with SFT-step evaluations "
                     f"({', '.join(f'seed {s}' for s in sorted(steps['seed'].unique()))})."))
    display(by_step.unstack("metric").swaplevel(0, 1, axis=1)[step_metrics].round(4))  # per metric: its two steps
else:
    book.record("step_changes", {})
    display(Markdown("No SPRec run on this page was evaluated after its SFT steps (`--set sprec.eval_sft_steps=true`): pending."))

# %% [markdown]
# ## What the self-play negatives are (section 4.2)
#
# SPRec's claim rests on one mechanism: the model's own recommendations, used as negatives, are
# the items it over-recommends, so DPO pushes probability away from the popular head, where
# uniformly random negatives mostly fall on the long tail. Here: the share of each iteration's
# titles that fall on the 10% of catalogue items most often a training target.

# %% tags=["hide-input"]
ds = read_sprec_folder(book.resolve(data_dir)) if sprec_runs else None  # read once, for every run
negs = [results.negatives_table(run, ds) for run in sprec_runs]
negs = [n.assign(seed=run.cfg.seed) for n, run in zip(negs, sprec_runs) if n is not None and len(n)]
if negs:
    negs = pd.concat(negs, ignore_index=True)
    fig = plots.plot_negatives_popularity(negs)
    head_share = negs.groupby("kind")["head_share"].mean()
    book.record("negatives_head_share", head_share.to_dict())
    display(negs.groupby(["iteration", "kind"])[["head_share", "top3_share", "distinct"]].mean().round(3))

# %% [markdown]
# ## Genre fairness per genre (the paper's Fig. 3)
#
# GU@1 of each evaluated genre: how far the genre's share of the top-1 recommendations is from
# its share of the users' histories.

# %% tags=["hide-input"]
if runs:
    gu = results.genre_gu(runs, k=1)
    fig = plots.plot_genre_gu(gu, k=1)
    book.record("genres", len(gu))

# %% [markdown]
# ## Summary
#
# The values this notebook recorded; the tests and the results chapter read them back.

# %% tags=["hide-input"]
book.summary()
