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

# %%

# %% [markdown]
# # Negative samples: how many, and from where (the paper's section 5.4)
#
# Two questions about SPRec's DPO step, each with 1,024 training rows per iteration, each point the
# mean of the metrics after the last three iterations (the paper: MovieLens, the last three of five;
# the setup below says what these runs did). The book asks for the sweeps on MovieLens at three
# seeds (the runs still to be made show as pending) and keeps its first sweeps, on `ml-1m` at one seed, on a page of their own:
#
# * **Random ratio** (Fig. 5): a share of the negatives is drawn uniformly at random, the rest are
#   the model's own recommendations. Ratio 0 is SPRec, ratio 1 is SPRec-RN. The paper finds that
#   debiasing weakens as the random share grows.
# * **Number of negatives N** (Fig. 6): the N most probable distinct titles of a beam search over
#   2N beams, with S-DPO's softmax loss over them. The paper finds more negatives help, with
#   diminishing returns.
#
# Variants: `experiments.ratio_variants`, `experiments.n_negative_variants`. Below each figure, the
# claim as a trend (`claims.SWEEP_CLAIMS`, `claims.check_trends`): the least-squares slope of a
# metric against the setting, times the sweep's range, must be clear of the noise in the claimed
# direction (with one seed: beyond the band of two single evaluations; with three or more: the
# same sign in every seed, a mean beyond the seeds' spread, and beyond the band of the test rows,
# which the seeds share), else the verdict is "inconclusive". A seed whose sweep points began from
# different SFT models (a shared stage made again on another machine) is fitted on each point's
# change from its own start, and its check reads `paired: own start`.

# %% tags=["parameters"]
data_dir: str = "data/ml-1m"  # paper-format folder, relative to the repo root
profile: str = "tiny"  # tiny | small | paper
seeds: list = [0]
ratios: list = [0.0, 0.25, 0.5, 0.75, 1.0]
n_negatives: list = [1, 2, 3, 4]
train: bool = False  # True: train the runs that are missing (hours on a CPU); False: use the runs that exist
quick: bool = False  # a few training steps, two points per sweep, under runs/quick (plumbing, not results)

# %%
from sprec_lib import book, claims, experiments, plots, results

quick = book.quick_mode(quick)
size = book.sizes("05_negative_samples", quick, seeds=seeds, ratios=ratios, n_negatives=n_negatives)
seeds, ratios, n_negatives = size.seeds, size.ratios, size.n_negatives

# %% tags=["hide-input"]
study = experiments.RunSpec(data_dir, "sprec", seeds[0], profile, experiments.STUDY_SPREC,
                            experiments.ratio_variants()[experiments.STUDY_SPREC])
cfg = study.config(quick)
book.record("sweep_iterations", cfg.sprec.iterations)
display(plots.setup_box(
    claims.setup_differences(cfg),
    f"Setup: the {cfg.profile} profile on {study.dataset}" + (" (quick mode)" if quick else ""),
    f"The sweeps' shared point (SPRec, N = 1, no random negatives); each point changes one setting. "
    f"{cfg.sprec.iterations} iterations of {cfg.sprec.train_rows:,} rows, seeds {', '.join(map(str, seeds))}. "
    "Ours against the paper's (Appendix C and its public scripts; the defaults of sprec_lib.config)."))


# The book's noise rule, as on the claims page and the scorecard: its training noise is the seed
# spread of every committed method with several seeds (claims.book_rule), so the pages agree.
rule = claims.book_rule(claims.gather_evidence([], profile, sweeps={}, quick=quick).rows())


def show(rows, setting, values, xlabel, title):
    """The sweep's figure, its table (mean over seeds per setting) and the paper's claim about it
    (`claims.SWEEP_CLAIMS`: the fitted change clear of the noise); returns the verdict."""
    if len(rows):
        plots.plot_sweep(rows, setting, ["HR@5", "DivRatio@1", "ORRatio@1", "MGU@1", "valid_ratio"],
                         xlabel=xlabel, title=title)
        display(rows.groupby(setting)[results.TABLE_COLUMNS].mean())
    checks = claims.trend_checks(rows, setting, values, rule=rule)
    display(checks)
    return claims.verdicts(checks).to_dict()


# %% [markdown]
# ## The random ratio (Fig. 5)

# %% tags=["hide-output"]
ratio_rows = experiments.sweep(data_dir, "random_ratio", ratios, seeds, profile, train=train, quick=quick)

# %%
book.record("ratio_points", len(ratio_rows))
book.record("ratio_verdict", show(ratio_rows, "random_ratio", ratios, "share of random negatives",
                                  "SPRec with a share of random negatives"))

# %% [markdown]
# ## The number of negatives (Fig. 6)

# %% tags=["hide-output"]
n_rows = experiments.sweep(data_dir, "n_negatives", n_negatives, seeds, profile, train=train, quick=quick)

# %%
book.record("n_points", len(n_rows))
book.record("n_verdict", show(n_rows, "n_negatives", n_negatives, "self-play negatives per row (N)",
                              "SPRec with N negatives"))

# %% [markdown]
# ## Summary

# %%
book.summary()
