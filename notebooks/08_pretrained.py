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
# # A pretrained LLM: the claims with SmolLM2-135M
#
# Every number in the chapters before this one comes from the `tiny` profile: a Llama-architecture
# model of a few million parameters, trained from scratch on each dataset's titles. Its SFT model
# is more popularity-collapsed than the paper's BIGRec on three of the four datasets (ORRatio@1 on
# MovieLens 0.60 against the paper's 0.26; CDs is the exception), so a method that debiases may look
# stronger, or weaker, than it would on a real LLM. This chapter runs the paper's claims again with
# the `small` profile: SmolLM2-135M-Instruct, a pretrained instruct model, fine-tuned with LoRA as
# the paper fine-tunes Llama-3.2-1B-Instruct. The library loads it from a 4-bit (Q4_1) GGUF,
# dequantised: the rounding is not free for a model this small, and no unquantised copy could be
# fetched (`results/investigations/README.md`, "The small profile's base model").
#
# The methods are SFT (BIGRec), DPO with random negatives (§4.1's setting), S-DPO, SPRec and SPRec-RN
# (SPRec with random instead of self-play negatives), on MovieLens and Goodreads. Their runs are
# named by `sprec_lib.pretrained.specs` and found by `sprec_lib.pretrained.obtain`: the committed
# copy under `results/runs/<dataset>-small/`, else a finished local run under `runs/` (exported
# when found). By default the page trains nothing: each missing run is listed with the command that
# makes it, and the page fills in as the runs land.

# %% tags=["parameters", "hide-input"]
datasets: list = ["MovieLens", "Goodreads"]  # sprec_lib.pretrained.DATASETS: names of sprec_lib.paths.DATASETS, or folders
profile: str = "small"  # the pretrained model's profile (sprec_lib.config.PROFILES)
compare_profile: str = "tiny"  # the profile beside it: the model trained from scratch
seeds: list = [0]
train: bool = False  # True: train the missing runs of `profile` (hours each on a CPU); False: use the runs that exist
quick: bool = False  # a tiny model's quick runs on a synthetic folder, under runs/quick (plumbing, not results)

# %% tags=["remove-output", "hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from sprec_lib import book, claims, experiments, plots, pretrained, results

pd.set_option("display.max_colwidth", None)  # whole tables, no "..."
pd.set_option("display.max_columns", None)

quick = book.quick_mode(quick)
size = book.sizes("08_pretrained", quick, datasets=datasets, seeds=seeds, profile=profile, compare_profile=compare_profile)
data = pretrained.folders(size.datasets)  # name -> folder
mine = pretrained.obtain(pretrained.specs(data.values(), size.profile, size.seeds), train=train, quick=quick)
theirs = pretrained.obtain(pretrained.specs(data.values(), size.compare_profile, size.seeds), train=False, quick=quick)
rows = pretrained.stacked_rows(mine, theirs)
profiles = list(dict.fromkeys([size.profile, size.compare_profile]))
paper = claims.paper_numbers()
book.record("runs_asked", {size.profile: len(mine.asked), size.compare_profile: len(theirs.asked)})
book.record("runs_found", {size.profile: len(mine.pairs), size.compare_profile: len(theirs.pairs)})
print(f"{size.profile}: {len(mine.pairs)} of {len(mine.asked)} runs finished; "
      f"{size.compare_profile}: {len(theirs.pairs)} of {len(theirs.asked)}")

# %% [markdown]
# ## What ran, and how it differs from the paper
#
# The settings of each profile's runs beside the paper's (Appendix C and its public scripts: the
# defaults of `sprec_lib.config`), from `sprec_lib.claims.setups_beside`. Batches are per step x
# accumulation on one device; the paper's scripts run on four GPUs (see the reproducibility
# chapter). `small` keeps the paper's learning rates and betas; to fit a CPU it trains SFT for
# fewer epochs, keeping each epoch's model so that the epoch count can be chosen on the validation
# split from one run, and gives SPRec fewer rows per iteration. On MovieLens and on Goodreads the
# validation split chose both epochs (after one, 64% and 59% of the rows' answers were not a
# catalogue title; HR@5 was within noise), and the tables use that model; the SFT learning rate was
# not chosen, and neither were more epochs (`results/investigations/README.md`, "The small profile's
# SFT epochs").

# %% tags=["hide-input"]
first = next(iter(data.values()))
configs = {p: experiments.RunSpec(first, "sprec", size.seeds[0], p).config(quick) for p in profiles}  # SPRec's config holds every stage's
setup = claims.setups_beside(configs)
book.record("setup", {r["setting"]: {p: r[p] for p in [*profiles, "paper"]} for r in setup.to_dict("records")})
if quick:
    display(Markdown(f"**Quick mode**: every run is a quick run of the `{size.profile}` profile on a synthetic "
                     "folder (a handful of training steps each; the pretrained model is not loaded). The numbers "
                     "check the plumbing and mean nothing as results."))
display(plots.html_table(setup, caption="The runs' settings beside the paper's"))

# %% [markdown]
# The runs this page reads, and those it did not find:

# %% tags=["hide-input"]
missing = list(dict.fromkeys(mine.missing + theirs.missing))
book.record("runs_missing", [f"{spec.group()}/{spec.name}" for spec in missing])
book.record("missing_commands", [spec.command() for spec in missing])
for p, found in {size.profile: mine, size.compare_profile: theirs}.items():
    display(Markdown(f"The `{p}` runs:"), plots.missing_runs(found.asked, found.missing))
notes = list(dict.fromkeys(mine.notes() + theirs.notes()))
if notes:
    display(plots.details(f"{len(notes)} runs found with other settings, not used (click to list them)", notes))
if missing:
    display(Markdown(
        f"**Pending: {len(missing)} runs are missing.** Each command below makes one (one thread each; a run "
        "resumes when its command is run again); then run this page again: it exports every finished run to "
        f"`results/runs`. With `train=True` the page trains the missing `{size.profile}` runs itself.\n\n```\n"
        + "\n".join(spec.command() for spec in missing) + "\n```"))

# %% [markdown]
# What the missing runs cost by the dry run (`sprec_lib.experiments.grid` and `lane_hours`: one
# lane, one thread, the benchmark's machine; a stage that runs share, such as the SFT of a dataset
# and seed, counted once). On a CPU they take hours each, the SFT stage of `small` alone more than
# the 3-hour sessions of the machines this book is built on, which do not always keep their run
# folders from one session to the next: these runs need a machine that keeps its disk, or a GPU.

# %% tags=["hide-input"]
grid = None
if missing and not quick:
    try:  # the estimates read the dataset folders, which a reader of the committed runs may not have
        grid = experiments.grid(missing)
    except (OSError, ValueError) as e:
        display(Markdown(f"No estimate: a dataset folder could not be read ({e})."))
cost = None if grid is None else experiments.lane_hours(grid)
book.record("missing_lane_hours", None if cost is None else {k: round(v, 2) if isinstance(v, float) else v
                                                             for k, v in cost.items()})
if grid is not None:
    display(plots.html_table(pd.DataFrame(
        [{"run": f"{r['dataset']} {r['label']} seed {r['seed']}", "profile": r["profile"],
          "hours, alone": None if r["estimate_s"] is None else round(r["estimate_s"] / 3600, 2),
          "of which shared stages": round(sum(s["estimate_s"] or 0 for s in r["stages"] if s["shared"]) / 3600, 2)}
         for r in grid]),
        caption=f"{cost['runs']} missing runs: {cost['hours']:.1f} lane-hours together "
                f"({cost['shared_hours']:.1f} of them shared stages, trained once)"))

# %% [markdown]
# ## Table 1: the pretrained model beside the model trained from scratch and the paper
#
# The final metrics of each method on the test split (SPRec's: its last iteration), the mean over
# seeds; each cell is *small / tiny / the paper's* (`sprec_lib.claims.profiles_beside_paper`; the
# paper's Table 1, and its Table 2 for SPRec-RN). "—": no run yet, or no such row in the paper (it
# has no plain-DPO row). HR@5 and NDCG@5: accuracy; DivRatio@1: distinct items per test row among
# the top-1 recommendations (higher: more diverse); ORRatio@1: the share of top-1 slots taken by the
# three most recommended items (lower: less over-recommendation); MGU@1: the mean gap between a
# genre's share of the recommendations and of the histories (lower: fairer).

# %% tags=["hide-input"]
side = claims.profiles_beside_paper(rows, profiles, pretrained.LABELS, datasets=list(data), paper=paper,
                                    metrics=pretrained.METRICS)
book.record("table", pretrained.table_record(side, profiles))
display(plots.html_table(claims.profiles_beside_wide(side, profiles),
                         caption="each cell: " + " / ".join([*profiles, "paper"])))

# %% [markdown]
# ## SPRec iteration by iteration (the paper's Fig. 4)
#
# Iteration 0 is the SFT model SPRec starts from; each later point is the model after one more
# self-play iteration (SFT on the positives, then DPO against the model's own top recommendation;
# SPRec-RN: against random items). The dotted lines are DPO's and S-DPO's final values. Under each
# figure: how often each curve turns (up then down, or down then up) of its T − 1 chances; on the
# `tiny` runs the curves swing with the iteration's parity, so the last iteration, Table 1's value,
# lands on one phase of the swing (the results page shows the verdicts at T and at T − 1).

# %% tags=["hide-input"]
iterations, turns = {}, {}
for dataset in data:
    runs = [run for spec, run in mine.pairs if spec.dataset == dataset and spec.label in pretrained.SPREC_LABELS]
    if not runs:
        display(Markdown(f"{dataset}: no SPRec run of the `{size.profile}` profile yet (pending)."))
        continue
    curves = results.curves(runs)
    mine_rows = rows[(rows["dataset"] == dataset) & (rows["profile"] == size.profile)]
    others = mine_rows[mine_rows["label"].isin(["dpo", "sdpo"])].groupby("label")[results.TABLE_COLUMNS].mean()
    fig = plots.plot_iteration_curves(curves, pretrained.CURVE_METRICS, references=others,
                                      title=f"{dataset}: SPRec and SPRec-RN per iteration ({size.profile})")
    iterations[dataset] = int(curves["iteration"].max())
    # Does the curve settle or swing (the training pages say why it matters: Table 1 reads iteration T)?
    swing = results.alternation(curves, ["DivRatio@1", "ORRatio@1", "HR@5", "valid_ratio"])
    swing = results.alternation_summary(swing, by=["label", "metric"])
    turns[dataset] = {f"{label} {metric}": f"{int(r.turns)}/{int(r.possible)}" for (label, metric), r in swing.iterrows()}
    display(plots.html_table(swing.reset_index(), caption=f"{dataset}: turns of each curve (of T − 1 chances), "
                             "the mean over odd and even iterations, and the last two values (sprec_lib.results.alternation)"))
book.record("curve_iterations", iterations)
book.record("turns", turns)

# %% [markdown]
# ## How popular the negatives are (section 4.2)
#
# SPRec's claim rests on one mechanism: the model's own recommendations, used as DPO's negatives,
# fall on the items it over-recommends, where uniformly random negatives mostly fall on the long
# tail. Per iteration, the share of each kind of title that lies in the 10% of catalogue items most
# often a training target (`sprec_lib.results.negatives_popularity`; an export keeps it as
# `negatives_popularity.json`): the positives, the self-play negatives (SPRec) and the random
# ones (SPRec-RN).

# %% tags=["hide-input"]
negs = pretrained.negatives(mine.pairs + theirs.pairs)
head = {}
for dataset in data:
    part = negs[(negs["dataset"] == dataset) & (negs["profile"] == size.profile)]
    if len(part):
        fig = plots.plot_negatives_popularity(part, title=f"{dataset}: how popular the negatives are ({size.profile})")
for (p, dataset), part in negs.groupby(["profile", "dataset"], sort=False):
    head.setdefault(p, {})[dataset] = part.groupby("kind")["head_share"].mean().round(4).to_dict()
book.record("negatives_head_share", head)
if len(negs):
    display(plots.html_table(negs.pivot_table(index=["dataset", "profile", "label", "kind"], columns="iteration",
                                              values="head_share", sort=False).reset_index(),
                             caption="share of titles on the popularity head, per iteration"))
else:
    display(Markdown("No SPRec run has its negatives here yet (pending)."))

# %% [markdown]
# The self-play negatives are the model's own answers, as they were: when the previous iteration's
# model wrote titles with the wrong year, so do its negatives, and those name no catalogue title.
# The share of the self-play negatives that name one, per iteration (`catalogue_share`; exports
# made before 2026-12-05 do not keep it):

# %% tags=["hide-input"]
own = negs[negs["kind"] == "self"] if len(negs) else negs
own = own[own["catalogue_share"].notna()] if "catalogue_share" in own else own.iloc[:0]
shares = {}
for (dataset, p, label), part in own.groupby(["dataset", "profile", "label"], sort=False):
    shares[f"{dataset}/{p}/{label}"] = {int(i): round(float(v), 3) for i, v in zip(part["iteration"], part["catalogue_share"])}
book.record("negatives_catalogue_share", shares)
display(plots.html_table(own.pivot_table(index=["dataset", "profile", "label"], columns="iteration",
                                         values="catalogue_share", sort=False).reset_index(),
                         caption="share of the self-play negatives that name a catalogue title, per iteration")
        if len(own) else Markdown("No SPRec run here keeps the share yet (pending)."))

# %% [markdown]
# The model's own answers are also concentrated: a collapsed model gives one answer far more often
# than any other, its *favourite*, and that answer's year is right or wrong for every row that gets
# it. Per iteration of each SPRec run: the favourite's share of the test rows (`top1_share`),
# whether it names a catalogue title, the share of rows naming one among the rows given one of the
# five favourite answers (`top_valid`) and among the others (`rest_valid`), and the share still
# given to the favourite of the iteration before, and of the one before that
# (`sprec_lib.results.answer_modes`; exports made before 2026-12-05 keep it only where the run's
# predictions were still on the machine). The ablations chapter compares SPRec with its variants;
# `results/investigations/README.md`, "Why the `small` SPRec's valid_ratio swings", measures which
# years each DPO step moved.

# %% tags=["hide-input"]
modes = {}
for spec, run in mine.pairs + theirs.pairs:
    table = results.answer_modes_table(run) if spec.label == "sprec" else None
    if table is None or not len(table):
        continue
    modes[f"{spec.dataset}/{spec.profile}"] = {c: [None if pd.isna(v) else round(float(v), 3) for v in table[c]]
                                               for c in ("top1_share", "previous_top1_share", "valid_ratio")}
    display(plots.html_table(table.round(3), caption=f"{spec.dataset}, {spec.profile}: the favourite answers of SPRec "
                             "per iteration (0: its SFT start)"))
book.record("answer_modes", modes)
if not modes:
    display(Markdown("No SPRec run here keeps its answers' summary yet."))

# %% [markdown]
# ## The claims, small beside tiny
#
# The verdicts of the claims these methods can test (`sprec_lib.pretrained.testable_claims`), one
# column per dataset and profile, under the book's noise rule (the claims page says it in full): a
# direction counts only when a 95% interval of the paired difference (method − its base, same seed)
# excludes zero, widened by one run's training noise as the book measures it on its groups of two
# seeds or more. *pending*: runs are missing.

# %% tags=["hide-input"]
rule = claims.book_rule(pretrained.noise_rows(rows, profiles, quick))
tested = pretrained.testable_claims()
checks = claims.check_claims(pretrained.placeholders(rows, data, profiles), tested, rule)
verdicts = claims.verdict_table(checks)
book.record("verdicts", {p: {d: dict(zip(part["id"], part["verdict"])) for d, part in by.groupby("dataset", sort=False)}
                         for p, by in verdicts.groupby("profile", sort=False)})
display(plots.html_table(claims.verdict_grid(verdicts).reset_index()))
left = [c for c in [*claims.CLAIMS.values(), *claims.ABLATION_CLAIMS.values()] if c not in tested]
display(Markdown("Not tested here, for want of the runs they compare: "
                 + ", ".join(f"({c.id})" for c in left) + " (the claims page has them on `tiny`)."))

# %% [markdown]
# Each part: the mean paired difference, its interval (`low`, `high`), the rule that made it and the outcome.

# %% tags=["hide-input"]
display(plots.html_table(checks[["dataset", "profile", "id", "method", "metric", "expected", "difference", "low", "high",
                                 "seeds", "rule", "outcome"]]))

# %% [markdown]
# ## What the pretrained model changes
#
# Issue 17 asks three questions of the pretrained model. Each answer below is computed from the
# runs (`sprec_lib.pretrained.answers`), with the noise rule above; "pending" while a run it needs
# is missing.
#
# 1. **Is SFT less popularity-collapsed?** The share of its top-1 slots that the SFT model gives to
#    its three favourite items (ORRatio@1): does a pretrained model, fine-tuned as the paper does,
#    give them less than the model trained from scratch, and is it nearer the paper's BIGRec?
# 2. **Does DPO with random negatives move ORRatio the way §4.1 predicts?** Theorem 1 says DPO
#    against uniformly random negatives sharpens the data's popularity, which SFT has taught the
#    model: ORRatio up. A method whose answers stop being catalogue titles moves ORRatio too, since
#    evaluation grounds such an answer to its nearest titles. Where the runs recorded it, the answer
#    says what those answers are (how many name a title with a wrong year, and where grounding sent
#    them: `sprec_lib.evaluation.answer_kinds`) and splits ORRatio@1 into the answers that name a
#    title and the grounded ones, each beside the same kind of its SFT start's answers
#    (`sprec_lib.pretrained.orratio_by_answer`). Which tokens the preference steps moved, names or
#    years: `results/investigations/README.md`, "Where the `small` DPO's wrong years come from".
# 3. **Does SPRec keep HR@5?** The paper's SPRec debiases without losing accuracy.

# %% tags=["hide-input"]
answered = pretrained.answers(rows, checks, list(data), size.profile, size.compare_profile, paper, rule)
book.record("answers", {q: dict(zip(part["dataset"], part["answer"])) for q, part in answered.groupby("question", sort=False)})
book.record("answer_texts", {q: dict(zip(part["dataset"], part["text"])) for q, part in answered.groupby("question", sort=False)})
display(Markdown("\n\n".join(f"**{part['asked'].iloc[0]}**\n\n" + "\n".join(f"* {t}" for t in part["text"])
                             for _, part in answered.groupby("question", sort=False))))

# %% [markdown]
# ## Summary
#
# The values this page recorded; the tests read them back.

# %% tags=["hide-input"]
book.summary()
