"""Why is the tiny profile's SFT on CDs_and_Vinyl collapsed (HR@5 = 0, ORRatio@1 = 0.98)?

For each (label, run folder, predictions file) given, from the run's saved predictions (no model
is run): the valid ratio, how many distinct titles the top-1 slots hold, the three most recommended
titles with their share of the top-1 slots how often each is a *training* target and how often it is
mentioned in the training text (histories and targets), with its ranks, the share of generations that end without a closing quote (cut by
``eval.max_new_tokens``), and the mean title length in the run's own tokens. Also, per dataset, the
share of the test targets that are ever a training target.

usage: python results/investigations/cds_collapse.py DATA_DIR LABEL=RUN/predictions/STAGE.parquet ...
writes results/investigations/cds_collapse.json (numbers only, no titles beyond the top three)."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pandas as pd

from sprec_lib.data.sprec_format import read_sprec_folder


def tokenizer_of(pred: Path):
    from transformers import AutoTokenizer

    stages = pred.parent.parent / "stages"
    for name in ("sft", "pretrain"):
        model = stages / name / "model"
        if (model / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(model))
    return None


def main(data_dir: str, specs: list[str]) -> dict:
    ds = read_sprec_folder(data_dir)
    train_targets = collections.Counter(s.target for s in ds.train[:4096])
    rank = {item: r + 1 for r, (item, _) in enumerate(train_targets.most_common())}
    # How often a title is *read* in the training text: the histories of the training prompts (which
    # pretraining and SFT both train on, loss_on="all") plus the targets.
    mentions = collections.Counter(i for s in ds.train[:4096] for i in (*s.history, s.target))
    mention_rank = {item: r + 1 for r, (item, _) in enumerate(mentions.most_common())}
    test = ds.test[:1000]
    out = {"dataset": ds.name, "catalogue": len(ds.catalogue),
           "test_targets_seen_as_train_target": sum(s.target in train_targets for s in test) / len(test),
           "train_top3_target_share": sum(c for _, c in train_targets.most_common(3)) / sum(train_targets.values()),
           "train_top3_mention_share": sum(c for _, c in mentions.most_common(3)) / sum(mentions.values()),
           "history_repeat_share": sum(len(s.history) - len(set(s.history)) for s in ds.train[:4096])
                                   / sum(len(s.history) for s in ds.train[:4096]),
           "runs": {}}
    for spec in specs:
        label, path = spec.split("=", 1)
        pred = pd.read_parquet(path)
        top1 = [t[0] if len(t) else None for t in pred["topk"]]
        counts = collections.Counter(x for x in top1 if x is not None)
        tok = tokenizer_of(Path(path))
        gens = pred["generation"].fillna("")
        row = {
            "rows": len(pred), "valid_ratio": float(pred["valid"].mean()),
            "distinct_top1": len(counts), "top3_share": sum(c for _, c in counts.most_common(3)) / max(1, len(top1)),
            "top3": [{"title": ds.catalogue.titles[i], "share": c / len(top1), "train_target_count": train_targets.get(i, 0),
                      "train_target_rank": rank.get(i), "train_mentions": mentions.get(i, 0),
                      "train_mention_rank": mention_rank.get(i)} for i, c in counts.most_common(3)],
            "unclosed_quote_share": float(gens.map(lambda g: g.count('"') < 2).mean()),
        }
        if tok is not None:
            row["mean_generation_tokens"] = float(gens.map(lambda g: len(tok(g, add_special_tokens=False)["input_ids"])).mean())
            row["mean_target_title_tokens"] = sum(len(tok(f'"{s.target_title}"', add_special_tokens=False)["input_ids"])
                                                  for s in test) / len(test)
        out["runs"][label] = row
    return out


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2:])
    print(json.dumps(result, indent=1, ensure_ascii=False))
    dest = Path(__file__).with_suffix(".json")
    previous = json.loads(dest.read_text()) if dest.is_file() else {}
    previous[result["dataset"]] = result
    dest.write_text(json.dumps(previous, indent=1, ensure_ascii=False) + "\n")
