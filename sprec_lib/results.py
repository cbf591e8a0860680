"""Runs -> tables: one row per (method, seed), then mean +- std over seeds (the paper's Table 1 shape).

A run's headline metrics are those of its final stage (:meth:`Run.final_metrics`): SFT for ``sft``,
the DPO / S-DPO model, SPRec's last iteration. :func:`iteration_curves` gives SPRec's
per-iteration metrics (iteration 0 is the SFT model), the data of the paper's Fig. 4.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from .evaluation import answer_kinds, flat_metrics
from .runs import CONFIG, Run, read_json, recipe_order

TABLE_COLUMNS = ["HR@5", "NDCG@5", "DivRatio@1", "DivRatio@5", "ORRatio@1", "ORRatio@5", "MGU@1", "MGU@5", "valid_ratio"]


def finished_runs(root: str | Path) -> list[Run]:
    """Every finished run folder below ``root`` (:func:`sprec_lib.runs.finished_runs`)."""
    from .runs import finished_runs as found

    return found(root)


def final_metrics(run: Run) -> dict:
    """The metrics of a finished run's final stage (:meth:`Run.final_metrics`)."""
    return run.final_metrics()


def run_rows(runs: list[Run], metrics=final_metrics) -> pd.DataFrame:
    """One row per run: dataset, profile, method, label (method and variant), seed and the metrics
    ``metrics(run)`` returns (default: the final stage's)."""
    rows = []
    for run in runs:
        m = metrics(run)
        rows.append({"dataset": Path(run.cfg.dataset).name, "profile": run.cfg.profile, "method": run.cfg.method,
                     "label": run.label, "seed": run.cfg.seed, "run": str(run.folder), "rows": m.get("rows"),
                     **flat_metrics(m)})
    return pd.DataFrame(rows)


def summary_table(rows: pd.DataFrame, columns: list[str] = TABLE_COLUMNS, order=None,
                  by: str = "method") -> pd.DataFrame:
    """Mean and std (ddof 1; 0 for one seed) over seeds per (dataset, profile, ``by``), and the seed
    count; ``by="label"`` keeps variants apart. Rows follow ``order`` (default: the registry's
    table order, :func:`sprec_lib.methods.names`), then the others sorted."""
    from . import methods

    order = methods.names() if order is None else order
    keys = ["dataset", "profile", by]
    grouped = rows.groupby(keys)[columns]
    table = grouped.mean().join(grouped.std(ddof=1).fillna(0.0).add_suffix(" std"))
    table["seeds"] = rows.groupby(keys)["seed"].nunique()
    present = list(dict.fromkeys(table.index.get_level_values(by)))
    names = [m for m in order if m in present] + sorted(m for m in present if m not in order)
    return table.reindex(names, level=by)


def table_means(table: pd.DataFrame, columns: list[str] = TABLE_COLUMNS) -> dict:
    """``{method or label: {metric: mean}}`` of a :func:`summary_table` of one dataset and profile."""
    return {name: row[columns].to_dict() for name, row in table.droplevel(["dataset", "profile"]).iterrows()}


def mean_std_text(mean: float, std: float, seeds: int, digits: int = 4, sign: str = "") -> str:
    """``mean ± std``, or the mean alone for one seed (a spread over one value is undefined, and
    ``± 0`` would read as no noise). ``sign="+"`` prints the mean's sign (differences)."""
    text = f"{mean:{sign}.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if seeds > 1 else text


def format_mean_std(table: pd.DataFrame, columns: list[str] = TABLE_COLUMNS, digits: int = 4) -> pd.DataFrame:
    """:func:`mean_std_text` strings for a printed or rendered table."""
    out = pd.DataFrame(index=table.index)
    for c in columns:
        out[c] = [mean_std_text(m, s, n, digits) for m, s, n in zip(table[c], table[f"{c} std"], table["seeds"])]
    out["seeds"] = table["seeds"]
    return out


ROWS_DIR = "rows"  # an export's per-row data: rows/<evaluation label>.json (sprec_lib.claims.load_row_data)


def row_data_for_export(predictions: pd.DataFrame, catalogue=None) -> dict:
    """What an export keeps of an evaluation's predictions for the paired bootstrap
    (:func:`sprec_lib.claims.paired_bootstrap`): per test row, our model's top-K item ids and the
    rank of the held-out item among them (None: a miss); where the predictions say it (``valid``),
    whether the answer named a catalogue title rather than being grounded to its nearest ones; and
    with the dataset's ``catalogue`` and the parsed titles, each answer's kind
    (:func:`sprec_lib.evaluation.answer_kinds`), both for :func:`sprec_lib.pretrained.orratio_by_answer`.
    Ids, ranks, flags and kinds only: no title, no history, no target outside the recommendations."""
    topk = [[int(i) for i in r] for r in predictions["topk"]]
    ranks = [top.index(int(t)) if not pd.isna(t) and int(t) in top else None
             for t, top in zip(predictions["target"], topk)]
    out = {"hit_rank": ranks, "topk": topk}
    if "valid" in predictions:
        out["valid"] = [bool(v) for v in predictions["valid"]]
    if catalogue is not None and "title" in predictions:
        titles = [None if t is None or (isinstance(t, float) and pd.isna(t)) else str(t) for t in predictions["title"]]
        out["answer"] = answer_kinds(titles, [top[0] if top else None for top in topk], catalogue)
    return out


def export_run(run: Run, dest: str | Path) -> Path:
    """Copy a run's small result files (:meth:`Run.export`: config, manifest, log, metrics, training
    losses) to ``dest``, for git, a popularity summary of its self-play negatives
    (:func:`negatives_popularity`) and, for a run that iterates, how concentrated its answers are
    (:func:`answer_modes`).

    Checkpoints, predictions and negatives stay in the run folder (large, or derived from data
    whose terms forbid redistribution)."""
    from .runs import write_json

    from .data.sprec_format import read_sprec_folder

    dest = Path(dest)
    run.export(dest)
    ds = read_sprec_folder(run.cfg.dataset) if Path(run.cfg.dataset).is_dir() else None
    # per-row data for the paired bootstrap (sprec_lib.claims): the final evaluation's, and the SFT
    # start's of a run that began from one (claims pair a method with the model it started from)
    final = run.final_label
    for label in dict.fromkeys([final, "sft" if run.method != "sft" and final != "sft" else None]):
        if label is not None and run.predictions_path(label).exists():
            predictions = pd.read_parquet(run.predictions_path(label))
            write_json(row_data_for_export(predictions, None if ds is None else ds.catalogue),
                       dest / ROWS_DIR / f"{label}.json")
    if any(run.folder.glob("negatives/it*.parquet")) and ds is not None:
        table = negatives_popularity(run, ds)
        table.to_json(dest / NEGATIVES_SUMMARY, orient="records", indent=1)
    if any(run.folder.glob("predictions/it*.parquet")):
        answer_modes(run).to_json(dest / ANSWER_MODES, orient="records", indent=1)
    return dest


def relabel_run(folder: str | Path, dest: str | Path, variant: str) -> Run:
    """Move a finished run (local or exported) to ``dest`` under another variant name: its
    ``config.json`` spec gets the new variant and label, and a line in its log says where it came
    from; everything else (config, metrics, losses, rows) is moved as it is. For a setting that
    became the default (``sprec-T5`` → ``sprec`` when the tiny profile went to T = 5) and for the
    run it replaces (``sprec`` → ``sprec-T3``, to ``results/investigations``). Refuses an existing
    ``dest``, and a ``dest`` named for another variant than ``variant``."""
    import shutil

    from .runs import CONFIG, LOG, _label, _variant_from_name, read_json, write_json

    folder, dest = Path(folder), Path(dest)
    run = Run(folder)
    if not run.is_finished:
        raise ValueError(f"{folder}: the run has not finished; relabel finished runs only")
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists; move it away first")
    if _variant_from_name(dest.name, run.method) != variant:
        raise ValueError(f"{dest}: a folder name that says variant {_variant_from_name(dest.name, run.method)!r}, "
                         f"not {variant!r} (<method>[-<variant>]-seed<S>)")
    old = run.label
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(dest))
    doc = read_json(dest / CONFIG)
    if doc.get("spec"):  # a run made before specs were saved has none: its folder name says its variant
        doc["spec"] = {**doc["spec"], "variant": variant, "label": _label(run.method, variant)}
        write_json(doc, dest / CONFIG)
    with open(dest / LOG, "a") as f:
        f.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} relabelled: {old} ({folder}) -> {_label(run.method, variant)} ({dest})\n")
    return Run(dest)


NEGATIVES_SUMMARY = "negatives_popularity.json"  # an export's summary of its self-play negatives


def _kept_or_computed(run: Run, name: str, compute) -> pd.DataFrame | None:
    """An export's summary table ``name``, else ``compute()`` (None when it cannot)."""
    path = run.folder / name
    return pd.read_json(path, orient="records") if path.exists() else compute()


def negatives_table(run: Run, ds=None) -> pd.DataFrame | None:
    """:func:`negatives_popularity` of a run: read from an export's summary, else computed from the
    run's negatives with dataset ``ds``; None when neither is there."""
    can = ds is not None and any(run.folder.glob("negatives/it*.parquet"))
    return _kept_or_computed(run, NEGATIVES_SUMMARY, lambda: negatives_popularity(run, ds) if can else None)


def _iteration_of(label: str) -> int | None:
    """0 for the SFT start's evaluation (``sft``), k for iteration k's (``itk``), else None."""
    return 0 if label == "sft" else int(label[2:]) if label.startswith("it") and label[2:].isdigit() else None


def last_iterations_mean(run: Run, n: int = 3) -> dict:
    """SPRec's metrics averaged over its last ``n`` iterations (the points of the paper's Figs. 5
    and 6), in the nested form of a metrics file."""
    metrics = run.metrics()
    labels = sorted((k for k in metrics if (_iteration_of(k) or 0) > 0), key=_iteration_of)
    if len(labels) < n:
        raise ValueError(f"{run.folder}: {len(labels)} iterations evaluated, {n} needed")
    chosen = [metrics[k] for k in labels[-n:]]

    def mean(values):
        if isinstance(values[0], dict):
            return {k: mean([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
        if isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            return sum(values) / len(values)
        return values[0]

    return mean(chosen)


def genre_gu(runs: list[Run], k: int = 1) -> pd.DataFrame:
    """GU@k per genre (rows) and method or variant (columns), mean over seeds: the paper's Fig. 3."""
    rows = []
    for run in runs:
        for genre, gu in (final_metrics(run)[f"@{k}"]["GU"] or {}).items():  # None: no genres
            rows.append({"label": run.label, "seed": run.cfg.seed, "genre": genre, "GU": gu})
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="genre", columns="label", values="GU", aggfunc="mean", sort=False)
    return table


def curves(runs: list[Run]) -> pd.DataFrame:
    """:func:`iteration_curves` of every SPRec run, stacked, with its label and seed."""
    frames = []
    for run in runs:
        c = iteration_curves(run)
        c.insert(0, "seed", run.cfg.seed)
        c.insert(0, "label", run.label)
        frames.append(c)
    return pd.concat(frames, ignore_index=True)


def iteration_curves(run: Run) -> pd.DataFrame:
    """SPRec's metrics per iteration: 0 (the SFT model), 1, 2, ... (the paper's Fig. 4)."""
    metrics = run.metrics()
    rows = []
    for label, m in metrics.items():
        if (iteration := _iteration_of(label)) is not None:
            rows.append({"iteration": iteration, **flat_metrics(m)})
    return pd.DataFrame(rows).sort_values("iteration").reset_index(drop=True)


def step_curves(runs: list[Run]) -> pd.DataFrame:
    """SPRec's metrics step by step, for the runs evaluated after each SFT step too
    (``sprec.eval_sft_steps``; the others are left out): ``iteration`` 0 is the SFT model, t − 0.5
    the model after iteration t's SFT step, t the model that ends iteration t (after its DPO step).
    Columns: label, seed, iteration, step (``start``, ``sft step``, ``end``) and the metrics."""
    rows = []
    for run in runs:
        metrics = run.metrics()
        if not any(re.fullmatch(r"it\d+-sft", label) for label in metrics):
            continue
        for label, m in metrics.items():
            end, sft = re.fullmatch(r"it(\d+)", label), re.fullmatch(r"it(\d+)-sft", label)
            if label == "sft":
                at, step = 0.0, "start"
            elif end:
                at, step = float(end[1]), "end"
            elif sft:
                at, step = int(sft[1]) - 0.5, "sft step"
            else:
                continue
            rows.append({"label": run.label, "seed": run.cfg.seed, "iteration": at, "step": step, **flat_metrics(m)})
    if not rows:
        return pd.DataFrame(columns=["label", "seed", "iteration", "step"])
    return pd.DataFrame(rows).sort_values(["label", "seed", "iteration"]).reset_index(drop=True)


def step_changes(steps: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """What each step of each iteration did, from :func:`step_curves`: per (label, seed, iteration
    t, metric), ``sft_step`` = the value after t's SFT step − the value that ended t − 1, and
    ``dpo_step`` = the value that ends t − the value after its SFT step. Which step makes the swing
    of :func:`alternation`: an SFT step that undoes the last DPO step, or DPO steps that push by
    turns harder and softer."""
    rows = []
    for (label, seed), run in steps.groupby(["label", "seed"], sort=False):
        at = run.set_index("iteration")
        for t in sorted(i for i in at.index if float(i).is_integer() and i >= 1):
            if t - 0.5 not in at.index or t - 1 not in at.index:
                continue
            for metric in metrics:
                if metric in at.columns:
                    before, mid, after = at.loc[t - 1, metric], at.loc[t - 0.5, metric], at.loc[t, metric]
                    rows.append({"label": label, "seed": seed, "iteration": int(t), "metric": metric,
                                 "sft_step": mid - before, "dpo_step": after - mid})
    return pd.DataFrame(rows, columns=["label", "seed", "iteration", "metric", "sft_step", "dpo_step"])


def alternation(curves: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """How often each run's per-iteration curve turns, per (label, seed, metric) of :func:`curves`.

    The steps are the changes from one iteration to the next, from iteration 0 (the SFT model) to
    T; a *turn* is two consecutive steps of opposite sign (a zero step turns nothing), so a curve
    that goes up and down in turn turns T − 1 times, a monotone one never. The theorem chapter's
    Result 3 predicts such period-2 swings for the exact self-play iteration at β = 0.1; a run's
    last iteration then lands on one phase of the swing, which the mean over odd and over even
    iterations (both ≥ 1; ``odd_mean``, ``even_mean``) and the last two values show. Columns:
    label, seed, metric, iterations (T), turns, possible (T − 1), odd_mean, even_mean, before_last
    (the value at T − 1), last (at T)."""
    rows = []
    for (label, seed), run in curves.groupby(["label", "seed"], sort=False):
        run = run.sort_values("iteration")
        for metric in metrics:
            if metric not in run.columns:
                continue
            points = run[["iteration", metric]].dropna()
            values, iterations = points[metric].tolist(), points["iteration"].tolist()
            steps = [b - a for a, b in zip(values, values[1:])]
            turns = sum(1 for a, b in zip(steps, steps[1:]) if a * b < 0)
            odd = [v for i, v in zip(iterations, values) if i >= 1 and i % 2 == 1]
            even = [v for i, v in zip(iterations, values) if i >= 2 and i % 2 == 0]
            rows.append({"label": label, "seed": seed, "metric": metric, "iterations": int(max(iterations, default=0)),
                         "turns": turns, "possible": max(len(steps) - 1, 0),
                         "odd_mean": sum(odd) / len(odd) if odd else float("nan"),
                         "even_mean": sum(even) / len(even) if even else float("nan"),
                         "before_last": values[-2] if len(values) > 1 else float("nan"),
                         "last": values[-1] if values else float("nan")})
    return pd.DataFrame(rows, columns=["label", "seed", "metric", "iterations", "turns", "possible", "odd_mean",
                                       "even_mean", "before_last", "last"])


def alternation_summary(swing: pd.DataFrame, by: list[str] = ("metric",)) -> pd.DataFrame:
    """:func:`alternation`'s rows pooled over runs, per ``by`` (the training pages: per metric; the
    pretrained-LLM page: per label and metric): ``runs``, ``turns`` and ``possible`` summed (so
    ``turns/possible`` is the share of chances the curves took), the phase means and the last two
    values averaged over the runs."""
    return swing.groupby(list(by), sort=False).agg(
        runs=("seed", "size"), turns=("turns", "sum"), possible=("possible", "sum"), odd_mean=("odd_mean", "mean"),
        even_mean=("even_mean", "mean"), before_last=("before_last", "mean"), last=("last", "mean"))


def paired_differences(rows: pd.DataFrame, base: str = "sft", columns: list[str] = TABLE_COLUMNS,
                       by: str = "label") -> pd.DataFrame:
    """Per (label, metric): the difference label − ``base`` on the same dataset, profile and seed.

    Pairing by seed cancels what the runs share (pretraining, SFT). Columns: ``mean``, ``std``
    (ddof 1; 0 for one seed), ``seeds``, ``sign`` (+1 / −1 when every seed's difference is
    positive / negative, else 0) and ``text`` (``+0.0123 ± 0.0045``; the mean alone for one seed)."""
    keys = ["dataset", "profile", "seed"]
    if rows.empty or by not in rows.columns:
        return pd.DataFrame(columns=["label", "metric", "mean", "std", "seeds", "sign", "text"])
    columns = [c for c in columns if c in rows.columns]
    base_rows = rows[rows[by] == base].set_index(keys)[columns]
    out = []
    for label, part in rows[rows[by] != base].groupby(by, sort=False):
        diff = part.set_index(keys)[columns] - base_rows
        for metric in columns:
            v = diff[metric].dropna()
            if v.empty:
                continue
            mean, std = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            sign = 1 if (v > 0).all() else -1 if (v < 0).all() else 0
            out.append({"label": label, "metric": metric, "mean": mean, "std": std, "seeds": len(v), "sign": sign,
                        "text": mean_std_text(mean, std, len(v), sign="+")})
    return pd.DataFrame(out, columns=["label", "metric", "mean", "std", "seeds", "sign", "text"])


def sweep_rows(pairs: list[tuple], setting: str, values_by_variant: dict, last: int = 3) -> pd.DataFrame:
    """One row per run of a sweep: :func:`run_rows` on the mean of its last ``last`` iterations
    (:func:`last_iterations_mean`), with the swept ``setting`` as a column, read from the run's
    variant through ``values_by_variant``. ``pairs``: (spec, run), as ``experiments.obtain_all``
    returns them."""
    rows = run_rows([run for _, run in pairs], metrics=lambda run: last_iterations_mean(run, last))
    if len(rows):
        rows[setting] = [values_by_variant[spec.variant] for spec, _ in pairs]
    return rows


def negatives_popularity(run: Run, ds, head: float = 0.1) -> pd.DataFrame:
    """How popular SPRec's negatives are, iteration by iteration: the mechanism of section 4.2.

    Popularity is an item's count as a target of the training split; the *head* is the ``head``
    share of catalogue items most often a target (ties broken by id). One row per iteration and
    kind (``positive``: the rows' targets; ``self`` / ``random``: the negatives of that source):
    ``head_share`` (share of the titles in the head; a uniform draw over the catalogue scores
    ``head``), ``top3_share`` (share taken by the three most frequent titles) and ``distinct``
    (distinct titles / titles), over the titles that name a catalogue item; ``catalogue_share``:
    the share of the kind's titles that do (a self-play negative may name no title, e.g. a title
    with a wrong year: the model's own answers, as they were).
    """
    counts = ds.target_popularity("train")
    ranked = sorted(ds.catalogue.id_of.values(), key=lambda i: (-counts.get(i, 0), i))
    head_ids = set(ranked[: max(1, round(head * len(ranked)))])
    rows = []
    for path in sorted(run.folder.glob("negatives/it*.parquet"), key=lambda p: int(p.stem[2:])):
        negs = pd.read_parquet(path)
        groups = {"positive": list(negs["positive"])}
        for source, part in negs.groupby("source"):
            groups[source] = [t for ts in part["negatives"] for t in ts]
        for kind, titles in groups.items():
            ids = [ds.catalogue.id_of[t] for t in titles if t in ds.catalogue.id_of]
            if not ids:
                continue
            top3 = sum(c for _, c in pd.Series(ids).value_counts().head(3).items())
            rows.append({"iteration": int(path.stem[2:]), "kind": kind, "titles": len(ids),
                         "head_share": sum(i in head_ids for i in ids) / len(ids), "top3_share": top3 / len(ids),
                         "distinct": len(set(ids)) / len(ids), "catalogue_share": len(ids) / len(titles)})
    return pd.DataFrame(rows, columns=["iteration", "kind", "titles", "head_share", "top3_share", "distinct",
                                       "catalogue_share"])


ANSWER_MODES = "answer_modes.json"  # an export's summary of its favourite answers, per evaluation


def answer_modes(run: Run, top: int = 5) -> pd.DataFrame:
    """How concentrated a run's test answers are on a few favourite answers, evaluation by
    evaluation (0: the SFT start, k: iteration k), and whether those favourites name a catalogue
    title. An answer is the parsed title of a generation, as written (a wrong year makes another
    answer); rows with no title parsed are no answer. One row per evaluation: ``top1_share`` (the
    share of the test rows given the most frequent answer), ``top1_names_title`` (whether that
    answer is a catalogue title), ``top_share`` (the ``top`` most frequent answers' share),
    ``top_valid`` and ``rest_valid`` (the share of the rows naming a catalogue title among the rows
    given one of those answers, and among the others; NaN when there are none),
    ``previous_top1_share`` and ``earlier_top1_share`` (the share now given to the favourite of the
    evaluation before, and of the one before that: does a favourite that self-play pushed down come
    back?; NaN where there is none) and ``valid_ratio``. Numbers only: no title is kept."""
    rows, before = [], []  # the favourites of the evaluations so far, the latest last
    labels = sorted((i, label) for label in run.labels if (i := _iteration_of(label)) is not None)
    for iteration, label in labels:
        path = run.predictions_path(label)
        if not path.exists():
            continue
        pred = pd.read_parquet(path, columns=["title", "valid"])
        n = len(pred)
        # most frequent first, ties in the titles' order (repeatable)
        counts = pred["title"].dropna().value_counts().sort_index().sort_values(ascending=False, kind="stable")
        favourites = list(counts.index[:top])
        in_top = pred["title"].isin(favourites)
        mean = lambda v: float(v.mean()) if len(v) else float("nan")  # noqa: E731
        rows.append({
            "iteration": iteration, "rows": n,
            "top1_share": float(counts.iloc[0]) / n if len(counts) else 0.0,
            "top1_names_title": bool(pred.loc[pred["title"] == favourites[0], "valid"].all()) if favourites else False,
            "top_share": float(in_top.mean()), "top_valid": mean(pred.loc[in_top, "valid"]),
            "rest_valid": mean(pred.loc[~in_top, "valid"]),
            **{name: float((pred["title"] == before[-back]).mean()) if len(before) >= back else float("nan")
               for back, name in ((1, "previous_top1_share"), (2, "earlier_top1_share"))},
            "valid_ratio": float(pred["valid"].mean())})
        before.append(favourites[0] if favourites else None)
    return pd.DataFrame(rows, columns=["iteration", "rows", "top1_share", "top1_names_title", "top_share", "top_valid",
                                       "rest_valid", "previous_top1_share", "earlier_top1_share", "valid_ratio"])


def answer_modes_table(run: Run) -> pd.DataFrame | None:
    """:func:`answer_modes` of a run: read from an export's summary, else computed from the run's
    predictions; None when neither is there (an export made before 2026-12-05)."""
    can = any(run.folder.glob("predictions/it*.parquet"))
    return _kept_or_computed(run, ANSWER_MODES, lambda: answer_modes(run) if can else None)


def favourite_answers(pairs: list) -> pd.DataFrame:
    """Per iterating run of ``pairs`` ((spec, run); SPRec and its variants), the means over its
    iterations 1..T of :func:`answer_modes`' ``top1_share``, ``previous_top1_share`` and
    ``earlier_top1_share``: how much of the test answers the favourite holds, and how much the
    favourites of one and two iterations before still get. A run with no summary is left out."""
    rows = []
    for spec, run in pairs:
        table = answer_modes_table(run)
        if table is None or not len(table) or not (table["iteration"] > 0).any():
            continue
        later = table[table["iteration"] > 0]
        rows.append({"dataset": spec.dataset, "label": spec.label, "seed": spec.seed, "iterations": len(later),
                     **{c: float(later[c].mean()) for c in ("top1_share", "previous_top1_share", "earlier_top1_share")}})
    return pd.DataFrame(rows, columns=["dataset", "label", "seed", "iterations", "top1_share", "previous_top1_share",
                                       "earlier_top1_share"])


# -- compute spent, from the run logs ------------------------------------------------------------
# A run's log.txt (:meth:`sprec_lib.runs.Run.log`): one line per event, ``YYYY-MM-DD HH:MM:SS <message>``,
# or ``HH:MM:SS <message>`` in logs written before the date was added.
LOG_STAMP = re.compile(r"^(?:(\d{4}-\d{2}-\d{2}) )?(\d{2}:\d{2}:\d{2})(?: (.*))?$")
BROKEN_STAMP = re.compile(r"^(?:\d{4}-\d|\d{1,2}:\d)")  # starts like a stamp, does not parse as one
START_LINE = re.compile(r"^(\S+) on (\S+) \((\S+) profile, seed (\d+)[;)]")  # a process (re)starts the run
STAGE_OPENS = re.compile(r"^stage (\S+): (?:starting from|resuming from|training) ")
STAGE_DONE = re.compile(r"^stage (\S+) done(?: |$)")
STAGE_REUSED = re.compile(r"^stage (\S+): reused ")
FINISHED_LINE = "finished: "
STAGE_COLUMN = "stage {}"  # compute_spent's column of a stage's hours


class LogFormatError(ValueError):
    """A run log line that :func:`run_compute` cannot read: the file, the line number, what was expected."""


def _stamped_lines(path: Path) -> list[tuple[int, datetime, bool, str]]:
    """The timestamped lines of a run log: (line number, time, whether the line was dated, message).

    A line with no stamp is skipped when it is blank, continues the message above (a message with a
    newline in it: an exception's text) or is a note appended by hand (``ml-1m-tiny/sprec-seed0``
    says after a blank line that it was re-evaluated); one that starts like a stamp and does not
    parse is an error, not a note. An undated time earlier than the line above is the next day."""
    out: list[tuple[int, datetime, bool, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = LOG_STAMP.match(line)
        if m is None:
            if BROKEN_STAMP.match(line):
                raise LogFormatError(f"{path}, line {n}: expected 'YYYY-MM-DD HH:MM:SS <message>' or "
                                     f"'HH:MM:SS <message>', got {line!r}")
            if not out and line.strip():
                raise LogFormatError(f"{path}, line {n}: expected a timestamped line (the run's start line "
                                     f"'<label> on <dataset> (<profile> profile, seed <S>...)'), got {line!r}")
            continue
        date, clock, text = m.groups()
        prev = out[-1][1] if out else None
        try:
            t = datetime.fromisoformat(f"{date or (prev or datetime(2000, 1, 1)).date().isoformat()} {clock}")
        except ValueError as e:
            raise LogFormatError(f"{path}, line {n}: expected a valid date and time, got {line!r} ({e})") from None
        if prev is not None and t < prev:
            if date is not None:
                raise LogFormatError(f"{path}, line {n}: expected a time no earlier than line {out[-1][0]}'s "
                                     f"({prev}), got {line!r}")
            t += timedelta(days=1)
        out.append((n, t, date is not None, (text or "").rstrip()))
    return out


def run_compute(folder: str | Path) -> dict:
    """The wall-clock seconds one run spent, read from its ``log.txt``.

    Each start line (``<label> on <dataset> (<profile> profile, seed <S>...)``) opens a process
    segment, which ends at its last line, or at its ``finished:`` line: lines after that and before
    the next start come from other commands (``sprec eval``, a relabelling note), whose start is not
    logged. The gap between a killed segment's last line and the next start is not compute and is
    not counted; neither is the time between that last line and the kill, which the log does not
    show, nor the cost of the after-finish lines: every number here is a lower bound.
    ``at_most_seconds`` bounds the processes' time from above: a killed segment ran until the next
    start at the latest (one process at a time holds a run folder); an undated log's gap is read as
    less than a day.

    Returns ``seconds`` (the segments summed), ``stage_seconds`` (per stage: from ``stage X:
    starting from`` / ``resuming from`` / ``training`` to ``stage X done``, summed over segments; a
    stage still open when its segment ends counts up to the segment's last line and is listed in
    ``interrupted``; stages run one after another, so a stage that opens closes one left open),
    ``restarts`` (start lines after the first: resumes, and re-evaluations after the run finished),
    ``reused`` (stages copied from the shared stage cache: 0 seconds here, their cost was paid by
    the run that trained them) and ``after_finish`` (lines logged after a ``finished:`` line by
    another command, not counted). Raises :class:`LogFormatError` naming the file and line where
    the log is not what this expects."""
    folder = Path(folder)
    path = folder / "log.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no log.txt")
    config = json.loads((folder / "config.json").read_text())["config"] if (folder / "config.json").is_file() else None
    lines = _stamped_lines(path)
    if not lines:
        raise LogFormatError(f"{path}: expected timestamped lines, found none")
    seconds, at_most, stages, opened = 0.0, 0.0, {}, {}
    reused, interrupted, starts, after_finish = [], [], 0, 0
    segment = last = None  # the segment's first and last times; None: none open (before the first, after finished)
    dated = False

    def close_segment(killed_before: datetime | None = None) -> None:
        nonlocal seconds, at_most, segment
        seconds += (last - segment).total_seconds()
        at_most += ((killed_before or last) - segment).total_seconds()
        for stage, since in opened.items():
            stages[stage] = stages.get(stage, 0.0) + (last - since).total_seconds()
            interrupted.append(stage)
        opened.clear()
        segment = None

    for n, t, is_dated, text in lines:
        start = START_LINE.match(text)
        if start:
            if config is not None and (start[3], int(start[4])) != (config["profile"], config["seed"]):
                raise LogFormatError(f"{path}, line {n}: expected the start line of this run ({config['profile']} "
                                     f"profile, seed {config['seed']}: its config.json), got {text!r}")
            if segment is not None:
                close_segment(killed_before=t)
            segment = last = t
            dated, starts = is_dated, starts + 1
            continue
        if starts == 0:
            raise LogFormatError(f"{path}, line {n}: expected the run's start line '<label> on <dataset> "
                                 f"(<profile> profile, seed <S>...)' first, got {text!r}")
        if segment is None:
            after_finish += 1
            continue
        if is_dated != dated:
            raise LogFormatError(f"{path}, line {n}: expected {'dated' if dated else 'undated'} lines within one "
                                 f"process (as its start line), got {text!r}")
        last = t
        if m := STAGE_DONE.match(text):
            since = opened.pop(m[1], t)  # no open line (a pass-through stage): it took no time
            stages[m[1]] = stages.get(m[1], 0.0) + (t - since).total_seconds()
        elif m := STAGE_OPENS.match(text):
            if m[1] not in opened:
                for stage, since in list(opened.items()):
                    stages[stage] = stages.get(stage, 0.0) + (t - since).total_seconds()
                    interrupted.append(stage)
                opened.clear()
                opened[m[1]] = t
        elif m := STAGE_REUSED.match(text):
            reused.append(m[1])
            stages.setdefault(m[1], 0.0)
        elif text.startswith(FINISHED_LINE):
            close_segment()
    if segment is not None:
        close_segment()
    return {"seconds": seconds, "at_most_seconds": at_most, "stage_seconds": stages, "restarts": starts - 1,
            "reused": reused, "interrupted": list(dict.fromkeys(interrupted)), "after_finish": after_finish}


def started_on(folder: str | Path) -> str:
    """The CPU that started the run in ``folder``, from its ``config.json``: torch's capability
    string (``AVX512``, ``AVX2``, ...), followed by the CPU's model name where the run recorded it
    (``AVX512 (AMD EPYC)``; runs started since 2026-12-06), since two CPUs with one capability
    string can train different models (:data:`sprec_lib.cpu.KERNEL_FLAGS`); "unrecorded" when it
    says neither."""
    path = Path(folder) / CONFIG
    doc = read_json(path) if path.exists() else {}
    machine = doc.get("machine") or {}
    capability, model = machine.get("cpu_capability") or "unrecorded", machine.get("cpu_model")
    return f"{capability} ({model})" if model else capability


def cpus_text(spent: pd.DataFrame) -> str:
    """How many of :func:`compute_spent`'s runs each CPU started: "32 on AVX512, 33 not recorded";
    the most first, ties in the order the runs come."""
    counts = spent["cpu"].value_counts(sort=False).sort_values(ascending=False, kind="stable")
    return ", ".join(f"{n} on {cpu}" if cpu != "unrecorded" else f"{n} not recorded" for cpu, n in counts.items())


def compute_spent(runs: str | Path | list[Run]) -> pd.DataFrame:
    """Lane-hours of every finished run below a results folder (or of a list of runs), from their
    logs (:func:`run_compute`): one row per run with ``dataset``, ``profile``, ``label``, ``method``,
    ``seed``, ``hours``, ``hours_at_most``, ``restarts``, ``reused`` and ``interrupted`` (stage
    names, comma-separated), ``after_finish``, ``cpu`` (:func:`started_on`: hours on different CPUs
    do not compare, e.g. a tiny pretraining step took 9.0 s on the AVX2 machine of 2026-12-03 against
    3.7 s on the AVX512 one of the first runs), ``run`` (its folder) and one ``stage <name>`` column
    of hours per stage (0 for a reused stage: its cost is in the run that trained it; empty for a
    stage the run does not have).

    Lower bounds (see :func:`run_compute`), and lane time: one thread each, beside whatever else
    the machine ran, not CPU time. An SFT-started method looks cheaper than it is: its pretraining
    and SFT were paid by the run that trained them."""
    if isinstance(runs, (str, Path)):
        runs = finished_runs(runs)
    rows, stage_names = [], set()
    for run in runs:
        c = run_compute(run.folder)
        stage_names |= set(c["stage_seconds"])
        rows.append({"dataset": Path(run.cfg.dataset).name, "profile": run.cfg.profile, "label": run.label,
                     "method": run.cfg.method, "seed": run.cfg.seed, "hours": c["seconds"] / 3600,
                     "hours_at_most": c["at_most_seconds"] / 3600,
                     "restarts": c["restarts"], "reused": ", ".join(c["reused"]),
                     "interrupted": ", ".join(c["interrupted"]), "after_finish": c["after_finish"],
                     "cpu": started_on(run.folder),
                     "run": str(run.folder),
                     **{STAGE_COLUMN.format(s): v / 3600 for s, v in c["stage_seconds"].items()}})
    columns = ["dataset", "profile", "label", "method", "seed", "hours", "hours_at_most", "restarts", "reused",
               "interrupted", "after_finish", "cpu", "run"]
    return pd.DataFrame(rows, columns=columns + [STAGE_COLUMN.format(s) for s in sorted(stage_names, key=recipe_order)])


def compute_table(spent: pd.DataFrame, by: str = "label", values: str = "hours") -> pd.DataFrame:
    """Lane-hours (``values``: a :func:`compute_spent` column, ``hours_at_most`` for the upper
    bounds) per (dataset, profile) (rows) and ``by`` (columns: ``label`` keeps variants apart,
    ``method`` adds them up), summed over seeds, with a ``total`` column and a ``total`` row; empty
    where there is no run. Columns follow the registry's table order (:func:`sprec_lib.methods.names`),
    each method's variants after it."""
    from . import methods

    table = spent.pivot_table(index=["dataset", "profile"], columns=by, values=values, aggfunc="sum")
    order = {m: i for i, m in enumerate(methods.names())}
    method_of = dict(zip(spent[by], spent["method"]))
    m = method_of.get
    table = table[sorted(table.columns, key=lambda c: (order.get(m(c), len(order)), m(c), c != m(c), c))]
    table.columns.name = by
    table["total"] = table.sum(axis=1)
    table.loc[("total", ""), :] = table.sum(axis=0, min_count=1)
    return table
