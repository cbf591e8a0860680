"""Every figure of the book, one function each; each returns its matplotlib ``Figure``.

A notebook calls one of these per figure, so the code behind any figure is one step away. The
small tables a figure is drawn from are computed here too (``*_table``, ``popularity_counts``,
``genre_shares``), so that a notebook can also show or record the numbers it plots.

The theorem's figures (notebook ``01_theorem``, from :mod:`sprec_lib.theory`):

* :func:`plot_optimum_vs_beta`: the DPO optimum ``pi*`` over the catalogue for several ``beta``,
  against SFT's optimum ``p_D`` (the mode-seeking picture of the paper's Fig. 2);
* :func:`plot_head_mass` (table: :func:`head_mass_table`): how much of ``pi*`` the most popular
  items take, as a function of ``beta`` and the popularity skew;
* :func:`plot_self_play` (table: :func:`self_play_table`): head mass per self-play iteration, and
  the policies the iterations end at.

The datasets' figures (notebook ``02_datasets``, from a :class:`~sprec_lib.data.Dataset`):

* :func:`plot_popularity` (data: :func:`popularity_counts`): the long tail, rank vs target count;
* :func:`plot_genre_shares` (table: :func:`genre_shares`): the evaluated genres' shares of the
  histories and of the targets.

The runs' figures (notebooks ``03_training`` to ``05_negative_samples``, from the tables of
:mod:`sprec_lib.results`):

* :func:`plot_iteration_curves` (data: :func:`sprec_lib.results.curves`): SPRec's metrics per
  self-play iteration, mean and range over seeds (the paper's Fig. 4);
* :func:`plot_genre_gu` (table: :func:`sprec_lib.results.genre_gu`): GU per genre and method
  (Fig. 3);
* :func:`plot_sweep`: a metric against a swept setting, e.g. the random ratio or the number of
  negatives (Figs. 5 and 6);
* :func:`plot_negatives_popularity` (table: :func:`sprec_lib.results.negatives_popularity`): how
  much of SPRec's negatives fall on the popular head, against the positives and a uniform draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import theory

__all__ = [
    "plot_optimum_vs_beta",
    "head_mass_table",
    "plot_head_mass",
    "self_play_table",
    "plot_self_play",
    "popularity_counts",
    "plot_popularity",
    "genre_shares",
    "plot_genre_shares",
    "plot_iteration_curves",
    "plot_genre_gu",
    "plot_sweep",
    "plot_negatives_popularity",
    "plot_favourite_answers",
]

SFT_STYLE = dict(color="black", linestyle="--", linewidth=1.6)
PROB_FLOOR = 1e-12  # log-scale probability axes stop here (the exact optima reach 1e-300)


def _rank(n: int) -> np.ndarray:
    return np.arange(1, n + 1)


def _by_popularity(pi: np.ndarray, p_data: np.ndarray) -> np.ndarray:
    """``pi`` with its items ordered by ``p_data``, most popular first (stable for ties)."""
    return np.asarray(pi)[np.argsort(-np.asarray(p_data), kind="stable")]


# ----------------------------------------------------------------------------------------------
# the theorem (section 4.1, Appendix A)


def plot_optimum_vs_beta(
    p_data: np.ndarray,
    betas: Sequence[float],
    q: np.ndarray | None = None,
    pi_ref: np.ndarray | None = None,
) -> Figure:
    """The DPO optimum ``pi* ~ pi_ref (p_D / q)^(1/beta)`` for each ``beta``, and SFT's ``p_D``.

    ``q`` and ``pi_ref`` default to uniform. Items on the x axis are ranked by ``p_data``; the y
    axis is logarithmic, so a straight line is a power law and ``beta < 1`` steepens it.
    """
    p_data = np.asarray(p_data, dtype=np.float64)
    n = len(p_data)
    q = theory.uniform(n) if q is None else q
    pi_ref = theory.uniform(n) if pi_ref is None else pi_ref
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(betas)))
    for beta, colour in zip(betas, colours):
        pi = theory.dpo_optimum(p_data, q, pi_ref, beta)
        ax.plot(_rank(n), _by_popularity(pi, p_data), marker="o", markersize=3, color=colour,
                label=f"DPO optimum, $\\beta$ = {beta:g}")
    ax.plot(_rank(n), _by_popularity(p_data, p_data), label="SFT optimum (forward KL) = $p_D$", **SFT_STYLE)
    ax.set_yscale("log")
    ax.set_ylim(max(PROB_FLOOR, ax.get_ylim()[0]), 2.0)
    ax.set_xlabel("item rank by popularity in the data (1 = most popular)")
    ax.set_ylabel("probability the policy recommends the item")
    ax.set_title(f"DPO optimum vs SFT on a Zipf catalogue of {n} items (uniform negatives and reference)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def head_mass_table(
    n_items: int, zipf_as: Sequence[float], betas: Sequence[float], head_k: int
) -> pd.DataFrame:
    """Head mass (the top ``head_k`` items' probability) of SFT's and DPO's optima.

    One row per (``zipf_a``, ``beta``): ``p_D = zipf(n_items, zipf_a)``, uniform negatives;
    ``dpo_uniform_ref``: ``pi_ref`` uniform (DPO from scratch); ``dpo_sft_ref``: ``pi_ref = p_D``
    (DPO after a converged SFT, as in practice); ``sft``: ``p_D`` itself.
    """
    rows = []
    for a in zipf_as:
        p = theory.zipf(n_items, a)
        u = theory.uniform(n_items)
        for beta in betas:
            rows.append({
                "zipf_a": float(a),
                "beta": float(beta),
                "sft": theory.head_mass(p, head_k),
                "dpo_uniform_ref": theory.head_mass(theory.dpo_optimum(p, u, u, beta), head_k, p),
                "dpo_sft_ref": theory.head_mass(theory.dpo_optimum(p, u, p, beta), head_k, p),
            })
    return pd.DataFrame(rows)


def plot_head_mass(table: pd.DataFrame, head_k: int, mark_beta: float | None = None) -> Figure:
    """Head mass of the optima against ``beta`` (log axis), one colour per popularity skew.

    Solid: DPO with a uniform reference; dotted: DPO after SFT (``pi_ref = p_D``); dashed: SFT.
    ``mark_beta``: a vertical line there (the paper's 0.1).
    """
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    skews = sorted(table["zipf_a"].unique())
    colours = plt.cm.plasma(np.linspace(0.0, 0.8, len(skews)))
    for a, colour in zip(skews, colours):
        t = table[table["zipf_a"] == a].sort_values("beta")
        ax.plot(t["beta"], 100 * t["dpo_uniform_ref"], color=colour)
        ax.plot(t["beta"], 100 * t["dpo_sft_ref"], color=colour, linestyle=":")
        ax.axhline(100 * t["sft"].iloc[0], color=colour, linestyle="--", linewidth=1.2)
    styles = [Line2D([], [], color="grey", label="DPO, uniform reference"),
              Line2D([], [], color="grey", linestyle=":", label="DPO after SFT ($\\pi_{ref} = p_D$)"),
              Line2D([], [], color="grey", linestyle="--", label="SFT (= $p_D$)")]
    if mark_beta is not None:
        ax.axvline(mark_beta, color="black", linewidth=0.8)
        styles.append(Line2D([], [], color="black", linewidth=0.8, label=f"$\\beta$ = {mark_beta:g}"))
    first = ax.legend(handles=styles, fontsize=8, loc="lower left")
    ax.add_artist(first)
    ax.legend(handles=[Line2D([], [], color=c, linewidth=3, label=f"Zipf a = {a:g}") for a, c in zip(skews, colours)],
              fontsize=8, loc="upper right", title="popularity skew", title_fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 102)
    ax.set_xlabel("DPO temperature $\\beta$ (log scale)")
    ax.set_ylabel(f"probability mass on the top {head_k} items (%)")
    ax.set_title("Smaller $\\beta$ and a steeper skew concentrate DPO's optimum on the head")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def self_play_table(
    trajectories: Mapping[str, Sequence[np.ndarray]], p_data: np.ndarray, head_k: int
) -> pd.DataFrame:
    """One row per (variant, iteration): head mass (top ``head_k`` items of ``p_data``), entropy
    (nats) and total variation distance to ``p_data``, for each ``[pi_0, ..., pi_T]`` given."""
    p_data = np.asarray(p_data, dtype=np.float64)
    rows = []
    for label, pis in trajectories.items():
        for t, pi in enumerate(pis):
            rows.append({
                "variant": label,
                "iteration": t,
                "head_mass": theory.head_mass(pi, head_k, p_data),
                "entropy": theory.entropy(pi),
                "tv_to_data": 0.5 * float(np.abs(np.asarray(pi) - p_data).sum()),
            })
    return pd.DataFrame(rows)


def plot_self_play(
    trajectories: Mapping[str, Sequence[np.ndarray]], p_data: np.ndarray, head_k: int, title: str = ""
) -> Figure:
    """Top: head mass per iteration for each variant, with ``p_D``'s head mass dashed.
    Bottom: each variant's final policy over the items ranked by ``p_data`` (log scale), and ``p_D``."""
    p_data = np.asarray(p_data, dtype=np.float64)
    table = self_play_table(trajectories, p_data, head_k)
    fig, (left, right) = plt.subplots(2, 1, figsize=(7.5, 8))
    colours = plt.cm.tab10(np.arange(len(trajectories)))
    for (label, pis), colour in zip(trajectories.items(), colours):
        t = table[table["variant"] == label]
        left.plot(t["iteration"], 100 * t["head_mass"], marker="o", color=colour, label=label)
        final = np.clip(_by_popularity(pis[-1], p_data), 1e-300, None)
        right.plot(_rank(len(p_data)), final, marker="o", markersize=3, color=colour, label=f"{label} (iteration {len(pis) - 1})")
    left.axhline(100 * theory.head_mass(p_data, head_k), label="data $p_D$ (SFT optimum)", **SFT_STYLE)
    left.set_xlabel("self-play iteration t (0 = the starting model)")
    left.set_ylabel(f"probability mass on the top {head_k} items (%)")
    left.set_ylim(-3, 103)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.plot(_rank(len(p_data)), _by_popularity(p_data, p_data), label="data $p_D$", **SFT_STYLE)
    right.set_yscale("log")
    shown = np.concatenate([p_data, *(np.asarray(pis[-1]) for pis in trajectories.values())])
    right.set_ylim(max(PROB_FLOOR, shown[shown > PROB_FLOOR].min(initial=1.0) / 2), 2.0)
    right.set_xlabel("item rank by popularity in the data (1 = most popular)")
    right.set_ylabel("probability of the final policy")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# datasets


def popularity_counts(ds, split: str = "train") -> np.ndarray:
    """How often each item is a target in ``split``, sorted descending (items never a target left out)."""
    return np.array(sorted(ds.target_popularity(split).values(), reverse=True), dtype=np.int64)


def plot_popularity(ds, splits: Sequence[str] = ("train",)) -> Figure:
    """The long tail: item rank vs how often the item is a target, log-log, one line per split."""
    fig, ax = plt.subplots(figsize=(7, 4.3))
    n = len(ds.catalogue)
    for split in splits:
        counts = popularity_counts(ds, split)
        ax.loglog(_rank(len(counts)), counts, marker=".", markersize=3, linewidth=1,
                  label=f"{split}: {len(counts)} of {n} catalogue items are targets ({counts.sum()} rows)")
    ax.set_xlabel("item rank by target count in the split (1 = most frequent)")
    ax.set_ylabel("rows whose target is the item (count)")
    ax.set_title(f"{ds.name}: popularity of target items (log-log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def genre_shares(ds, split: str = "train") -> pd.DataFrame:
    """The evaluated genres' shares of the histories' items and of the targets in ``split`` (each
    column sums to 1): every item spreads a mass of 1 evenly over its evaluated genres, as in the
    fairness metrics' GH / GP (:mod:`sprec_lib.metrics`)."""
    from . import metrics

    samples = ds.splits[split]
    item_genres = ds.item_genres()
    history = metrics.genre_shares((i for s in samples for i in s.history), item_genres, ds.genres)
    target = metrics.genre_shares((s.target for s in samples if s.target is not None), item_genres, ds.genres)
    table = pd.DataFrame({"history": history, "target": target})
    table.index.name = "genre"
    return table


def plot_genre_shares(table: pd.DataFrame, name: str, split: str = "train") -> Figure:
    """Grouped bars: each evaluated genre's share of history items and of targets (%)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(table) + 2), 4.3))
    x = np.arange(len(table))
    width = 0.4
    ax.bar(x - width / 2, 100 * table["history"], width, label="items in histories")
    ax.bar(x + width / 2, 100 * table["target"], width, label="target items")
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_xlabel("evaluated genre")
    ax.set_ylabel("share of the genre mass (%)")
    ax.set_title(f"{name}: genre shares of histories vs targets ({split} split)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# runs

METRIC_LABELS = {
    "HR@5": "HR@5 (share of rows)", "NDCG@5": "NDCG@5", "DivRatio@1": "DivRatio@1 (distinct / rows)",
    "DivRatio@5": "DivRatio@5", "ORRatio@1": "ORRatio@1 (top-3 items' share)", "ORRatio@5": "ORRatio@5",
    "MGU@1": "MGU@1 (mean genre gap)", "MGU@5": "MGU@5", "valid_ratio": "valid_ratio (catalogue titles)",
}


def _panels(n: int, width: float = 3.6, height: float = 3.0):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_iteration_curves(curves: pd.DataFrame, metrics: Sequence[str], title: str = "",
                          references: pd.DataFrame | None = None) -> Figure:
    """One panel per metric: its value after each self-play iteration (0 = the SFT model), one line
    per label (method or variant), the mean over seeds with the seeds' range shaded.
    ``references``: other methods' final values (rows: labels, columns: metrics), drawn as
    dotted horizontal lines, e.g. DPO and S-DPO."""
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        if references is not None:
            for i, (label, row) in enumerate(references.iterrows()):
                ax.axhline(row[metric], linestyle=":", linewidth=1.4, color=f"C{i + 3}", label=f"{label} (final)")
        for label, part in curves.groupby("label", sort=False):
            stats = part.groupby("iteration")[metric].agg(["mean", "min", "max"])
            line, = ax.plot(stats.index, stats["mean"], marker="o", markersize=4, label=label)
            if part["seed"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.15)
        ax.set_xlabel("self-play iteration (0 = SFT)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_genre_gu(table: pd.DataFrame, k: int = 1, title: str = "") -> Figure:
    """Grouped bars: GU@k (the gap between a genre's share of the recommendations and of the
    histories) per genre, one bar per method; lower is fairer."""
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(table) + 2), 4.3))
    x = np.arange(len(table))
    width = 0.8 / max(1, table.shape[1])
    for i, label in enumerate(table.columns):
        ax.bar(x + (i - (table.shape[1] - 1) / 2) * width, table[label], width, label=label)
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_xlabel("evaluated genre")
    ax.set_ylabel(f"GU@{k} (absolute share gap)")
    ax.set_title(title or f"Genre unfairness GU@{k} per genre (lower is fairer)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sweep(table: pd.DataFrame, x: str, metrics: Sequence[str], xlabel: str, title: str = "") -> Figure:
    """One panel per metric against the swept setting ``x`` (a column of ``table``), mean over the
    rows that share an ``x`` with their range shaded when there are several."""
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        stats = table.groupby(x)[metric].agg(["mean", "min", "max", "count"]).sort_index()
        line, = ax.plot(stats.index, stats["mean"], marker="o")
        if (stats["count"] > 1).any():
            ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_negatives_popularity(table: pd.DataFrame, head: float = 0.1, title: str = "") -> Figure:
    """Share of titles on the popularity head per SPRec iteration: the positives and the negatives
    by source (mean over seeds when ``table`` stacks several), and a uniform draw (dotted)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for kind, part in table.groupby("kind", sort=False):
        stats = part.groupby("iteration")["head_share"].mean()
        ax.plot(stats.index, 100 * stats.values, marker="o",
                label={"positive": "positives (the rows' targets)", "self": "self-play negatives",
                       "random": "random negatives"}.get(kind, kind))
    ax.axhline(100 * head, linestyle=":", color="gray", label="a uniform draw over the catalogue")
    ax.set_xlabel("self-play iteration")
    ax.set_ylabel(f"titles among the top {head:.0%} popular items (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 100)
    ax.set_title(title or "How popular SPRec's negatives are")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FAVOURITE_SHARES = {"top1_share": "its favourite", "previous_top1_share": "the favourite one iteration before",
                    "earlier_top1_share": "the favourite two iterations before"}


def plot_favourite_answers(favourites: pd.DataFrame, title: str = "") -> Figure:
    """Per method, the share of the test rows given to its favourite answer, and to the favourites
    of one and two iterations before (``favourites``: :func:`sprec_lib.results.favourite_answers`);
    bars the mean over seeds, dots the seeds."""
    labels = list(dict.fromkeys(favourites["label"]))
    width = 0.8 / len(FAVOURITE_SHARES)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 3.8))
    for j, (column, name) in enumerate(FAVOURITE_SHARES.items()):
        at = [i + (j - 1) * width for i in range(len(labels))]
        means = [100 * favourites.loc[favourites["label"] == label, column].mean() for label in labels]
        ax.bar(at, means, width, label=name)
        for x, label in zip(at, labels):
            seeds = favourites.loc[favourites["label"] == label, column]
            ax.plot([x] * len(seeds), 100 * seeds, "k.", markersize=4)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("test rows given it (%, mean over iterations 1..T)")
    ax.set_title(title or "The favourite answer, and the favourites before it")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# the paper beside ours (tables of sprec_lib.claims and sprec_lib.results)

__all__ += ["plot_paper_beside_ours", "plot_table_bars"]


def plot_paper_beside_ours(side: pd.DataFrame, dataset: str, metrics: Sequence[str] | None = None,
                           profile: str | None = None) -> Figure:
    """One dataset, one panel per metric: per method, our value (mean over seeds) beside the
    paper's (``side``: :func:`sprec_lib.claims.paper_beside_ours`). A method the paper lacks (our
    plain DPO) shows ours alone. Each panel has its own scale: the point is the pattern across
    methods, since our absolute values are not the paper's (a far smaller model)."""
    import seaborn as sns

    part = side[(side["dataset"] == dataset) & ((side["profile"] == profile) if profile else True)]
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(part["metric"]))
    long = part.melt(id_vars=["method", "metric"], value_vars=["ours", "paper"], var_name="source",
                     value_name="value").dropna(subset=["value"])
    methods = list(dict.fromkeys(part["method"]))
    fig, axes = _panels(len(metrics))
    for i, (ax, metric) in enumerate(zip(axes, metrics)):
        sns.barplot(data=long[long["metric"] == metric], x="method", y="value", hue="source", order=methods,
                    hue_order=["ours", "paper"], errorbar=None, ax=ax)
        ax.set_xlabel("method")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(True, axis="y", alpha=0.3)
        if i and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(f"{dataset}: ours beside the paper's (Tables 1 and 2)")
    fig.tight_layout()
    return fig


def plot_table_bars(rows: pd.DataFrame, labels: Sequence[str], metrics: Sequence[str] = ("HR@5", "DivRatio@1", "ORRatio@1"),
                    title: str = "") -> Figure:
    """Grouped bars, one panel per metric: per dataset, one bar per label in ``labels`` (the mean
    over seeds, ``rows``: :func:`sprec_lib.results.run_rows`), the seeds' range (lowest to highest)
    as a line on each bar; a bar without a line has one seed. Table 1: ``sft, dpo, sdpo, sprec``;
    Table 2: ``sprec`` and its ablations."""
    import seaborn as sns

    part = rows[rows["label"].isin(labels)]
    present = [x for x in labels if x in set(part["label"])]
    fig, axes = _panels(len(metrics), width=4.4)
    for i, (ax, metric) in enumerate(zip(axes, metrics)):
        sns.barplot(data=part, x="dataset", y=metric, hue="label", hue_order=present, errorbar=("pi", 100),
                    capsize=0.15, err_kws={"linewidth": 1.2}, ax=ax)
        ax.set_xlabel("dataset")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(True, axis="y", alpha=0.3)
        if i and ax.get_legend() is not None:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_stability"]


def plot_stability(stable: pd.DataFrame, title: str = "") -> Figure:
    """One panel per metric (:func:`sprec_lib.claims.stability`): per dataset, the effect
    (``label − base``, mean over seeds) as a bar, the seeds' spread of the difference as a black
    error bar (±1 std; 2+ seeds), and the one-run noise (±sqrt(2) x the measured run std) as a grey
    band around zero; "n=" names the seeds. An effect inside the grey band could be one run's noise.
    With ``rows_low`` / ``rows_high`` (``stability(..., row_data=...)``), an orange bar beside the
    black one: the test rows' 95% interval of the effect, which the seeds' spread does not show.
    With the columns of :func:`sprec_lib.claims.endpoint_stability` (``effect_before``), each dataset
    has two bars: the effect at the last iteration T (filled) and at T − 1 (hatched)."""
    metrics = list(dict.fromkeys(stable["metric"]))
    both = "effect_before" in stable.columns
    fig, axes = _panels(max(1, len(metrics)), width=4.4)
    for ax, metric in zip(axes, metrics):
        part = stable[stable["metric"] == metric].reset_index(drop=True)
        x = np.arange(len(part))
        bars = [("effect", "seed_spread", x - 0.2 if both else x, dict(color="#4c72b0", label="at T" if both else None))]
        if both:
            bars.append(("effect_before", "seed_spread_before", x + 0.2,
                         dict(color="white", edgecolor="#4c72b0", hatch="//", label="at T − 1")))
        for effect, spread, at, style in bars:
            ax.bar(at, part[effect], width=0.38 if both else 0.6, **style)
            ax.errorbar(at, part[effect], yerr=part[spread].fillna(0), fmt="none", ecolor="black", capsize=4,
                        label="seeds' spread (±1 std)" if effect == "effect" else None)
        if "rows_low" in part:
            at = (x - 0.2 if both else x) + 0.12
            yerr = np.clip([part["effect"] - part["rows_low"], part["rows_high"] - part["effect"]], 0, None)
            ax.errorbar(at, part["effect"], yerr=yerr, fmt="none", ecolor="#dd8452", capsize=3,
                        label="test rows' 95% interval")
        for i, r in part.iterrows():
            if not np.isnan(r["run_noise"]):
                ax.fill_between([i - 0.4, i + 0.4], -r["run_noise"], r["run_noise"], color="grey", alpha=0.3, lw=0)
            ax.annotate(f"n={int(r['seeds'])}", (i, 0), textcoords="offset points", xytext=(0, -12 if r["effect"] >= 0 else 4),
                        ha="center", fontsize=8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, part["dataset"], rotation=30)
        ax.set_ylabel(f"Δ {METRIC_LABELS.get(metric, metric)}")
        ax.grid(True, axis="y", alpha=0.3)
    if (both or "rows_low" in stable) and len(metrics):
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# HTML for the book's pages: whole tables (no truncation), the scorecard, collapsed lists

__all__ += ["Html", "html_table", "setup_box", "details", "missing_runs", "VERDICT_COLOURS", "scorecard_html"]


class Html(str):
    """A string of HTML that notebooks display as HTML (``display(x)``, or a cell's last value)."""

    def _repr_html_(self) -> str:
        return str(self)


def _esc(text) -> str:
    import html

    return html.escape(str(text), quote=True)


def html_table(frame: pd.DataFrame, index: bool = False, digits: int = 4, caption: str = "",
               wrap: Sequence[str] | None = None) -> Html:
    """``frame`` as a whole HTML table, every row, column and character (pandas' display options
    would cut long texts with "..."), in a box that scrolls sideways when the table is wider than
    the page. Short columns stay on one line; the columns in ``wrap`` (default: those with a value
    longer than 40 characters) wrap at a readable width. Floats to ``digits`` significant digits;
    missing values blank."""
    shown = frame.reset_index() if index else frame

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}g}"
        if v is None or v is pd.NA:
            return ""
        return str(v)

    cells = {c: [fmt(v) for v in shown[c]] for c in shown.columns}
    if wrap is None:
        wrap = [c for c, vs in cells.items() if max((len(v) for v in vs), default=0) > 40]
    style = {c: ("white-space:normal;min-width:14em;max-width:30em" if c in wrap else "white-space:nowrap")
             + ";vertical-align:top;text-align:left;padding:0.25em 0.5em" for c in shown.columns}
    head = "".join(f'<th style="{style[c]}">{_esc(c)}</th>' for c in shown.columns)
    body = "".join("<tr>" + "".join(f'<td style="{style[c]}">{_esc(cells[c][i])}</td>' for c in shown.columns) + "</tr>"
                   for i in range(len(shown)))
    table = f'<table class="dataframe sprec-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    top = f'<p class="sprec-caption"><b>{_esc(caption)}</b></p>' if caption else ""
    return Html(f'{top}<div class="sprec-scroll" style="overflow-x:auto;max-width:100%">{table}</div>')


def setup_box(frame: pd.DataFrame, title: str, note: str = "") -> Html:
    """A run's setup beside the paper's (:func:`sprec_lib.claims.setup_differences`) in one framed
    box: the differing settings marked in bold."""
    rows = []
    for r in frame.itertuples(index=False):
        style = ' style="font-weight:bold"' if r.differs else ""
        mark = "differs" if r.differs else "same"
        rows.append(f"<tr{style}><td>{_esc(r.setting)}</td><td>{_esc(r.ours)}</td><td>{_esc(r.paper)}</td>"
                    f"<td>{mark}</td></tr>")
    table = ('<table class="sprec-setup" style="border-collapse:collapse"><thead><tr><th>setting</th><th>ours</th>'
             "<th>paper</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    extra = f'<p style="margin:0.5em 0 0 0">{_esc(note)}</p>' if note else ""
    return Html('<div class="sprec-setup-box" style="border:1px solid #999;border-radius:6px;padding:0.6em 1em;'
                f'margin:0.5em 0;overflow-x:auto"><p style="margin:0 0 0.4em 0"><b>{_esc(title)}</b></p>'
                f"{table}{extra}</div>")


def details(summary: str, items: Sequence[str] = (), html: str = "") -> Html:
    """One collapsed line (an HTML ``<details>``): ``summary``, with ``items`` listed (or the HTML
    ``html`` shown) when opened; a plain line when there is nothing to open."""
    if not items and not html:
        return Html(f"<p>{_esc(summary)}</p>")
    body = ("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>" if items else "") + str(html)
    return Html(f'<details class="sprec-details"><summary>{_esc(summary)}</summary>{body}</details>')


def missing_runs(asked: Sequence, missing: Sequence) -> Html:
    """The runs a page asked for and did not find, as one collapsed line with their count; opened,
    one line per dataset naming them (``sprec runs missing`` prints the commands that make them)."""
    if not missing:
        return details(f"All {len(asked)} runs this page reads were found.")
    by_dataset: dict[str, list[str]] = {}
    for spec in missing:
        by_dataset.setdefault(spec.dataset, []).append(spec.name)
    items = [f"{d}: {', '.join(names)}" for d, names in by_dataset.items()]
    return details(f"{len(missing)} of {len(asked)} runs missing (click to list them; "
                   "`sprec runs missing` prints the commands that make them)", items)


# Background colours of the scorecard's cells, by verdict.
VERDICT_COLOURS = {
    "reproduced": "#b9e4c0",
    "not reproduced": "#f5b7b1",
    "inconclusive (within noise)": "#fbe7a1",
    "pending": "#d6dbe4",
    "degenerate baseline": "#d7bde2",
    "not claimed": "#ffffff",
    "not run here": "#eeeeee",
}


def scorecard_html(cells: pd.DataFrame, claims_page: str = "06_results.html", table_id: str = "sprec-scorecard") -> Html:
    """The scorecard (:func:`sprec_lib.claims.scorecard`) as an HTML table (id ``table_id``):
    one row per claim (its id and section, the statement on hover and in the list below the table),
    one cell per dataset (``td.sprec-verdict``, with ``data-claim``, ``data-dataset`` and
    ``data-verdict``), coloured by verdict (:data:`VERDICT_COLOURS`), naming the verdict and the
    seeds it rests on, and linking to the page that shows its runs; the claim links to
    ``claims_page``. A legend of the colours and the list of the claims follow."""
    datasets = list(dict.fromkeys(cells["dataset"]))
    head = "".join(f'<th style="padding:0.35em 0.4em;text-align:center">{_esc(d).replace("_", "_<wbr>")}</th>'
                   for d in datasets)
    rows, statements = [], []
    for cid, part in cells.groupby("id", sort=False):
        first = part.iloc[0]
        statement = first["claim"].split(") ", 1)[-1]
        statements.append(f"<li><b>({_esc(cid)})</b> {_esc(first['section'])}: {_esc(statement)}</li>")
        tds = []
        for r in part.set_index("dataset").reindex(datasets).reset_index().itertuples(index=False):
            colour = VERDICT_COLOURS.get(r.verdict, "#ffffff")
            attrs = (f'class="sprec-verdict" data-claim="{_esc(cid)}" data-dataset="{_esc(r.dataset)}" '
                     f'data-verdict="{_esc(r.verdict)}" style="background:{colour};text-align:center;'
                     'padding:0.3em 0.4em;border:2px solid #fff;min-width:5.5em"')
            if r.verdict == "not claimed":
                tds.append(f'<td {attrs}><span style="color:#777">—<br><small>not claimed here</small></span></td>')
            elif r.verdict == "not run here":
                tds.append(f'<td {attrs}><span style="color:#555">not run here<br><small>sweeps: MovieLens</small></span></td>')
            else:
                n = int(r.seeds)
                seeds = f"{n} seed" + ("" if n == 1 else "s")
                if r.verdict == "pending":
                    seeds = f"partly run: {seeds}" if n else "no runs"
                tds.append(f'<td {attrs}><a href="{_esc(r.page)}" style="color:#111">{_esc(r.verdict)}</a>'
                           f"<br><small>{seeds}</small></td>")
        claim = (f'<th title="{_esc(statement)}" style="text-align:left;font-weight:normal;padding:0.35em 0.5em">'
                 f'<a href="{_esc(claims_page)}"><b>({_esc(cid)})</b></a><br><small>{_esc(first["section"])}</small></th>')
        rows.append(f"<tr>{claim}{''.join(tds)}</tr>")
    legend = " ".join(f'<span style="background:{c};padding:0.1em 0.5em;border:1px solid #ccc;margin-right:0.3em;'
                      f'white-space:nowrap">{_esc(v)}</span>' for v, c in VERDICT_COLOURS.items())
    table = (f'<table id="{_esc(table_id)}" class="sprec-scorecard" style="border-collapse:collapse;font-size:0.9em">'
             f"<thead><tr><th>claim</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return Html(f'<div class="sprec-scroll" style="overflow-x:auto;max-width:100%">{table}</div>'
                f'<p style="margin-top:0.6em;line-height:2">{legend}</p>'
                f'<ul class="sprec-claim-list">{"".join(statements)}</ul>')
