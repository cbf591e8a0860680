"""Runs -> tables: one row per (method, seed), then mean +- std over seeds (the paper's Table 1 shape).

A run's headline metrics are those of its final stage (``FINISHED`` names it): SFT for ``sft``,
the DPO / S-DPO model, SPRec's last iteration. :func:`iteration_curves` gives SPRec's
per-iteration metrics (iteration 0 is the SFT model), the data of the paper's Fig. 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .evaluation import flat_metrics
from .runs import Run

TABLE_COLUMNS = ["HR@5", "NDCG@5", "DivRatio@1", "DivRatio@5", "ORRatio@1", "ORRatio@5", "MGU@1", "MGU@5", "valid_ratio"]


def finished_runs(root: str | Path) -> list[Run]:
    """Every finished run folder below ``root``."""
    return [Run(p.parent) for p in sorted(Path(root).rglob("FINISHED"))]


def run_rows(runs: list[Run]) -> pd.DataFrame:
    """One row per run: method, seed, dataset, profile and the final stage's metrics."""
    rows = []
    for run in runs:
        final = json.loads((run.folder / "FINISHED").read_text())["final_stage"]
        metrics = run.metrics()
        # The final stage's own evaluation: labelled by the stage, or by the iteration for SPRec
        # (other labels, e.g. "sft-constrained-5", are re-evaluations with other settings).
        label = next(k for k, m in metrics.items() if m.get("stage") == final and (k == final or k.startswith("it")))
        rows.append({"dataset": Path(run.cfg.dataset).name, "profile": run.cfg.profile, "method": run.cfg.method,
                     "seed": run.cfg.seed, "run": str(run.folder), **flat_metrics(metrics[label])})
    return pd.DataFrame(rows)


def summary_table(rows: pd.DataFrame, columns: list[str] = TABLE_COLUMNS, order=("sft", "dpo", "sdpo", "sprec")) -> pd.DataFrame:
    """Mean and std (ddof 1; 0 for one seed) over seeds per (dataset, profile, method), and the seed count."""
    keys = ["dataset", "profile", "method"]
    grouped = rows.groupby(keys)[columns]
    table = grouped.mean().join(grouped.std(ddof=1).fillna(0.0), rsuffix=" std")
    table["seeds"] = rows.groupby(keys)["seed"].nunique()
    methods = [m for m in order if m in table.index.get_level_values("method")]
    return table.reindex(methods, level="method")


def format_mean_std(table: pd.DataFrame, columns: list[str] = TABLE_COLUMNS, digits: int = 4) -> pd.DataFrame:
    """``mean +- std`` strings for a printed or rendered table."""
    out = pd.DataFrame(index=table.index)
    for c in columns:
        out[c] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(table[c], table[f"{c} std"])]
    out["seeds"] = table["seeds"]
    return out


def export_run(run: Run, dest: str | Path) -> Path:
    """Copy a run's small result files (config, log, metrics, training losses) to ``dest``, for git.

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
    return dest


def iteration_curves(run: Run) -> pd.DataFrame:
    """SPRec's metrics per iteration: 0 (the SFT model), 1, 2, ... (the paper's Fig. 4)."""
    metrics = run.metrics()
    rows = []
    for label, m in metrics.items():
        if label == "sft" or (label.startswith("it") and label[2:].isdigit()):
            rows.append({"iteration": 0 if label == "sft" else int(label[2:]), **flat_metrics(m)})
    return pd.DataFrame(rows).sort_values("iteration").reset_index(drop=True)
