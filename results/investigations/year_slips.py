"""Where do the `small` DPO's wrong years come from?

After DPO with random negatives, SmolLM2-135M-Instruct's answers on MovieLens name a catalogue
title in 58% of the test rows against its SFT start's 88%; 97% of the others are a catalogue
title's name with another year in the parentheses (`sprec_lib.evaluation.answer_kinds`). This
script asks whether DPO moved the years more than the names. For the first ROWS test rows, each
model given (LABEL=RUN:STAGE) scores the held-out title, teacher-forced after the prompt as the
trainers see it (prompt + completion, `sprec_lib.prompts`). The completion's tokens are split into
the title's name, its year part (`` (yyyy)``) and the rest (the quotes and the tail), by the
characters each token starts at. Per part: the mean log-probability per token, how often the
model's most likely token is the true one (argmax accuracy, teacher-forced), and in how many rows
every token of the part is (``rows_all_argmax``: for the year, the share of rows where greedy
decoding, given the right name, writes the right year). Only rows whose title ends in a year are
scored. Numbers only: no title is written.

usage: python results/investigations/year_slips.py DATA_DIR LABEL=RUN:STAGE ... [--rows N]
writes results/investigations/year_slips.json"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from sprec_lib import models
from sprec_lib.data.sprec_format import read_sprec_folder
from sprec_lib.prompts import prompt, target_completion
from sprec_lib.runs import Run

YEAR = re.compile(r"\s*\(\d{4}\)$")
PARTS = ("name", "year", "rest")


def parts_of(completion: str) -> list[tuple[int, int, str]]:
    """(start, end, part) character spans of a completion ``"<name> (yyyy)"<tail>``."""
    close = completion.index('"', 1)
    title = completion[1:close]
    year = YEAR.search(title)
    name_end = 1 + year.start()
    return [(0, 1, "rest"), (1, name_end, "name"), (name_end, close, "year"), (close, len(completion), "rest")]


@torch.no_grad()
def score(model, tokenizer, prompt_text: str, completion: str) -> dict[str, list[tuple[float, bool]]]:
    """Per part, (log-probability, argmax is the true token) of each completion token."""
    enc = tokenizer(prompt_text + completion, return_offsets_mapping=True, return_tensors="pt")
    ids, offsets = enc["input_ids"].to(model.device), enc["offset_mapping"][0].tolist()
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    spans, start = parts_of(completion), len(prompt_text)
    out = {p: [] for p in PARTS}
    for t in range(1, ids.shape[1]):
        begin = offsets[t][0] - start
        if begin < 0:
            continue  # a prompt token
        part = next((p for a, b, p in spans if a <= begin < b), "rest")
        out[part].append((float(logp[t - 1, ids[0, t]]), bool(logp[t - 1].argmax() == ids[0, t])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("models", nargs="+", metavar="LABEL=RUN:STAGE")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = read_sprec_folder(args.data_dir)
    rows = [s for s in ds.test[: args.rows] if s.target is not None and YEAR.search(ds.catalogue.titles[s.target])]
    result = {"dataset": ds.name, "rows_asked": args.rows, "rows_scored": len(rows), "models": {}}
    for spec in args.models:
        label, where = spec.split("=", 1)
        folder, stage = where.rsplit(":", 1)
        run = Run(folder)
        began = time.monotonic()
        model, tokenizer = models.load(run.model_dir(stage), run.cfg.model)
        model.eval()
        tokens, whole = {p: [] for p in PARTS}, {p: [] for p in PARTS}
        for s in rows:
            got = score(model, tokenizer, prompt(s, ds.catalogue, ds.wording), target_completion(s, ds.catalogue, ds.wording))
            for p in PARTS:
                tokens[p] += got[p]
                whole[p].append(all(a for _, a in got[p]))  # every token of the part the model's first choice
        result["models"][label] = {
            "run": Path(folder).name, "stage": stage,
            **{p: {"tokens": len(v), "mean_logp": sum(x for x, _ in v) / len(v), "argmax_accuracy": sum(a for _, a in v) / len(v),
                   "rows_all_argmax": sum(whole[p]) / len(whole[p])}
               for p, v in tokens.items()},
            "seconds": round(time.monotonic() - began, 1)}
        print(label, json.dumps(result["models"][label]))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
