"""What keeping freed memory in glibc's heap buys (``sprec_lib.cpu.keep_freed_memory``).

    python benchmarks/cpu_allocator.py --steps 4 --repeats 3

One training step of the ``tiny`` profile's model (its architecture: 4 layers of width 256, a
vocabulary of 8,192; a packed batch of 8 x 512 tokens, as its domain pretraining; AdamW; one
thread) is timed in fresh processes, with the allocator tuned and not, alternating, ``--repeats``
times each (the setting is process-wide and cannot be undone, hence one process per measurement).
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
    """Run in a child: ``SPREC_MALLOC`` decides whether the allocator is tuned."""
    sys.path.insert(0, str(ROOT))
    from sprec_lib.cpu import keep_freed_memory

    tuned = keep_freed_memory()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                         intermediate_size=1024, vocab_size=8192, max_position_embeddings=512))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 8192, (8, 512), generator=torch.Generator().manual_seed(0))
    times, losses = [], []
    for step in range(steps + 1):
        if step == 1:
            before, t_all = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        t = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
        if step:
            times.append(time.perf_counter() - t)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"tuned": tuned, "step_median_s": statistics.median(times), "steps_s": time.perf_counter() - t_all,
            "kernel_s": after.ru_stime - before.ru_stime, "user_s": after.ru_utime - before.ru_utime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mb": after.ru_maxrss / 1024, "losses": losses}


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
