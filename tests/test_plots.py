"""Tests for sprec_lib.plots: every figure function returns a Figure with labelled axes, and the
tables behind the figures say what their docstrings say."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sprec_lib import plots, theory  # noqa: E402
from sprec_lib.data.synthetic import make_synthetic  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_items=40, sizes=(200, 20, 40), seed=1)


def assert_labelled(fig: Figure, n_axes: int) -> None:
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == n_axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), "every axis is labelled"
        assert ax.lines or ax.patches, "every axis shows data"


def test_plot_optimum_vs_beta():
    p = theory.zipf(15, 1.0)
    fig = plots.plot_optimum_vs_beta(p, [0.1, 1.0])
    assert_labelled(fig, 1)
    lines = fig.axes[0].lines
    assert len(lines) == 3  # two optima and p_D
    # beta = 1 with uniform q and reference gives p_D back (the lines coincide).
    np.testing.assert_allclose(lines[1].get_ydata(), lines[2].get_ydata(), rtol=1e-12)


def test_head_mass_table_and_plot():
    betas = [0.1, 0.5, 1.0, 2.0]
    table = plots.head_mass_table(12, [0.5, 1.0], betas, head_k=2)
    assert table.shape == (8, 5)
    for _, t in table.groupby("zipf_a"):
        dpo = t.sort_values("beta")["dpo_uniform_ref"].to_numpy()
        assert np.all(np.diff(dpo) < 0)  # larger beta, less concentrated
        at_one = t[t["beta"] == 1.0].iloc[0]
        assert math.isclose(at_one["dpo_uniform_ref"], at_one["sft"], rel_tol=1e-12)
        assert np.all(t["dpo_sft_ref"] >= t["dpo_uniform_ref"] - 1e-12)  # after SFT: sharper still
    assert_labelled(plots.plot_head_mass(table, head_k=2, mark_beta=0.1), 1)


def test_self_play_table_and_plot():
    p = theory.zipf(10, 1.0)
    pi_0 = theory.dpo_optimum(p, theory.uniform(10), theory.uniform(10), 0.5)
    runs = {
        "self": theory.self_play(p, pi_0, 0.1, 3, dpo_steps=5, dpo_lr=4.0),
        "exact": theory.self_play(p, pi_0, 0.1, 3),
    }
    table = plots.self_play_table(runs, p, head_k=2)
    assert table.shape == (8, 5)
    assert set(table.columns) == {"variant", "iteration", "head_mass", "entropy", "tv_to_data"}
    assert table["head_mass"].between(0, 1).all() and table["tv_to_data"].between(0, 1).all()
    fig = plots.plot_self_play(runs, p, head_k=2, title="t")
    assert_labelled(fig, 2)
    assert fig.axes[1].get_ylim()[1] <= 2.0  # probabilities, even when the exact iteration underflows


def test_popularity(ds):
    counts = plots.popularity_counts(ds, "train")
    assert counts.sum() == len(ds.train) and np.all(np.diff(counts) <= 0) and counts[-1] >= 1
    fig = plots.plot_popularity(ds, splits=("train", "test"))
    assert_labelled(fig, 1)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"


def test_genre_shares(ds):
    table = plots.genre_shares(ds, "train")
    assert list(table.index) == ds.genres and list(table.columns) == ["history", "target"]
    np.testing.assert_allclose(table.sum().to_numpy(), 1.0)
    assert_labelled(plots.plot_genre_shares(table, ds.name), 1)


def test_iteration_curves_plot_the_mean_over_seeds_and_the_references():
    import pandas as pd

    curves = pd.DataFrame({"label": ["sprec"] * 4, "seed": [0, 0, 1, 1], "iteration": [0, 1, 0, 1],
                           "HR@5": [0.1, 0.3, 0.2, 0.5]})
    refs = pd.DataFrame({"HR@5": [0.25]}, index=["dpo"])
    fig = plots.plot_iteration_curves(curves, ["HR@5"], references=refs)
    ax = fig.axes[0]
    sprec = next(line for line in ax.get_lines() if line.get_label() == "sprec")
    assert list(sprec.get_xdata()) == [0, 1] and list(sprec.get_ydata()) == pytest.approx([0.15, 0.4])
    dpo = next(line for line in ax.get_lines() if line.get_label() == "dpo (final)")
    assert list(dpo.get_ydata()) == [0.25, 0.25]
    assert ax.get_xlabel() and ax.get_ylabel()


def test_genre_gu_and_sweep_plots():
    import pandas as pd

    gu = pd.DataFrame({"sft": [0.1, 0.2], "sprec": [0.05, 0.1]}, index=["Drama", "Comedy"])
    fig = plots.plot_genre_gu(gu)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [0.05, 0.1, 0.1, 0.2] and fig.axes[0].get_ylabel() == "GU@1 (absolute share gap)"
    sweep = pd.DataFrame({"random_ratio": [0.0, 0.0, 1.0], "HR@5": [0.1, 0.3, 0.5]})
    fig = plots.plot_sweep(sweep, "random_ratio", ["HR@5"], xlabel="share of random negatives")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 1.0] and list(line.get_ydata()) == pytest.approx([0.2, 0.5])


def test_negatives_popularity_plot():
    import pandas as pd

    table = pd.DataFrame({"iteration": [1, 1, 1, 1, 2, 2], "kind": ["positive", "self", "positive", "self", "positive", "self"],
                          "head_share": [0.5, 0.7, 0.5, 0.9, 0.4, 0.6]})
    fig = plots.plot_negatives_popularity(table, head=0.1)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["self-play negatives"].get_ydata()) == pytest.approx([80.0, 60.0])  # mean over seeds, in %
    assert list(lines["a uniform draw over the catalogue"].get_ydata()) == pytest.approx([10.0, 10.0])


def test_favourite_answers_plot():
    import pandas as pd

    favourites = pd.DataFrame({"label": ["sprec", "sprec", "sprec-rn"], "seed": [0, 1, 0],
                               "top1_share": [0.2, 0.4, 0.25], "previous_top1_share": [0.0, 0.02, 0.25],
                               "earlier_top1_share": [0.1, 0.3, 0.2]})
    fig = plots.plot_favourite_answers(favourites)
    bars = fig.axes[0].patches  # three groups of bars, one bar per method in each
    heights = [b.get_height() for b in bars]
    assert heights == pytest.approx([30.0, 25.0, 1.0, 25.0, 20.0, 20.0])  # means over seeds, in %
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["sprec", "sprec-rn"]
