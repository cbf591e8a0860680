"""One SPRec iteration, stage by stage: seconds, tokens/s and peak memory, per model profile.

    python benchmarks/sprec_iteration.py --profiles tiny small --rows 64 --eval-rows 64 --repeats 3

Stages: self-play negatives (greedy, stopping at the closing quote, prompts bucketed by length),
one SFT step on the positives, one DPO step on (prompt, positive, negative), evaluation (grounded).
The same process also runs the paper-code-style variant of the two generation stages (128 new
tokens for negatives and 32 for evaluation with no stop at the quote, prompts batched in input
order) on the same model and prompts, alternating with ours, and prints our speed-up as a ratio of
medians. Training stages are the same code in both variants and are timed once per repeat.

Writes ``benchmarks/results/sprec_iteration-<profile>.json``. Timings on a shared 2-core machine
are noisy: read medians and the side-by-side ratio, not single numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib import decoding, models, trainers  # noqa: E402
from sprec_lib.config import run_config  # noqa: E402
from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.evaluation import Grounder  # noqa: E402
from sprec_lib.prompts import extract_title, prompt  # noqa: E402
from sprec_lib.runs import versions  # noqa: E402
from sprec_lib.selfplay import negatives_for, preference_rows, sample_rows  # noqa: E402
from sprec_lib.pipeline import sft_rows  # noqa: E402


class PeakMemory:
    """Peak resident memory (CPU, sampled every 20 ms) or peak allocated GPU memory of a block."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        page = 4096
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available():
            self.peak = torch.cuda.max_memory_allocated()
        self.mb = self.peak / 2**20


def timed(fn):
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, mem.mb


def count_tokens(tokenizer, texts) -> int:
    if not texts:
        return 0
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def start_model(profile: str, ds, cfg, start: str | None):
    """The model an iteration starts from: a finished SFT checkpoint if given, else the base model."""
    if start:
        model, tok = models.load(start, cfg.model)
    else:
        model, tok = models.base_model(cfg.model, ds, 0)
        if cfg.model.lora:
            model = models.add_lora(model, cfg.model)
    return model.to(models.device()), tok


def bench_profile(profile: str, args) -> dict:
    ds = read_sprec_folder(args.dataset)
    cfg = run_config(profile, dataset=args.dataset, method="sprec")
    model, tok = start_model(profile, ds, cfg, args.start.get(profile))
    rng = np.random.default_rng(0)
    rows = sample_rows(ds.train, args.rows, rng)
    eval_rows = ds.test[: args.eval_rows]
    prompts = [prompt(s, ds.catalogue, ds.wording) for s in rows]
    eval_prompts = [prompt(s, ds.catalogue, ds.wording) for s in eval_rows]
    grounder = Grounder(ds)
    bs = cfg.eval.batch_size
    out = {"profile": profile, "rows": len(rows), "eval_rows": len(eval_rows), "device": str(models.device()),
           "threads": torch.get_num_threads(), "stages": {}, "paper_code_style": {}}

    def generation(prompts_, new_tokens, ours: bool):
        return decoding.generate_free(model, tok, prompts_, max_new_tokens=new_tokens, batch_size=bs,
                                      stop_at_quote=ours, bucket=ours, progress=False)

    # Warm-up (first-call allocations and kernel selection), so that no repeat pays for it.
    generation(prompts[:2], 8, True)
    grounder(["warm-up"], 1)
    samples = {k: [] for k in ("negatives", "negatives_paper", "eval", "eval_paper", "sft", "dpo")}
    memory, tokens = {}, {}
    for r in range(args.repeats):
        for name, fn in (
            ("negatives", lambda: generation(prompts, cfg.sprec.negative_max_new_tokens, True)),
            ("negatives_paper", lambda: generation(prompts, 128, False)),
            ("eval", lambda: grounder(generation(eval_prompts, cfg.eval.max_new_tokens, True), 5)),
            ("eval_paper", lambda: grounder(generation(eval_prompts, cfg.eval.max_new_tokens, False), 5)),
        ):
            result, sec, mb = timed(fn)
            samples[name].append(sec)
            memory[name] = max(memory.get(name, 0), mb)
            if name.startswith("negatives"):
                tokens[name] = count_tokens(tok, result)
        # Training stages on copies, so that every repeat starts from the same model.
        negs = negatives_for(rows, ds, cfg.sprec, rng, model, tok, bs)
        pairs, skipped = preference_rows(rows, negs, ds, 1)
        sft_data = sft_rows(rows, ds)
        import copy

        for name, fn, texts in (
            ("sft", lambda: trainers.sft(copy.deepcopy(model), tok, sft_data,
                                          cfg.sprec.sft, Path(args.tmp) / "sft", r), [d["prompt"] + d["completion"] for d in sft_data]),
            ("dpo", lambda: trainers.dpo(copy.deepcopy(model), tok, pairs or [], cfg.sprec.dpo, Path(args.tmp) / "dpo", r)
             if pairs else None, [p["prompt"] + p["chosen"] for p in pairs] + [p["prompt"] + p["rejected"] for p in pairs]),
        ):
            _, sec, mb = timed(fn)
            samples[name].append(sec)
            memory[name] = max(memory.get(name, 0), mb)
            tokens[name] = count_tokens(tok, texts)
        out["pairs"], out["skipped"] = len(pairs), skipped
    for name, secs in samples.items():
        med = statistics.median(secs)
        entry = {"seconds_median": med, "seconds": secs, "peak_memory_mb": memory[name]}
        if name in tokens:
            entry["tokens"] = tokens[name]
            entry["tokens_per_s"] = tokens[name] / med if med else None
        (out["paper_code_style"] if name.endswith("_paper") else out["stages"])[name.removesuffix("_paper")] = entry
    ours = sum(out["stages"][k]["seconds_median"] for k in ("negatives", "sft", "dpo", "eval"))
    paper = ours - out["stages"]["negatives"]["seconds_median"] - out["stages"]["eval"]["seconds_median"] \
        + out["paper_code_style"]["negatives"]["seconds_median"] + out["paper_code_style"]["eval"]["seconds_median"]
    out["speedup"] = {
        "negatives": out["paper_code_style"]["negatives"]["seconds_median"] / out["stages"]["negatives"]["seconds_median"],
        "eval": out["paper_code_style"]["eval"]["seconds_median"] / out["stages"]["eval"]["seconds_median"],
        "iteration": paper / ours,
    }
    return out


def print_table(res: dict) -> None:
    print(f"\n{res['profile']}: {res['rows']} rows ({res['pairs']} pairs, {res['skipped']} skipped), "
          f"{res['eval_rows']} eval rows, {res['device']}, {res['threads']} threads")
    print(f"{'stage':<22}{'median s':>10}{'tokens/s':>12}{'peak MB':>10}")
    for group, label in (("stages", ""), ("paper_code_style", " (paper code)")):
        for name, e in res[group].items():
            tps = f"{e['tokens_per_s']:.0f}" if e.get("tokens_per_s") else "-"
            print(f"{name + label:<22}{e['seconds_median']:>10.2f}{tps:>12}{e['peak_memory_mb']:>10.0f}")
    s = res["speedup"]
    print(f"speed-up over the paper-code style: negatives x{s['negatives']:.2f}, eval x{s['eval']:.2f}, "
          f"whole iteration x{s['iteration']:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(ROOT / "data" / "ml-1m"))
    p.add_argument("--profiles", nargs="+", default=["tiny"])
    p.add_argument("--rows", type=int, default=64, help="self-play rows (the paper: 2,048)")
    p.add_argument("--eval-rows", type=int, default=64, help="evaluation rows (the paper: 1,000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--start", nargs="*", default=[], metavar="PROFILE=CHECKPOINT",
                   help="start from a trained checkpoint, e.g. tiny=runs/ml-1m-tiny/sft-seed0/stages/sft/model")
    p.add_argument("--tmp", default="/tmp/sprec-bench")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    args.start = dict(s.split("=", 1) for s in args.start)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for profile in args.profiles:
        res = bench_profile(profile, args)
        res["versions"] = versions()
        res["date"] = time.strftime("%Y-%m-%d %H:%M")
        print_table(res)
        path = Path(args.out) / f"sprec_iteration-{profile}.json"
        path.write_text(json.dumps(res, indent=1))
        print(f"-> {path}")


if __name__ == "__main__":
    main()
