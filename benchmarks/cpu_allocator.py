"""What keeping freed memory in glibc's heap buys (``sprec_lib.cpu.keep_freed_memory``).

    python benchmarks/cpu_allocator.py --steps 4 --repeats 3

The ``tiny`` profile's domain-pretraining stage (trl's SFTTrainer on its 6.3M-parameter model,
packed batches of 8 x 512 tokens, one thread) runs ``--steps`` + 1 steps in fresh processes, with
the allocator tuned and not, alternating, ``--repeats`` times each (the setting is process-wide and
cannot be undone, hence one process per measurement).
Per process: the median step over ``--steps`` (the first step, which allocates everything once,
is not counted), the kernel time and the minor page faults of those steps, and the peak resident
memory. Writes ``benchmarks/results/cpu_allocator.json``. The loss is printed for both, to show
the numbers are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_process(steps: int) -> dict:
    """Run in a child: ``SPREC_MALLOC`` decides whether the allocator is tuned. The ``tiny``
    profile's real pretraining stage (trl's SFTTrainer, packed 8 x 512 blocks, the profile's model)
    on a synthetic catalogue's prompts, ``steps + 1`` steps, each timed by a callback."""
    sys.path.insert(0, str(ROOT))
    from sprec_lib.cpu import keep_freed_memory

    tuned = keep_freed_memory()
    import dataclasses
    import tempfile

    import torch
    from transformers import TrainerCallback

    from sprec_lib import models, trainers
    from sprec_lib.config import run_config
    from sprec_lib.data.synthetic import make_synthetic
    from sprec_lib.pipeline import pretrain_texts

    torch.set_num_threads(1)
    cfg = run_config("tiny")
    ds = make_synthetic(n_items=3000, sizes=(4096, 16, 16), seed=0)
    tokenizer = models.train_tokenizer(ds, cfg.model.vocab_size)
    model = models.build_tiny_model(cfg.model, tokenizer, 0)
    stage = dataclasses.replace(cfg.pretrain, max_steps=steps + 1, logging_steps=1)
    marks = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            marks.append(["begin", time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)])

        def on_step_end(self, args, state, control, **kw):
            marks.append(["end", time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)])

    with tempfile.TemporaryDirectory() as out:
        trainer = trainers.make_pretrain_trainer(model, tokenizer, pretrain_texts(ds), stage, out, 0)
        trainer.add_callback(Clock())
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps_ = [(marks[i][1:], marks[i + 1][1:]) for i in range(2, len(marks) - 1, 2)]  # the first step excluded
    times = [b[0] - a[0] for a, b in steps_]
    first, last = steps_[0][0][1], steps_[-1][1][1]
    return {"tuned": tuned, "step_median_s": statistics.median(times), "steps_s": sum(times),
            "kernel_s": last.ru_stime - first.ru_stime, "user_s": last.ru_utime - first.ru_utime,
            "minor_faults": last.ru_minflt - first.ru_minflt, "peak_rss_mb": last.ru_maxrss / 1024, "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_process(args.steps)))
        return
    runs = {"tuned": [], "default": []}
    for _ in range(args.repeats):
        for name, flag in (("default", "0"), ("tuned", "1")):
            out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], check=True,
                                 capture_output=True, text=True, env={**os.environ, "SPREC_MALLOC": flag, "OMP_NUM_THREADS": "1"})
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {}
    for name, rs in runs.items():
        summary[name] = {k: statistics.median(r[k] for r in rs) for k in ("step_median_s", "kernel_s", "user_s", "minor_faults", "peak_rss_mb")}
    same = all(r["losses"] == runs["default"][0]["losses"] for rs in runs.values() for r in rs)
    ratio = summary["default"]["step_median_s"] / summary["tuned"]["step_median_s"]
    print(f"{'':10s} {'step (s)':>9s} {'kernel (s)':>10s} {'user (s)':>9s} {'minor faults':>13s} {'peak RSS (MB)':>14s}")
    for name, m in summary.items():
        print(f"{name:10s} {m['step_median_s']:9.2f} {m['kernel_s']:10.2f} {m['user_s']:9.2f} {m['minor_faults']:13.0f} {m['peak_rss_mb']:14.0f}")
    print(f"speed-up of a step (default / tuned, medians of {args.repeats} processes each): x{ratio:.2f}; "
          f"losses identical: {same}")
    import torch

    out = {"steps": args.steps, "repeats": args.repeats, "summary": summary, "speedup": ratio, "losses_identical": same,
           "runs": runs, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "processor": platform.machine(),
           "cores": os.cpu_count(), "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    path = ROOT / "benchmarks" / "results" / "cpu_allocator.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
