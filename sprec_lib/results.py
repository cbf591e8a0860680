"""Runs -> tables: one row per (method, seed), then mean +- std over seeds (the paper's Table 1 shape).

A run's headline metrics are those of its final stage (``FINISHED`` names it): SFT for ``sft``,
the DPO / S-DPO model, SPRec's last iteration. :func:`iteration_curves` gives SPRec's
per-iteration metrics (iteration 0 is the SFT model), the data of the paper's Fig. 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluation import flat_metrics
from .runs import Run

TABLE_COLUMNS = ["HR@5", "NDCG@5", "DivRatio@1", "DivRatio@5", "ORRatio@1", "ORRatio@5", "MGU@1", "MGU@5", "valid_ratio"]


def finished_runs(root: str | Path) -> list[Run]:
    """Every finished run folder below ``root``."""
    return [Run(p.parent) for p in sorted(Path(root).rglob("FINISHED"))]


def final_metrics(run: Run) -> dict:
    """The metrics of a finished run's final stage."""
    final = json.loads((run.folder / "FINISHED").read_text())["final_stage"]
    metrics = run.metrics()
    # The final stage's own evaluation: labelled by the stage, or by the iteration for SPRec
    # (other labels, e.g. "sft-constrained-5", are re-evaluations with other settings).
    return next(m for k, m in metrics.items() if m.get("stage") == final and (k == final or k.startswith("it")))


def _label(run: Run) -> str:
    """The run's method and variant from its folder name (``sprec-nosft-seed0`` -> ``sprec-nosft``)."""
    name = run.folder.name
    return name.rsplit("-seed", 1)[0] if "-seed" in name else run.cfg.method


def run_rows(runs: list[Run], metrics=final_metrics) -> pd.DataFrame:
    """One row per run: dataset, profile, method, label (method and variant), seed and the metrics
    ``metrics(run)`` returns (default: the final stage's)."""
    rows = []
    for run in runs:
        m = metrics(run)
        rows.append({"dataset": Path(run.cfg.dataset).name, "profile": run.cfg.profile, "method": run.cfg.method,
                     "label": _label(run), "seed": run.cfg.seed, "run": str(run.folder), "rows": m.get("rows"),
                     **flat_metrics(m)})
    return pd.DataFrame(rows)


def summary_table(rows: pd.DataFrame, columns: list[str] = TABLE_COLUMNS, order=("sft", "dpo", "sdpo", "sprec"),
                  by: str = "method") -> pd.DataFrame:
    """Mean and std (ddof 1; 0 for one seed) over seeds per (dataset, profile, ``by``), and the seed
    count; ``by="label"`` keeps variants apart. Rows follow ``order``, then the others sorted."""
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


def export_run(run: Run, dest: str | Path) -> Path:
    """Copy a run's small result files (config, log, metrics, training losses, and a popularity
    summary of its self-play negatives: :func:`negatives_popularity`) to ``dest``, for git.

    Checkpoints, predictions and negatives stay in the run folder (large, or derived from data
    whose terms forbid redistribution)."""
    import shutil

    dest = Path(dest)
    (dest / "metrics").mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "log.txt", "FINISHED"):
        if (run.folder / name).exists():
            shutil.copy2(run.folder / name, dest / name)
    for p in (run.folder / "metrics").glob("*.json"):
        shutil.copy2(p, dest / "metrics" / p.name)
    for p in (run.folder / "stages").glob("*/log_history.json"):
        (dest / "losses").mkdir(exist_ok=True)
        shutil.copy2(p, dest / "losses" / f"{p.parent.name}.json")
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
    labels = sorted((k for k in run.metrics() if k.startswith("it") and k[2:].isdigit()), key=lambda k: int(k[2:]))
    if len(labels) < n:
        raise ValueError(f"{run.folder}: {len(labels)} iterations evaluated, {n} needed")
    chosen = [run.metrics()[k] for k in labels[-n:]]

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
        for genre, gu in final_metrics(run)[f"@{k}"]["GU"].items():
            rows.append({"label": _label(run), "seed": run.cfg.seed, "genre": genre, "GU": gu})
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="genre", columns="label", values="GU", aggfunc="mean", sort=False)
    return table


def curves(runs: list[Run]) -> pd.DataFrame:
    """:func:`iteration_curves` of every SPRec run, stacked, with its label and seed."""
    frames = []
    for run in runs:
        c = iteration_curves(run)
        c.insert(0, "seed", run.cfg.seed)
        c.insert(0, "label", _label(run))
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


def hr_noise(rows: pd.DataFrame, label: str = "sft", metric: str = "HR@5") -> float:
    """The noise floor of a hit rate: the larger of its std over seeds and its binomial standard
    error sqrt(p (1 − p) / n) over the n evaluated rows (which also covers a single seed)."""
    part = rows[rows["label"] == label]
    v, n_rows = part[metric], float(part["rows"].mean())
    p = float(v.mean())
    seed_std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return max(seed_std, (p * (1 - p) / n_rows) ** 0.5)


# The paper's directional claims, as (label, metric, direction against the base): +1 up, -1 down,
# 0 "not lost beyond the noise". Table 1, against SFT (sections 4.1 and 5.2):
CLAIMS: dict[str, list[tuple[str, str, int]]] = {
    "(a) DPO with random negatives raises ORRatio and lowers DivRatio": [
        ("dpo", "ORRatio@1", +1), ("dpo", "DivRatio@1", -1), ("dpo", "ORRatio@5", +1), ("dpo", "DivRatio@5", -1)],
    "(b) SPRec raises DivRatio@1 and lowers ORRatio@1, without losing HR@5 beyond the noise": [
        ("sprec", "DivRatio@1", +1), ("sprec", "ORRatio@1", -1), ("sprec", "HR@5", 0)],
}
# Table 2, against SPRec (section 5.3, as we read it: both steps and the self-play negatives are
# needed; without the SFT step accuracy falls, without the DPO step or with random negatives the
# debiasing goes).
ABLATION_CLAIMS: dict[str, list[tuple[str, str, int]]] = {
    "(c) without its SFT step SPRec loses accuracy": [("sprec-nosft", "HR@5", -1)],
    "(d) without its DPO step SPRec loses its debiasing": [("sprec-nodpo", "DivRatio@1", -1), ("sprec-nodpo", "ORRatio@1", +1)],
    "(e) with random negatives SPRec loses its debiasing": [("sprec-rn", "DivRatio@1", -1), ("sprec-rn", "ORRatio@1", +1)],
}


def claim_checks(rows: pd.DataFrame, base: str = "sft", claims: dict = CLAIMS) -> pd.DataFrame:
    """Each part of ``claims`` (default :data:`CLAIMS`) against the runs in ``rows`` (one dataset
    and profile), one row per part with ``holds`` True / False (None: runs missing).

    A direction holds when the paired difference has the claimed sign in every seed; "HR@5 not
    lost" (direction 0) holds when the mean paired difference is above minus :func:`hr_noise`."""
    diffs = paired_differences(rows, base).set_index(["label", "metric"])
    out = []
    for claim, parts in claims.items():
        for label, metric, direction in parts:
            row = {"claim": claim, "method": label, "metric": metric, "expected": "", "difference": "", "seeds": 0,
                   "holds": None}
            if (label, metric) in diffs.index:
                d = diffs.loc[(label, metric)]
                if direction == 0:
                    noise = hr_noise(rows, base, metric)
                    holds, expected = bool(d["mean"] > -noise), f"> −{noise:.4f} (noise)"
                else:
                    holds = bool(d["sign"] == direction)
                    expected = "up in every seed" if direction > 0 else "down in every seed"
                row.update(expected=expected, difference=d["text"], seeds=int(d["seeds"]), holds=holds)
            out.append(row)
    return pd.DataFrame(out)


# Section 5.4, as trends over a sweep of SPRec (our reading of Figs. 5 and 6): the setting each
# sweep varies, and (metric, direction of its trend). "Help" in (g) we read as better on accuracy
# and on debiasing alike.
SWEEP_CLAIMS: dict[str, tuple[str, list[tuple[str, int]]]] = {
    "(f) the larger the share of random negatives, the weaker SPRec's debiasing (Fig. 5)":
        ("random_ratio", [("DivRatio@1", -1), ("ORRatio@1", +1)]),
    "(g) more self-play negatives help SPRec (Fig. 6)":
        ("n_negatives", [("HR@5", +1), ("DivRatio@1", +1), ("ORRatio@1", -1)]),
}


def sweep_rows(pairs: list[tuple], setting: str, values_by_variant: dict, last: int = 3) -> pd.DataFrame:
    """One row per run of a sweep: :func:`run_rows` on the mean of its last ``last`` iterations
    (:func:`last_iterations_mean`), with the swept ``setting`` as a column, read from the run's
    variant through ``values_by_variant``. ``pairs``: (spec, run), as ``experiments.obtain_all``
    returns them."""
    rows = run_rows([run for _, run in pairs], metrics=lambda run: last_iterations_mean(run, last))
    if len(rows):
        rows[setting] = [values_by_variant[spec.variant] for spec, _ in pairs]
    return rows


def trend_checks(rows: pd.DataFrame, setting: str, values, claims: dict = SWEEP_CLAIMS) -> pd.DataFrame:
    """The claims of ``claims`` about ``setting`` against a sweep's rows (:func:`sweep_rows`), in
    the form of :func:`claim_checks` (so :func:`verdicts` reads them).

    A trend holds when the least-squares slope of the metric against the setting has the claimed
    sign in every seed. The slope, not "rises at every step": at one seed neighbouring points differ
    by less than the noise, and a slope weighs the whole sweep. A seed counts only with every value
    of ``values`` present; with none complete, the claim is pending."""
    complete = [] if setting not in rows.columns else [
        part[part[setting].isin(values)] for _, part in rows.groupby("seed") if set(values) <= set(part[setting])]
    out = []
    for claim, (swept, parts) in claims.items():
        if swept != setting:
            continue
        for metric, direction in parts:
            row = {"claim": claim, "method": f"slope over {setting}", "metric": metric,
                   "expected": "", "difference": "", "seeds": len(complete), "holds": None}
            if complete:
                slopes = pd.Series([float(np.polyfit(p[setting].astype(float), p[metric].astype(float), 1)[0])
                                    for p in complete])
                std = float(slopes.std(ddof=1)) if len(slopes) > 1 else 0.0
                row.update(expected=f"slope {'> 0' if direction > 0 else '< 0'} in every seed",
                           difference=mean_std_text(float(slopes.mean()), std, len(slopes), sign="+"),
                           holds=bool((np.sign(slopes) == direction).all()))
            out.append(row)
    return pd.DataFrame(out, columns=["claim", "method", "metric", "expected", "difference", "seeds", "holds"])


def verdicts(checks: pd.DataFrame) -> pd.Series:
    """One word per claim: reproduced (every part holds), not reproduced (one fails), or pending
    (runs missing). A verdict resting on one seed says so, ``"reproduced (1 seed)"``: one seed
    cannot show that a direction holds in every seed."""
    def word(parts):
        if parts["holds"].isna().any():
            return "pending"
        said = "reproduced" if parts["holds"].all() else "not reproduced"
        return f"{said} (1 seed)" if parts["seeds"].min() == 1 else said
    return checks.groupby("claim", sort=False)[["holds", "seeds"]].apply(word)


PAPER_COLUMNS = ["table", "dataset", "method", "metric", "value", "source"]


def paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's published numbers transcribed in ``sprec_lib/paper/sprec_tables.csv`` (see the
    README beside it); an empty frame when none are. Raises ``ValueError`` naming the file and
    the row of a malformed entry."""
    path = Path(path) if path is not None else Path(__file__).parent / "paper" / "sprec_tables.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != PAPER_COLUMNS:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {PAPER_COLUMNS}")
    values = []
    for i, row in frame.iterrows():
        where = f"{path}, row {i + 2}"  # the header is line 1
        if row["table"] not in ("1", "2"):
            raise ValueError(f"{where}: table {row['table']!r}, expected 1 or 2")
        if row["metric"] not in TABLE_COLUMNS:
            raise ValueError(f"{where}: metric {row['metric']!r}, expected one of {TABLE_COLUMNS}")
        if not row["source"].strip():
            raise ValueError(f"{where}: no source; say where the number was read")
        try:
            values.append(float(row["value"]))
        except ValueError:
            raise ValueError(f"{where}: value {row['value']!r} is not a number") from None
    frame["value"] = pd.Series(values, index=frame.index, dtype=float)
    frame["table"] = frame["table"].astype(int)
    return frame


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
