"""Does each SPRec DPO step push down the years of the titles its negatives name?

The `small` MovieLens SPRec (seed 0) swings: test valid_ratio 0.29 / 0.74 / 0.27 / 0.58 / 0.30
over its five iterations, and the share of each iteration's self-play negatives that name a
catalogue title swings with it (94.5 / 29.9 / 76.9 / 49.4 / 55.9%). The hypothesis: a DPO step
lowers the year tokens of whatever titles its negatives are. Right-year negatives then make the
next model write wrong years; wrong-year negatives push the wrong years down and the right ones
come back.

For each iteration k, this script rebuilds the DPO step's preference rows as the run built them
(the run's seed, `pipeline.training_rows`, `selfplay.sample_rows`, the saved negatives) and takes,
of each kind, the first ROWS whose negative is a title ``"<name> (yyyy)"`` that is either a
catalogue title (right year) or the name of exactly one catalogue title with another year (wrong
year). Under the DPO step's start (``itk-sft``, also its reference) and its end (``itk-dpo``), it
scores the year part (`` (yyyy)``) teacher-forced after the row's prompt, as the trainer sees it,
of two completions: the negative as written, and the catalogue title of the same name (the right
year). Mean log-probability per year token, per kind of negative; the change from start to end is
what the DPO step did. Numbers only: no title is written.

usage: python results/investigations/selfplay_years.py DATA_DIR RUN [--rows N] [--iterations 1 2 ...]
writes results/investigations/selfplay_years.json"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from sprec_lib import models
from sprec_lib.data.sprec_format import read_sprec_folder
from sprec_lib.pipeline import training_rows
from sprec_lib.prompts import completion, prompt
from sprec_lib.runs import Run
from sprec_lib.selfplay import positive_title, sample_rows
from year_slips import YEAR, score  # this folder's script: a completion's name/year/rest parts

KINDS = ("right_year", "wrong_year")


def iteration_rows(run: Run, ds, it: int, rows: int) -> list[dict]:
    """Iteration ``it``'s first ``rows`` preference rows of each kind (right-year, wrong-year negative)."""
    cfg = run.cfg
    pool = training_rows(ds, cfg)
    # the draw of sprec_lib.methods.sprec.run; checked against the positives saved beside the negatives
    drawn = sample_rows(pool, cfg.sprec.train_rows, np.random.default_rng([cfg.seed, 100 + it]))
    negs = run.load_negatives(f"it{it}")
    rebuilt = [positive_title(s, ds) for s in drawn]
    if rebuilt != list(negs["positive"]):
        bad = next(i for i, (a, b) in enumerate(zip(rebuilt, negs["positive"])) if a != b) if len(rebuilt) == len(negs) else None
        raise ValueError(f"{run.negatives_path(f'it{it}')}: the rows rebuilt here are not the run's "
                         f"({len(rebuilt)} rebuilt, {len(negs)} saved; first differing row: {bad}); "
                         "the method's row draw changed since this script was written")
    by_name = defaultdict(list)
    for t in ds.catalogue.titles:
        by_name[YEAR.sub("", t)].append(t)
    out = []
    for s, ns in zip(drawn, negs["negatives"]):
        if not len(ns) or not YEAR.search(ns[0]):
            continue
        same_name = by_name.get(YEAR.sub("", ns[0]), [])
        if ns[0] not in ds.catalogue.id_of and len(same_name) != 1:
            continue  # a wrong year whose right year is not one title
        right = ns[0] if ns[0] in ds.catalogue.id_of else same_name[0]
        out.append({"prompt": prompt(s, ds.catalogue, ds.wording, cfg.sprec.dpo.template),
                    "kind": "right_year" if ns[0] == right else "wrong_year",
                    "as_written": completion(ns[0], ds.wording), "right": completion(right, ds.wording)})
    return [r for kind in KINDS for r in [r for r in out if r["kind"] == kind][:rows]]


def year_logps(model, tokenizer, rows: list[dict]) -> list[dict]:
    """Per row, the mean log-probability of the year tokens of the negative as written and of its right-year title."""
    got = []
    for r in rows:
        year = {text: float(np.mean([lp for lp, _ in score(model, tokenizer, r["prompt"], text)["year"]]))
                for text in {r["as_written"], r["right"]}}  # one pass when the negative is the right title
        got.append({which: year[r[which]] for which in ("as_written", "right")})
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=40, help="rows per kind of negative")
    parser.add_argument("--iterations", type=int, nargs="+")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds, run = read_sprec_folder(args.data_dir), Run(args.run)
    iterations = args.iterations or list(range(1, run.cfg.sprec.iterations + 1))
    result = {"dataset": ds.name, "run": Path(args.run).name, "rows_asked": args.rows, "iterations": {}}
    for it in iterations:
        began = time.monotonic()
        rows = iteration_rows(run, ds, it, args.rows)
        scored = {}
        for stage in (f"it{it}-sft", f"it{it}-dpo"):
            model, tokenizer = models.load(run.model_dir(stage), run.cfg.model)
            model.eval()
            scored[stage] = year_logps(model, tokenizer, rows)
        before, after = scored[f"it{it}-sft"], scored[f"it{it}-dpo"]
        summary = {}
        for kind in KINDS:
            idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
            if not idx:
                continue
            summary[kind] = {"rows": len(idx), **{
                f"{which}_{when}": round(float(np.mean([s[i][which] for i in idx])), 4)
                for which in ("as_written", "right") for when, s in (("start", before), ("end", after))}}
            for which in ("as_written", "right"):
                summary[kind][f"{which}_change"] = round(summary[kind][f"{which}_end"] - summary[kind][f"{which}_start"], 4)
        result["iterations"][it] = {"rows_scored": len(rows), "kinds": summary,
                                    "seconds": round(time.monotonic() - began, 1)}
        print(it, json.dumps(result["iterations"][it]), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
