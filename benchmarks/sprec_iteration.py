"""One SPRec iteration, stage by stage: tokens, FLOPs, the FLOP floor, seconds and peak memory, today's
implementation against the new one side by side in one process.

    python benchmarks/sprec_iteration.py --profiles tiny --rows 64 --eval-rows 64 --repeats 3

Stages: self-play negatives (greedy, stopping at the closing quote, prompts bucketed by length),
the SFT step on the positives, the DPO step on (prompt, positive, negative), evaluation (grounded).

Side by side, in one process, alternating (the order flips every repeat), medians over ``--repeats``:

* training stages: **old** = today's implementation, trl's stock paths (``StageConfig.fast_head=False``:
  trl's CPU LM head at every position; ``token_metrics="every_step"``: SFT's entropy and accuracy at
  every step), fp32; **new** = ``fast_head=True`` (the head on the positions the loss reads) and
  ``token_metrics="logged_steps"``, fp32 (the defaults now); **new_shared** = new with
  ``shared_prompt=True`` (DPO runs each prompt once; SFT is new's); **new_shared_bf16** = new_shared
  under bf16 autocast (``trainers.training_args(dtype="bfloat16")``), only where the CPU has native
  bf16 (or ``--bf16``). Each variant trains a deep copy of the same start model on the same rows with
  the same seed, and the logged losses are compared with old's.
* generation stages: ours against the paper-code style (128 new tokens for negatives and 32 for
  evaluation with no stop at the quote, prompts batched in input order), as before.

The allocator setting ``sprec_lib.cpu.keep_freed_memory()`` (glibc keeps freed memory: a
pretraining step x1.10, ``benchmarks/cpu_allocator.py``) is applied at the start, for every variant alike: the old/new ratio measures
the trainer changes only.

FLOPs and the floor. ``P`` = the 2-D weights of the transformer layers, ``H`` hidden size, ``V``
vocabulary, ``L`` layers. One token's forward costs ``2 P`` in the layers, ``2 H V`` in the LM head
where a log-prob is needed, and causal attention ``2 L H n^2`` per sequence of ``n`` tokens. Training
costs 3 forwards (a full-parameter model: forward, input and weight gradients) or 2 (LoRA: the frozen
weights need input gradients only); DPO adds one forward of the reference. Only **needed** work is
counted: real tokens (no padding), the head where the loss reads (SFT ``loss_on="all"``: every token
but the first; DPO: the completion tokens), and in DPO the prompt once per pair (the implementation
runs it twice, for the chosen and for the rejected completion). Generation: the prompt's prefill and
each generated token, with the head once per generated token. The grounding step of evaluation
(sentence embeddings, nearest titles) is not counted. The floor is FLOPs / the fp32 matmul peak
measured in this run (the best of square matmuls of 256, 512 and 1,024 at the run's thread count);
``actual/floor`` reads how far a stage is from it.

Seconds are CPU seconds of this process (``time.process_time``) at one thread: on a machine that
other jobs share, the wall clock also counts the waits for a core (it is in the JSON too, and the
tables of earlier versions of this benchmark were wall-clock). Medians over the repeats.

Writes ``benchmarks/results/sprec_iteration-<profile>.json`` (``-<profile>-AVX2.json`` with ``--per-cpu``,
which the dry run's estimates prefer on a CPU of that kind): what it ran on (threads, the CPU's
capability string and bf16 flags, the measured peaks, the package versions, how the start model was
built, the command) and every sample. Timings on a shared 2-core machine are noisy: read medians
and the side-by-side ratios, not single numbers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib import decoding, models, trainers  # noqa: E402
from sprec_lib.config import SPRecConfig, run_config  # noqa: E402
from sprec_lib.cpu import keep_freed_memory  # noqa: E402
from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.evaluation import Grounder  # noqa: E402
from sprec_lib.pipeline import sft_rows  # noqa: E402
from sprec_lib.prompts import prompt  # noqa: E402
from sprec_lib.runs import versions  # noqa: E402
from sprec_lib.selfplay import negatives_for, preference_rows, sample_rows  # noqa: E402

# The training variants: StageConfig switches and the training dtype.
NEW = {"fast_head": True, "token_metrics": "logged_steps"}
VARIANTS = {
    "old": ({"fast_head": False, "token_metrics": "every_step", "shared_prompt": False}, "float32"),
    "new": ({**NEW, "shared_prompt": False}, "float32"),
    "new_shared": ({**NEW, "shared_prompt": True}, "float32"),
    "new_shared_bf16": ({**NEW, "shared_prompt": True}, "bfloat16"),
}
# shared_prompt changes DPO only: the SFT step of "new_shared" is "new"'s, and "new_shared_bf16"'s
# SFT step is run as it is (the same as new + bf16).
SFT_AS = {"new_shared": "new"}


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
    """``fn()``, its wall-clock and CPU seconds (this process, all threads) and peak memory (MB)."""
    with PeakMemory() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {"wall": seconds, "cpu": cpu}, mem.mb


def matmul_peak(dtype: torch.dtype) -> float:
    """The best GFLOP/s of square matmuls (256, 512, 1,024) at the current thread count, median of 5,
    in CPU time (``time.process_time``: on a shared machine, the wall clock counts the waits too)."""
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        reps = max(1, int(2e9 / (2 * n**3)))
        for _ in range(2):
            a @ b
        times = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(reps):
                a @ b
            times.append((time.process_time() - t0) / reps)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best


# -- FLOPs ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Shape:
    layer_params: int  # P: the 2-D weights inside the transformer layers
    hidden: int
    vocab: int
    layers: int
    train_factor: int  # forwards per trained token: 3 full-parameter, 2 LoRA

    @classmethod
    def of(cls, model) -> Shape:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config.get_text_config()
        p = sum(w.numel() for n, w in base.named_parameters() if ".layers." in n and w.dim() == 2)
        lora = any("lora_" in n for n, _ in model.named_parameters())
        return cls(p, cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, 2 if lora else 3)

    def forward(self, tokens: int, head: int, attention_n2: int) -> float:
        """Forward FLOPs: ``tokens`` through the layers, ``head`` positions through the LM head,
        ``attention_n2`` = the sum of squared sequence lengths (causal attention)."""
        return 2 * self.layer_params * tokens + 2 * self.hidden * self.vocab * head + 2 * self.layers * self.hidden * attention_n2


def lengths(tok, texts) -> list[int]:
    return [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]] if texts else []


def sft_work(tok, rows, shape: Shape, loss_on: str) -> dict:
    eos = tok.eos_token
    n = lengths(tok, [r["prompt"] + r["completion"] + eos for r in rows])
    p = lengths(tok, [r["prompt"] for r in rows])
    head = sum(n) - len(n) if loss_on == "all" else sum(a - b for a, b in zip(n, p))
    flops = shape.train_factor * shape.forward(sum(n), head, sum(x * x for x in n))
    return {"tokens": sum(n), "head_positions": head, "flops": flops}


def dpo_work(tok, pairs, shape: Shape) -> dict:
    eos = tok.eos_token
    p = lengths(tok, [r["prompt"] for r in pairs])
    c = [a - b for a, b in zip(lengths(tok, [r["prompt"] + r["chosen"] + eos for r in pairs]), p)]
    r = [a - b for a, b in zip(lengths(tok, [r["prompt"] + r["rejected"] + eos for r in pairs]), p)]
    needed = sum(p) + sum(c) + sum(r)  # the prompt once per pair
    as_run = 2 * sum(p) + sum(c) + sum(r)  # the prompt for the chosen and for the rejected completion
    head = sum(c) + sum(r)
    n2 = sum((a + b) ** 2 + (a + d) ** 2 - a * a for a, b, d in zip(p, c, r))
    flops = (shape.train_factor + 1) * shape.forward(needed, head, n2)  # policy trained, reference forward
    return {"tokens": needed, "tokens_as_run": as_run, "head_positions": head,
            "completion_share": head / as_run if as_run else None, "flops": flops}


def generation_work(tok, prompts, outputs, shape: Shape) -> dict:
    p, g = lengths(tok, prompts), lengths(tok, outputs)
    n2 = sum((a + b) ** 2 for a, b in zip(p, g))
    return {"tokens": sum(p) + sum(g), "generated_tokens": sum(g), "flops": shape.forward(sum(p) + sum(g), sum(g) + len(g), n2)}


# -- the benchmark --------------------------------------------------------------------------------


def start_model(ds, cfg, start: str | None):
    """The model an iteration starts from: a finished checkpoint if given, else the base model."""
    if start:
        model, tok = models.load(start, cfg.model)
        how = f"models.load({start!r}) (a trained checkpoint)"
    else:
        model, tok = models.base_model(cfg.model, ds, 0)
        how = ("models.base_model(profile config, dataset, seed 0): " + (
            "a randomly initialised tiny Llama (seed 0) and a BPE tokenizer trained on the dataset's titles and template"
            if cfg.model.profile == "tiny" else f"the pretrained {cfg.model.name_or_path} checkpoint"))
        if cfg.model.lora:
            model = models.add_lora(model, cfg.model)
            how += ", with a fresh LoRA adapter (models.add_lora)"
    return model.to(models.device()), tok, how


def bench_profile(profile: str, args) -> dict:
    ds = read_sprec_folder(args.dataset)
    cfg = run_config(profile, dataset=args.dataset, method="sprec")
    model, tok, how = start_model(ds, cfg, args.start.get(profile))
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{profile}-", dir=args.tmp))
    shape = Shape.of(model)
    rng = np.random.default_rng(0)
    rows = sample_rows(ds.train, args.rows, rng)
    eval_rows = ds.test[: args.eval_rows]
    prompts = [prompt(s, ds.catalogue, ds.wording) for s in rows]
    eval_prompts = [prompt(s, ds.catalogue, ds.wording) for s in eval_rows]
    grounder = Grounder(ds)
    bs = cfg.eval.batch_size

    bf16 = trainers.cpu_bf16_capability()
    native_bf16 = bf16["onednn_bf16"] and (bf16["avx512_bf16"] or bf16["amx_bf16"])
    variants = ["old", "new", "new_shared"] + (
        ["new_shared_bf16"] if (native_bf16 or args.bf16) and not torch.cuda.is_available() else [])
    peak = {"float32": matmul_peak(torch.float32)}
    if "new_shared_bf16" in variants:
        peak["bfloat16"] = matmul_peak(torch.bfloat16)

    def generation(prompts_, new_tokens, ours: bool):
        return decoding.generate_free(model, tok, prompts_, max_new_tokens=new_tokens, batch_size=bs,
                                      stop_at_quote=ours, bucket=ours, progress=False)

    # The DPO step's negatives: the start model's own (self-play) if it is a trained checkpoint; a
    # random base model's are 32 tokens of noise, so then random catalogue titles stand in (the
    # lengths of real titles, which set the share of completion tokens).
    self_play = bool(args.start.get(profile)) or profile != "tiny"
    if self_play:
        negs = negatives_for(rows, ds, cfg.sprec, rng, model, tok, bs)
    else:
        negs = negatives_for(rows, ds, SPRecConfig(negatives="random"), rng)
    pairs, skipped = preference_rows(rows, negs, ds, 1)
    sft_data = sft_rows(rows, ds)
    if not pairs:
        raise SystemExit("no preference pairs: every negative equalled its positive")

    # Warm-up (first-call allocations and kernel selection), so that no repeat pays for it.
    generation(prompts[:2], 8, True)
    grounder(["warm-up"], 1)

    gen_samples = {k: [] for k in ("negatives", "negatives_paper", "eval", "eval_paper")}
    train_samples = {(stage, v): [] for stage in ("sft", "dpo") for v in variants}
    memory, work, losses = {}, {}, {}
    for r in range(args.repeats):
        for name, fn in (
            ("negatives", lambda: generation(prompts, cfg.sprec.negative_max_new_tokens, True)),
            ("negatives_paper", lambda: generation(prompts, 128, False)),
            ("eval", lambda: generation(eval_prompts, cfg.eval.max_new_tokens, True)),
            ("eval_paper", lambda: generation(eval_prompts, cfg.eval.max_new_tokens, False)),
        ):
            def run(fn=fn, name=name):
                out = fn()
                if name.startswith("eval"):
                    grounder(out, 5)
                return out

            result, sec, mb = timed(run)
            gen_samples[name].append(sec)
            memory[name] = max(memory.get(name, 0), mb)
            work[name] = generation_work(tok, prompts if name.startswith("negatives") else eval_prompts, result, shape)
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            switches, dtype = VARIANTS[variant]
            for stage in ("sft", "dpo"):
                if stage == "sft" and variant in SFT_AS:
                    continue
                stage_cfg = dataclasses.replace(getattr(cfg.sprec, stage), **switches)
                out_dir = tmp / f"{stage}-{variant}-{r}"  # a fresh folder: nothing to resume from
                if stage == "sft":
                    fn = lambda: trainers.sft(copy.deepcopy(model), tok, sft_data, stage_cfg, out_dir, 0,  # noqa: E731
                                              checkpoint_minutes=None, dtype=dtype)
                else:
                    fn = lambda: trainers.dpo(copy.deepcopy(model), tok, pairs, stage_cfg, out_dir, 0,  # noqa: E731
                                              checkpoint_minutes=None, dtype=dtype)
                trained, sec, mb = timed(fn)
                del trained
                train_samples[stage, variant].append(sec)
                memory[stage, variant] = max(memory.get((stage, variant), 0), mb)
                history = json.loads((out_dir / "log_history.json").read_text())
                losses[stage, variant] = [h["loss"] for h in history if "loss" in h]

    shutil.rmtree(tmp, ignore_errors=True)
    work["sft"] = sft_work(tok, sft_data, shape, cfg.sprec.sft.loss_on)
    work["dpo"] = dpo_work(tok, pairs, shape)
    gflops = peak["float32"] * 1e9

    def entry(samples, w, mb):
        """Medians of CPU seconds (the measure: one thread, so CPU time is the time the work took
        on its core; the wall clock on a loaded machine adds the waits for a core) and wall seconds."""
        cpu, wall = [x["cpu"] for x in samples], [x["wall"] for x in samples]
        med = statistics.median(cpu)
        floor = w["flops"] / gflops
        return {"seconds_median": med, "seconds": cpu, "wall_seconds_median": statistics.median(wall),
                "wall_seconds": wall, "peak_memory_mb": mb, "floor_seconds": floor,
                "actual_over_floor": med / floor if floor else None}

    stages = {}
    for name in ("negatives", "eval"):
        stages[name] = {**work[name], "ours": entry(gen_samples[name], work[name], memory[name]),
                        "paper_code_style": entry(gen_samples[name + "_paper"], work[name + "_paper"], memory[name + "_paper"])}
        stages[name]["ratio_paper_over_ours"] = (stages[name]["paper_code_style"]["seconds_median"]
                                                 / stages[name]["ours"]["seconds_median"])
        stages[name]["seconds_median"] = stages[name]["ours"]["seconds_median"]  # (pipeline.plan's estimates read it)
    for stage in ("sft", "dpo"):
        runs = {v: SFT_AS.get(v, v) if stage == "sft" else v for v in variants}  # variant -> the run that times it
        stages[stage] = {**work[stage], **{v: entry(train_samples[stage, r], work[stage], memory[stage, r])
                                           for v, r in runs.items()}}
        for v in variants[1:]:
            stages[stage][f"ratio_old_over_{v}"] = stages[stage]["old"]["seconds_median"] / stages[stage][v]["seconds_median"]
        stages[stage]["losses"] = {v: losses[stage, r] for v, r in runs.items()}
        ref = losses[stage, "old"]
        stages[stage]["max_loss_difference_vs_old"] = {
            v: max(abs(a - b) for a, b in zip(ref, losses[stage, runs[v]])) for v in variants[1:]}

    def iteration(variant):
        total = stages["negatives"]["ours"]["seconds_median"] + stages["eval"]["ours"]["seconds_median"]
        return total + sum(stages[s][variant]["seconds_median"] for s in ("sft", "dpo"))

    floor = (sum(stages[s]["ours"]["floor_seconds"] for s in ("negatives", "eval"))
             + sum(stages[s]["old"]["floor_seconds"] for s in ("sft", "dpo")))
    summary = {v: {"seconds": iteration(v), "actual_over_floor": iteration(v) / floor} for v in variants}
    for v in variants[1:]:
        summary[f"ratio_old_over_{v}"] = iteration("old") / iteration(v)
        summary[f"training_ratio_old_over_{v}"] = (
            sum(stages[s]["old"]["seconds_median"] for s in ("sft", "dpo"))
            / sum(stages[s][v]["seconds_median"] for s in ("sft", "dpo")))
    return {
        "profile": profile, "dataset": str(args.dataset), "rows": len(rows), "eval_rows": len(eval_rows), "pairs": len(pairs), "skipped": skipped,
        "dpo_negatives": "self-play (the start model's greedy recommendations)" if self_play
        else "random catalogue titles (the start model is untrained)",
        "repeats": args.repeats, "device": str(models.device()), "threads": torch.get_num_threads(),
        "allocator_keeps_freed_memory": keep_freed_memory(), "start_model": how,
        "stage_configs": {s: dataclasses.asdict(getattr(cfg.sprec, s)) for s in ("sft", "dpo")},
        "variants": {v: {"switches": VARIANTS[v][0], "dtype": VARIANTS[v][1]} for v in variants},
        "cpu": bf16, "peak_gflops": peak, "shape": dataclasses.asdict(shape),
        "stages": stages, "iteration": {"floor_seconds": floor, **summary},
    }


def print_table(res: dict) -> None:
    variants = list(res["variants"])
    print(f"\n{res['profile']}: {res['rows']} rows ({res['pairs']} pairs, {res['skipped']} skipped; DPO negatives: "
          f"{res['dpo_negatives']}), {res['eval_rows']} eval rows, {res['device']}, {res['threads']} threads, "
          f"{res['repeats']} repeats; CPU {res['cpu']['cpu_capability']}, avx512_bf16={res['cpu']['avx512_bf16']}, "
          f"amx_bf16={res['cpu']['amx_bf16']}; matmul peak "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in res["peak_gflops"].items()))
    print(f"start model: {res['start_model']}")
    head = f"{'stage':<11}{'tokens':>8}{'GFLOP':>9}{'floor s':>9}"
    for v in variants:
        head += f"{v + ' s':>{max(12, len(v) + 4)}}{'/floor':>8}"
    head += "".join(f"{'old/' + v:>{max(13, len(v) + 6)}}" for v in variants[1:])
    print(head)
    for name in ("negatives", "eval"):
        s = res["stages"][name]
        print(f"{name:<11}{s['tokens']:>8}{s['flops'] / 1e9:>9.1f}{s['ours']['floor_seconds']:>9.2f}"
              f"{s['ours']['seconds_median']:>12.2f}{s['ours']['actual_over_floor']:>8.1f}"
              f"   (paper-code style {s['paper_code_style']['seconds_median']:.2f} s, x{s['ratio_paper_over_ours']:.2f})")
    for name in ("sft", "dpo"):
        s = res["stages"][name]
        line = f"{name:<11}{s['tokens']:>8}{s['flops'] / 1e9:>9.1f}{s['old']['floor_seconds']:>9.2f}"
        for v in variants:
            line += f"{s[v]['seconds_median']:>{max(12, len(v) + 4)}.2f}{s[v]['actual_over_floor']:>8.1f}"
        line += "".join(f"{'x%.2f' % s['ratio_old_over_' + v]:>{max(13, len(v) + 6)}}" for v in variants[1:])
        print(line)
    it = res["iteration"]
    line = f"{'iteration':<11}{'':>8}{'':>9}{it['floor_seconds']:>9.2f}"
    for v in variants:
        line += f"{it[v]['seconds']:>{max(12, len(v) + 4)}.2f}{it[v]['actual_over_floor']:>8.1f}"
    line += "".join(f"{'x%.2f' % it['ratio_old_over_' + v]:>{max(13, len(v) + 6)}}" for v in variants[1:])
    print(line)
    print("training stages only: " + ", ".join(f"old/{v} x{it['training_ratio_old_over_' + v]:.2f}" for v in variants[1:]))
    for name in ("sft", "dpo"):
        print(f"{name}: largest logged-loss difference from old: " + ", ".join(
            f"{v} {d:.1e}" for v, d in res["stages"][name]["max_loss_difference_vs_old"].items()))
    print("seconds: CPU seconds of this process (1 thread), medians; wall-clock medians in the JSON")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "sprec" / "MovieLens"),
                   help="a folder in the paper's format (default: the paper's MovieLens folder)")
    p.add_argument("--profiles", nargs="+", default=["tiny"])
    p.add_argument("--rows", type=int, default=64, help="self-play rows (the paper: 2,048)")
    p.add_argument("--eval-rows", type=int, default=64, help="evaluation rows (the paper: 1,000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: two lanes share 2 cores best)")
    p.add_argument("--bf16", action="store_true", help="run the bf16 variant even where the CPU lacks native bf16")
    p.add_argument("--start", nargs="*", default=[], metavar="PROFILE=CHECKPOINT",
                   help="start from a trained checkpoint, e.g. tiny=runs/ml-1m-tiny/sft-seed0/stages/sft/model")
    p.add_argument("--tmp", default="/tmp/sprec-bench")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--per-cpu", action="store_true",
                   help="name the JSON after this CPU's capability (sprec_iteration-<profile>-AVX2.json): "
                        "the dry run's estimates prefer it on a CPU of that kind")
    args = p.parse_args(argv)
    args.start = dict(s.split("=", 1) for s in args.start)
    keep_freed_memory()  # for both variants alike (see the module docstring)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for profile in args.profiles:
        res = bench_profile(profile, args)
        res["versions"] = versions()
        res["date"] = time.strftime("%Y-%m-%d %H:%M")
        res["command"] = "python benchmarks/sprec_iteration.py " + " ".join(sys.argv[1:] if argv is None else argv)
        print_table(res)
        cap = f"-{res['cpu']['cpu_capability']}" if args.per_cpu else ""
        path = Path(args.out) / f"sprec_iteration-{profile}{cap}.json"
        path.write_text(json.dumps(res, indent=1))
        print(f"-> {path}")


if __name__ == "__main__":
    main()
