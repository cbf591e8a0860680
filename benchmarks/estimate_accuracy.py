"""How far the dry run's time estimates are from what the runs took: the basis of `sprec runs plan`'s --slowdown.

    python benchmarks/estimate_accuracy.py [FOLDER ...]   # default: results/runs

For every finished run below the folders, each stage the run trained itself (not one reused from
the stage cache, not one interrupted and resumed) is timed from its log
(:func:`sprec_lib.results.run_compute`: from ``stage X: starting`` to ``stage X done``) and set
against the dry run's estimate for it (:func:`sprec_lib.pipeline.plan`, scaled from
``benchmarks/results/sprec_iteration-<profile>.json``: one lane alone on the benchmark's machine;
``from_logs=False``, as the dry run's figures taken from these same logs would be compared with
themselves).
The ratio actual / estimate is what a lane's time is worth against the estimate: the runs were
made two lanes at a time on 2 cores, often beside other work, on the CPUs the table names (the
estimates come from an AVX512 machine). The table gives, per CPU and kind of stage, the number of
stages and the median and quartiles of the ratio. Writes ``benchmarks/results/estimate_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib.pipeline import plan  # noqa: E402
from sprec_lib.results import finished_runs, run_compute, started_on  # noqa: E402


def stage_ratios(folders: list[Path]) -> list[dict]:
    """One row per stage timed: run, cpu, stage, kind, actual and estimated seconds, ratio."""
    rows = []
    for folder in folders:
        for run in finished_runs(folder):
            try:
                timed = run_compute(run.folder)
            except Exception as e:  # an old log this cannot read: say so, go on
                print(f"skipped {run.folder}: {e}", file=sys.stderr)
                continue
            if not Path(run.cfg.dataset).is_dir():
                continue  # its data is not on this machine: no estimate
            skip = set(timed["reused"]) | set(timed["interrupted"])
            estimates = {s["stage"]: s for s in plan(run.cfg, from_logs=False)["stages"]}  # not the logs' own figures
            for stage, seconds in timed["stage_seconds"].items():
                est = estimates.get(stage)
                if stage in skip or est is None or not est["estimate_s"] or seconds <= 0:
                    continue
                rows.append({"run": str(run.folder), "cpu": started_on(run.folder), "stage": stage, "kind": est["kind"],
                             "actual_s": seconds, "estimate_s": est["estimate_s"], "ratio": seconds / est["estimate_s"]})
    return rows


def pretrain_left_out(rows: list[dict]) -> list[dict]:
    """The dry run's other figure for pretraining (:func:`sprec_lib.pipeline.logged_pretrain_seconds`:
    the median seconds a step of the other runs that pretrained on the dataset in one go), for each
    pretraining stage timed above, leaving that run out so that it is not compared with itself. One
    row per stage with an estimate: run, cpu, actual and estimated seconds, ratio."""
    out = []
    per_step = {}
    for r in rows:
        if r["kind"] == "pretrain":
            cfg = json.loads((Path(r["run"]) / "config.json").read_text())["config"]  # read once a run
            steps = cfg["pretrain"]["max_steps"]
            per_step[r["run"]] = (Path(cfg["dataset"]).name, steps, r["actual_s"] / steps, r)
    for run, (dataset, steps, _, r) in per_step.items():
        others = [s for o, (d, _, s, _) in per_step.items() if d == dataset and o != run]
        if others:
            estimate = statistics.median(others) * steps
            out.append({"run": run, "cpu": r["cpu"], "actual_s": r["actual_s"], "estimate_s": estimate,
                        "ratio": r["actual_s"] / estimate, "scaled_ratio": r["ratio"]})
    return out


def summary(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["cpu"], r["kind"]), []).append(r["ratio"])
        groups.setdefault((r["cpu"], "all"), []).append(r["ratio"])
    out = []
    for (cpu, kind), ratios in sorted(groups.items()):
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out.append({"cpu": cpu, "kind": kind, "stages": len(ratios), "median": statistics.median(ratios),
                    "q1": q[0], "q3": q[2]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", default=[str(ROOT / "results" / "runs")])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate_accuracy.json"))
    args = parser.parse_args()
    rows = stage_ratios([Path(f) for f in args.folders])
    table = summary(rows)
    print(f"{'cpu':<12}{'kind':<11}{'stages':>7}{'median':>9}{'q1':>7}{'q3':>7}   (actual / estimate)")
    for t in table:
        print(f"{t['cpu']:<12}{t['kind']:<11}{t['stages']:>7}{t['median']:>9.2f}{t['q1']:>7.2f}{t['q3']:>7.2f}")
    left_out = pretrain_left_out(rows)
    if left_out:
        ratios = [r["ratio"] for r in left_out]
        print(f"pretraining from the other runs' logs (leave one out, {len(ratios)} stages): actual / estimate "
              f"median {statistics.median(ratios):.2f}, from {min(ratios):.2f} to {max(ratios):.2f}; "
              f"the benchmark's scaling on the same stages: median {statistics.median(r['scaled_ratio'] for r in left_out):.2f}")
    Path(args.out).write_text(json.dumps({"folders": args.folders, "summary": table, "stages": rows,
                                          "pretrain_from_logs": left_out}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
