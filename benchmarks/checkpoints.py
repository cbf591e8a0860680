"""What a checkpoint inside a stage costs: seconds to save one, its size, and the share of training
time it takes at the default interval (``sprec_lib.runs.CHECKPOINT_MINUTES``).

    python benchmarks/checkpoints.py --steps 8 --repeats 3

On the ``tiny`` profile's model (full-parameter training: a checkpoint holds the weights, Adam's
two moments, the scheduler and the RNG states), the same SFT stage of ``--steps`` steps runs with a
checkpoint after every step and without checkpoints, alternating, ``--repeats`` times; the cost of
one checkpoint is the difference of the medians divided by the steps. The rows are real ML-1M
prompts (``data/ml-1m``, made by ``sprec data prepare``) when the folder exists, else ML-100K's.
Writes ``benchmarks/results/checkpoints-tiny.json``. Timings on a shared 2-core machine are noisy:
read the medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib import models, trainers  # noqa: E402
from sprec_lib.config import run_config  # noqa: E402
from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.pipeline import sft_rows  # noqa: E402
from sprec_lib.runs import CHECKPOINT_MINUTES, versions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", default=None, help="a folder of the paper's format (default: data/ml-1m, else data/ml-100k)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    folder = Path(args.dataset) if args.dataset else next(
        (ROOT / "data" / n for n in ("ml-1m", "ml-100k") if (ROOT / "data" / n / "train.json").exists()), None)
    if folder is None:
        sys.exit("no dataset: run `sprec data prepare` first, or pass --dataset FOLDER")
    ds = read_sprec_folder(folder)
    cfg = run_config("tiny", dataset=str(folder))
    stage = dataclasses.replace(cfg.sft, max_steps=args.steps, logging_steps=args.steps)
    rows = sft_rows(ds.train[: stage.batch_size * stage.grad_accum * args.steps], ds)
    tokenizer = models.train_tokenizer(ds, cfg.model.vocab_size)

    class CheckpointSize(trainers.TrainerCallback):
        """Weighs each checkpoint as it is saved (the stage deletes them when it finishes)."""

        mb = None

        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.mb = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file()) / 2**20

    size = CheckpointSize()

    timings: dict[str, list[float]] = {"every step": [], "none": []}
    work = Path(tempfile.mkdtemp(prefix="sprec-ckpt-bench-"))
    try:
        for r in range(args.repeats):
            for label, minutes in (("every step", 0.0), ("none", None)):
                out = work / f"{label.replace(' ', '-')}-{r}"
                model = models.build_tiny_model(cfg.model, tokenizer, seed=0)
                trainer = trainers.make_sft_trainer(model, tokenizer, rows, stage, out, seed=0)
                trainer.add_callback(size)
                t0 = time.perf_counter()
                trainers._train(trainer, out, checkpoint_minutes=minutes)
                timings[label].append(time.perf_counter() - t0)
                print(f"repeat {r + 1}/{args.repeats}, checkpoints {label}: {timings[label][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size_mb, parameters = size.mb, sum(p.numel() for p in model.parameters())

    med = {k: statistics.median(v) for k, v in timings.items()}
    per_checkpoint = (med["every step"] - med["none"]) / args.steps
    interval = CHECKPOINT_MINUTES * 60
    result = {
        "profile": "tiny", "dataset": folder.name, "steps": args.steps, "repeats": args.repeats, "threads": 1,
        "parameters": parameters,
        "stage_seconds": timings, "stage_seconds_median": med,
        "seconds_per_checkpoint": per_checkpoint, "checkpoint_mb": size_mb,
        "interval_seconds": interval, "overhead_at_interval": per_checkpoint / interval,
        "versions": versions(),
    }
    print(f"\n| {args.steps} SFT steps, tiny profile | median s |\n|---|---|")
    for k, v in med.items():
        print(f"| checkpoints {k} | {v:.1f} |")
    print(f"\none checkpoint: {per_checkpoint:.2f} s, {size_mb:.1f} MB on disk; "
          f"at one per {CHECKPOINT_MINUTES:g} min of training: {per_checkpoint / interval:.2%} of the time")
    path = ROOT / "benchmarks" / "results" / "checkpoints-tiny.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
