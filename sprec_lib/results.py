"""Runs -> tables: one row per (method, seed), then mean +- std over seeds (the paper's Table 1 shape).

A run's headline metrics are those of its final stage (:meth:`Run.final_metrics`): SFT for ``sft``,
the DPO / S-DPO model, SPRec's last iteration. :func:`iteration_curves` gives SPRec's
per-iteration metrics (iteration 0 is the SFT model), the data of the paper's Fig. 4.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .evaluation import flat_metrics
from .runs import Run

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


def row_data_for_export(predictions: pd.DataFrame) -> dict:
    """What an export keeps of an evaluation's predictions for the paired bootstrap
    (:func:`sprec_lib.claims.paired_bootstrap`): per test row, our model's top-K item ids and the
    rank of the held-out item among them (None: a miss). Ids and ranks only: no title, no history,
    no target outside the recommendations."""
    topk = [[int(i) for i in r] for r in predictions["topk"]]
    ranks = [top.index(int(t)) if not pd.isna(t) and int(t) in top else None
             for t, top in zip(predictions["target"], topk)]
    return {"hit_rank": ranks, "topk": topk}


def export_run(run: Run, dest: str | Path) -> Path:
    """Copy a run's small result files (:meth:`Run.export`: config, manifest, log, metrics, training
    losses) to ``dest``, for git, and a popularity summary of its self-play negatives
    (:func:`negatives_popularity`).

    Checkpoints, predictions and negatives stay in the run folder (large, or derived from data
    whose terms forbid redistribution)."""
    from .runs import write_json

    dest = Path(dest)
    run.export(dest)
    label = run.final_label
    if label is not None and run.predictions_path(label).exists():  # for the paired bootstrap (sprec_lib.claims)
        write_json(row_data_for_export(pd.read_parquet(run.predictions_path(label), columns=["target", "topk"])),
                   dest / ROWS_DIR / f"{label}.json")
    if any(run.folder.glob("negatives/it*.parquet")) and Path(run.cfg.dataset).is_dir():
        from .data.sprec_format import read_sprec_folder

        table = negatives_popularity(run, read_sprec_folder(run.cfg.dataset))
        table.to_json(dest / NEGATIVES_SUMMARY, orient="records", indent=1)
    return dest


NEGATIVES_SUMMARY = "negatives_popularity.json"  # an export's summary of its self-play negatives


def negatives_table(run: Run, ds=None) -> pd.DataFrame | None:
    """:func:`negatives_popularity` of a run: read from an export's summary, else computed from the
    run's negatives with dataset ``ds``; None when neither is there."""
    path = run.folder / NEGATIVES_SUMMARY
    if path.exists():
        return pd.read_json(path, orient="records")
    if ds is not None and any(run.folder.glob("negatives/it*.parquet")):
        return negatives_popularity(run, ds)
    return None


def last_iterations_mean(run: Run, n: int = 3) -> dict:
    """SPRec's metrics averaged over its last ``n`` iterations (the points of the paper's Figs. 5
    and 6), in the nested form of a metrics file."""
    metrics = run.metrics()
    labels = sorted((k for k in metrics if k.startswith("it") and k[2:].isdigit()), key=lambda k: int(k[2:]))
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
        if label == "sft" or (label.startswith("it") and label[2:].isdigit()):
            rows.append({"iteration": 0 if label == "sft" else int(label[2:]), **flat_metrics(m)})
    return pd.DataFrame(rows).sort_values("iteration").reset_index(drop=True)


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
    (distinct titles / titles). Titles that name no catalogue item are left out.
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
                         "distinct": len(set(ids)) / len(ids)})
    return pd.DataFrame(rows, columns=["iteration", "kind", "titles", "head_share", "top3_share", "distinct"])


def compute_spent(runs: list[Run]) -> pd.DataFrame:
    """Wall-clock minutes each run spent, read from its ``log.txt``: one row per run (``dataset``,
    ``profile``, ``label``, ``seed``, ``minutes``, ``sessions``).

    The time between consecutive log lines is summed, except the gap before a line that opens a
    session (``<method> on <dataset> (...)``: a start or a resume), which is time the run was not
    running. A stage reused from the shared cache costs nothing here: it is counted in the run that
    trained it. Lines carry a date (``YYYY-MM-DD HH:MM:SS``) or, in older logs, the time alone (a
    step back in time is then read as midnight passed). These are lane minutes: one thread each,
    beside whatever else the machine ran, not CPU time."""
    import re
    from datetime import datetime, timedelta

    stamp = re.compile(r"^(?:(\d{4}-\d{2}-\d{2}) )?(\d{2}:\d{2}:\d{2}) (.*)$")
    out = []
    for run in runs:
        log = run.folder / "log.txt"
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        times, opens = [], []
        day = datetime(2000, 1, 1)
        for line in lines:
            m = stamp.match(line)
            if not m:
                continue
            date, clock, text = m.groups()
            t = datetime.fromisoformat(f"{date or day.date().isoformat()} {clock}")
            if date is None and times and t < times[-1]:
                t += timedelta(days=1)
                day += timedelta(days=1)
            times.append(t)
            opens.append(bool(re.match(r"^\S+ on \S+ \(", text)))
        seconds = sum((b - a).total_seconds() for a, b, o in zip(times, times[1:], opens[1:]) if not o)
        out.append({"dataset": Path(run.cfg.dataset).name, "profile": run.cfg.profile, "label": run.label, "seed": run.cfg.seed,
                    "minutes": seconds / 60, "sessions": max(1, sum(opens))})
    return pd.DataFrame(out, columns=["dataset", "profile", "label", "seed", "minutes", "sessions"])
