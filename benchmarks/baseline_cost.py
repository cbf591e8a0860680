"""What each baseline stage costs on a CPU, beside SFT and DPO: CPU seconds, real tokens, tokens/s, peak memory.

    OMP_NUM_THREADS=1 python benchmarks/baseline_cost.py                    # 32 rows, 32 eval rows, 3 repeats
    OMP_NUM_THREADS=1 python benchmarks/baseline_cost.py --rows 2 --eval-rows 2 --repeats 1   # checks it runs

The start model is the ``tiny`` profile's randomly initialised one, built as
``benchmarks/sprec_iteration.py`` builds it (``start_model``: the profile's tiny Llama, seed 0, and a
BPE tokenizer trained on the dataset; ``--start CHECKPOINT`` for a trained one), on
``../shared/data/sprec/MovieLens``. Every stage starts from that model and gets the same ``--rows``
training rows: the recipes' own ``training_rows`` (``train_rows = --rows``, drawn with seed 0), and
each runs the code path of its recipe in ``sprec_lib/methods/`` with the tiny profile's settings for
that recipe (its StageConfig: epochs, batch, grad-accum), and the stage seed a run would use
(``runs.stage_seed``):

* ``sft`` (BIGRec): ``trainers.sft`` on ``pipeline.sft_rows``, the ``sft`` section (the shared start's call);
* ``rw``: RW's genre and row weights (``rw.genre_weights``, ``rw.row_weights``), then ``rw.train``
  (trl's SFT trainer with the per-row weighted loss), the ``sft`` section;
* ``dpo``: the ``dpo`` recipe's random negatives (the seeded draw of ``Pipeline.preference_stage``,
  here through ``dmpo.preference_rows``, the same draw), then ``trainers.dpo``;
* ``sdpo``: K = ``sdpo.n_negatives`` random negatives (the same draw), ``trainers.sdpo``;
* ``dmpo``: ``dmpo.preference_rows``, then ``dmpo.train`` (S-DPO's data path, DMPO's loss);
* ``rosepo``: ``rosepo.preference_rows`` (the semantic negatives over the MiniLM catalogue
  embeddings, read from the asset cache as in any run after the first, and the personalised
  smoothing from a SASRec oracle), then ``rosepo.train``. Its negative selection is included in its
  seconds and also reported on its own (``prepare``). The oracle is the SASRec this benchmark
  trained once before the stages (``sasrec.ensure_stage`` is patched to return it: its training is
  the ``sasrec`` row's cost);
* ``sasrec``: ``sasrec.fit`` for ``--sasrec-epochs`` epochs (default 2, the tiny profile's SFT
  epochs; no early stop) over the same rows, validating each epoch on ``--eval-rows`` validation
  rows. A different model: ~0.2M parameters of item ids, not the 6M-parameter LLM, and its "tokens"
  are item positions. The real stage runs up to ``sasrec.epochs`` (200) epochs with early stopping
  and validates on 512 rows;
* ``eval_greedy``: ``evaluation.evaluate`` (grounded: greedy decoding stopped at the closing quote,
  MiniLM embedding of the generations, nearest titles, metrics) on the first ``--eval-rows`` test rows;
* ``eval_d3``: D3's decoding of the same rows (``d3.decode``: trie beam search with ``d3.num_beams``
  beams and the SASRec assistant's probabilities; the trie and the assistant's scores are its ``prepare``).

``prepare`` is each stage's own data work inside its seconds: the negatives, weights, trie, assistant
probabilities (a few ms for random negatives).

Tokens are *real* tokens (no padding) that the stage's LLM processes, summed over the epochs: SFT and
RW, prompt + completion + EOS per row (``sprec_iteration.sft_work``); the preference stages, each
sequence the policy runs as run (prompt + completion + EOS for the chosen and every rejected
completion, so DPO counts the prompt twice, S-DPO and DMPO K + 1 times); the frozen reference's
forward over the same tokens is extra work not counted in tokens. Greedy evaluation: prompt and
generated tokens (``sprec_iteration.generation_work``, the generations re-tokenized); D3: the tokens
fed to the LLM, counted by a forward hook (each prompt once, then one token per running beam per
step). SASRec: its training item positions. ``tokens/s`` = tokens / median CPU seconds.

Seconds are CPU seconds (``time.process_time``) at one thread (``--threads``), medians over
``--repeats``; wall seconds are in the JSON. Each (stage, repeat) runs in a process of its own,
forked from this one after the setup (the start model, the rows, the grounder, the SASRec assistant
built once; ``sprec_lib.cpu.keep_freed_memory()`` applied, as in a run), so the stages start alike,
train the fork's copy of the start model, and do not share allocator state; the order of the stages
flips every repeat. The first-use costs a stage pays in a fresh process are paid by every repeat.

Peak memory (``peak MB``): the stage's peak growth of *private* (anonymous) resident memory in its
forked process, the largest over the repeats. Before each fork, ``malloc_trim(0)`` gives the heap's
free pages back to the kernel (else a stage allocates into memory the setup freed, still resident,
and its growth hides). In the child, the larger of (a) the exact peak RSS (``getrusage`` ``ru_maxrss``:
a forked child's high-water mark starts at its RSS at the fork) less the RSS before the stage and
less the file-backed pages the stage faulted in by its end (shared-library code first touched in
that process, shared with other processes, and never freed: a lower bound), and (b) a 20 ms sampler
of ``RssAnon`` (``sprec_iteration.PeakMemory``'s thread) less its value before the stage. The JSON
also has ``total_rss_growth_mb`` ((a) with the file-backed pages), ``file_backed_growth_mb``, and
``process_peak_mb``, the process's absolute peak RSS (the start model, libraries, the grounder's
MiniLM and the dataset included). ``--no-fork`` runs the stages in this process (on deep copies),
where only the sampled growth is kept, and it undercounts (glibc keeps earlier stages' freed memory).

Writes ``benchmarks/results/baseline_cost-<profile>.json`` with every sample, what it ran on
(``runs.machine``: threads, CPU capability; package versions, date, the command). Timings on a shared
2-core machine where other jobs run are noisy: read the medians and the ratios to SFT, not single
numbers, and not a difference of less than ~20%.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import dataclasses
import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the stages run in forked processes

from benchmarks.sprec_iteration import PeakMemory, Shape, generation_work, lengths, sft_work, start_model, timed  # noqa: E402
from sprec_lib import decoding, evaluation, trainers  # noqa: E402
from sprec_lib.config import run_config  # noqa: E402
from sprec_lib.cpu import keep_freed_memory  # noqa: E402
from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.methods import d3, dmpo, rosepo, rw, sasrec  # noqa: E402
from sprec_lib.pipeline import sft_rows, training_rows  # noqa: E402
from sprec_lib.prompts import prompt  # noqa: E402
from sprec_lib.runs import machine, stage_seed, versions  # noqa: E402

# stage -> what it is (the table's second column)
STAGES = {
    "sft": "BIGRec SFT",
    "rw": "RW: weighted SFT",
    "dpo": "DPO, 1 random negative",
    "sdpo": "S-DPO, K random negatives",
    "dmpo": "DMPO, K random negatives",
    "rosepo": "RosePO: negatives + DPO",
    "sasrec": "SASRec (item-id model)",
    "eval_greedy": "greedy grounded eval",
    "eval_d3": "D3 beam decoding",
}
TRAINED = ("sft", "rw", "dpo", "sdpo", "dmpo", "rosepo")


def rss_parts() -> dict:
    """This process's resident memory now (MB): ``rss``, its ``anon`` (private) and ``file`` (file-backed) parts."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                name, value = line.split(":")
                fields[name] = int(value.split()[0])  # kB
    return {"rss": fields["VmRSS"] / 1024, "anon": fields.get("RssAnon", 0) / 1024,
            "file": fields.get("RssFile", 0) / 1024}


class PeakAnon(PeakMemory):
    """:class:`sprec_iteration.PeakMemory`'s 20 ms sampler, on the anonymous (private) resident memory."""

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_parts()["anon"] * 2**20)
            time.sleep(0.02)


def release_free_memory() -> bool:
    """glibc's ``malloc_trim(0)``: give the heap's free pages back to the kernel, so that a forked stage
    does not allocate into memory the setup freed (resident, so invisible to its growth). True if done."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def preference_tokens(tok, rows: list[dict]) -> tuple[int, int]:
    """Real tokens the policy runs for preference rows (each completion with its prompt, as run) and
    the number of sequences; ``rejected`` one string (DPO) or a list (S-DPO, DMPO, RosePO)."""
    eos = tok.eos_token
    texts = [r["prompt"] + c + eos for r in rows
             for c in [r["chosen"], *([r["rejected"]] if isinstance(r["rejected"], str) else r["rejected"])]]
    return sum(lengths(tok, texts)), len(texts)


def logged_steps(out_dir: Path) -> int | None:
    history = json.loads((out_dir / "log_history.json").read_text())
    return max((h.get("step", 0) for h in history), default=None)


# -- the stages -----------------------------------------------------------------------------------


class Bench:
    """The setup every stage shares (built once, before the forks) and each stage's code path."""

    def __init__(self, args):
        self.args = args
        self.ds = read_sprec_folder(args.dataset)
        self.cfg = run_config(args.profile, [*args.set, f"train_rows={args.rows}"], dataset=str(args.dataset), method="sft")
        self.model, self.tok, self.start_how = start_model(self.ds, self.cfg, args.start)
        torch.set_num_threads(args.threads)  # (a profile's model.torch_threads may have set it)
        self.shape = Shape.of(self.model)
        self.rows = training_rows(self.ds, self.cfg)  # the recipes' rows: train_rows drawn with the run's seed
        self.ecfg = dataclasses.replace(self.cfg.eval, rows=args.eval_rows)
        self.eval_rows = evaluation.eval_rows(self.ds, self.ecfg)
        self.grounder = evaluation.Grounder(self.ds, args.cache_dir)
        # the recipes' helpers read p.ds, p.cfg, p.cache_dir of a Pipeline
        self.p = SimpleNamespace(ds=self.ds, cfg=self.cfg, cache_dir=args.cache_dir)
        self.sasrec_cfg = dataclasses.replace(self.cfg.sasrec, epochs=args.sasrec_epochs, patience=args.sasrec_epochs)
        self.valid = self.ds.valid[: args.eval_rows]
        # Warm-up (first-call allocations and kernel selection), once, before the forks.
        decoding.generate_free(self.model, self.tok, [prompt(s, self.ds.catalogue, self.ds.wording) for s in self.rows[:2]],
                               max_new_tokens=8, batch_size=2, progress=False)
        self.grounder(["warm-up"], 1)
        # D3's assistant and RosePO's oracle: one SASRec, trained as the sasrec stage trains it.
        self.assistant, _ = self.fit_sasrec()

    def fit_sasrec(self):
        return sasrec.fit(self.rows, self.valid, len(self.ds.catalogue), self.sasrec_cfg, stage_seed(self.cfg.seed, "sasrec"),
                          self.cfg.eval.ks, log=lambda m: None, item_genres=self.ds.item_genres(), genres=self.ds.genres)

    def seed(self, stage: str) -> int:
        return stage_seed(self.cfg.seed, stage)

    # Each stage: prepare(stage) -> data (its own data work, inside its seconds), run(stage, data, out, model)
    # -> what the recipe's call returns; work() counts the tokens from both, after the clock stops.
    def prepare(self, stage: str):
        ds, cfg = self.ds, self.cfg
        if stage == "sft":
            return sft_rows(self.rows, ds)
        if stage == "rw":
            weights = rw.row_weights(self.rows, ds.item_genres(), ds.genres, rw.settings(cfg).normalize)
            return [dict(r, weight=w) for r, w in zip(sft_rows(self.rows, ds), weights)]
        if stage == "dpo":  # the dpo recipe's draw (k = 1), its rejected completion a string again
            return [dict(r, rejected=r["rejected"][0]) for r in dmpo.preference_rows(self.p, 1, cfg.dpo.template)]
        if stage == "sdpo":
            return dmpo.preference_rows(self.p, cfg.sdpo.n_negatives, cfg.sdpo.template)
        if stage == "dmpo":
            return dmpo.preference_rows(self.p, cfg.dmpo.stage.n_negatives, cfg.dmpo.stage.template)
        if stage == "rosepo":
            with mock.patch.object(sasrec, "ensure_stage", lambda p: self.assistant):
                return rosepo.preference_rows(self.p, rosepo.settings(cfg))[0]
        if stage == "sasrec":
            return None
        if stage == "eval_greedy":
            return None
        if stage == "eval_d3":
            trie = decoding.TitleTrie.from_catalogue(ds.catalogue, self.tok, ds.wording)
            probs = None
            if cfg.d3.assistant_weight > 0:
                probs = d3.softmax_rows(sasrec.scores(self.assistant, [list(s.history) for s in self.eval_rows]))
            return trie, probs
        raise ValueError(f"unknown stage {stage!r} ({', '.join(STAGES)})")

    def run(self, stage: str, data, out: Path, model):
        cfg, seed = self.cfg, self.seed(stage)
        kw = {"checkpoint_minutes": None}
        if stage == "sft":
            return trainers.sft(model, self.tok, data, cfg.sft, out, seed, **kw)
        if stage == "rw":
            return rw.train(model, self.tok, data, cfg.sft, out, seed, **kw)
        if stage == "dpo":
            return trainers.dpo(model, self.tok, data, cfg.dpo, out, seed, **kw)
        if stage == "sdpo":
            return trainers.sdpo(model, self.tok, data, cfg.sdpo, out, seed, **kw)
        if stage == "dmpo":
            return dmpo.train(model, self.tok, data, cfg.dmpo, out, seed, **kw)
        if stage == "rosepo":
            return rosepo.train(model, self.tok, data, rosepo.settings(cfg).stage, out, seed, **kw)
        if stage == "sasrec":
            return self.fit_sasrec()
        if stage == "eval_greedy":
            return evaluation.evaluate(model, self.tok, self.ds, self.ecfg, self.args.cache_dir, self.grounder)
        if stage == "eval_d3":
            trie, probs = data
            prompts = [prompt(s, self.ds.catalogue, self.ds.wording) for s in self.eval_rows]
            return d3.decode(model, self.tok, prompts, trie, cfg.d3, probs, progress=False)
        raise ValueError(f"unknown stage {stage!r}")

    def work(self, stage: str, data, result, out: Path, fed: int) -> dict:
        """Tokens (and steps) of a finished stage (see the module docstring)."""
        if stage in ("sft", "rw"):
            per_epoch = sft_work(self.tok, data, self.shape, self.cfg.sft.loss_on)["tokens"]
            return {"tokens": round(per_epoch * self.cfg.sft.epochs), "tokens_per_epoch": per_epoch,
                    "epochs": self.cfg.sft.epochs, "sequences": len(data), "steps": logged_steps(out)}
        if stage in TRAINED:
            stage_cfg = {"dpo": self.cfg.dpo, "sdpo": self.cfg.sdpo, "dmpo": self.cfg.dmpo.stage,
                         "rosepo": rosepo.settings(self.cfg).stage}[stage]
            per_epoch, sequences = preference_tokens(self.tok, data)
            out_rows = {"tokens": round(per_epoch * stage_cfg.epochs), "tokens_per_epoch": per_epoch,
                        "epochs": stage_cfg.epochs, "sequences": sequences, "rows": len(data), "steps": logged_steps(out)}
            if stage == "rosepo":
                out_rows["mean_epsilon"] = float(np.mean([r["epsilon"] for r in data]))
            return out_rows
        if stage == "sasrec":
            inputs, _ = sasrec.training_tensors(self.rows, self.sasrec_cfg.max_len)
            _, history = result
            per_epoch = int((inputs > 0).sum())
            return {"tokens": per_epoch * len(history), "tokens_per_epoch": per_epoch, "epochs": len(history),
                    "sequences": len(inputs), "steps": len(history) * math.ceil(len(inputs) / self.sasrec_cfg.batch_size),
                    "validation_rows": len(self.valid), "note": "item positions, not text tokens"}
        if stage == "eval_greedy":
            predictions, _ = result
            prompts = [prompt(s, self.ds.catalogue, self.ds.wording) for s in self.eval_rows]
            w = generation_work(self.tok, prompts, list(predictions["generation"]), self.shape)
            return {"tokens": w["tokens"], "generated_tokens": w["generated_tokens"], "rows": len(prompts)}
        if stage == "eval_d3":
            return {"tokens": fed, "rows": len(self.eval_rows), "num_beams": self.cfg.d3.num_beams,
                    "mean_items_found": float(np.mean([len(t) for t in result])) if result else 0.0}
        raise ValueError(f"unknown stage {stage!r}")

    def measure(self, stage: str, repeat: int, fresh: bool) -> dict:
        """One sample of ``stage``: CPU and wall seconds (prepare + run), memory, tokens."""
        out = Path(tempfile.mkdtemp(prefix=f"{stage}-{repeat}-", dir=self.args.tmp))
        model = self.model if fresh else copy.deepcopy(self.model)  # a forked process trains its own copy
        fed = [0]

        def count(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            fed[0] += int(ids.numel()) if ids is not None else 0

        hook = model.register_forward_pre_hook(count, with_kwargs=True) if stage == "eval_d3" else None
        try:
            before = rss_parts()
            with PeakAnon() as anon:
                data, prep, prep_mb = timed(lambda: self.prepare(stage))
                result, main, run_mb = timed(lambda: self.run(stage, data, out, model))
            after = rss_parts()
        finally:
            if hook is not None:
                hook.remove()
        # peak resident memory of the stage: exact in a forked process (its high-water mark started at
        # its RSS at the fork), else PeakMemory's 20 ms samples
        peak = max(max_rss_mb(), prep_mb, run_mb) if fresh else max(prep_mb, run_mb)
        total = peak - before["rss"]
        file_growth = after["file"] - before["file"]
        # private memory: the sampled anonymous peak, or the exact total less the file pages the stage
        # faulted in (shared-library code; they only grow, so this is a lower bound), the larger
        private = max(anon.mb - before["anon"], total - file_growth if fresh else 0.0)
        sample = {"cpu": prep["cpu"] + main["cpu"], "wall": prep["wall"] + main["wall"], "prepare_cpu": prep["cpu"],
                  "rss_before_mb": before["rss"], "peak_mb": peak, "total_growth_mb": total, "file_growth_mb": file_growth,
                  "anon_sampled_growth_mb": anon.mb - before["anon"], "private_growth_mb": private,
                  **self.work(stage, data, result, out, fed[0])}
        shutil.rmtree(out, ignore_errors=True)
        return sample


def in_forked_process(fn, *args):
    """``fn(*args)`` in a child forked from this process (its return value comes back through a pipe)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        try:
            send.send(("ok", fn(*args)))
        except BaseException:  # noqa: BLE001 - reported to the parent
            send.send(("error", traceback.format_exc()))

    proc = ctx.Process(target=child)
    proc.start()
    send.close()
    try:
        status, value = recv.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the forked stage process died (exit code {proc.exitcode})") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"a stage failed in its process:\n{value}")
    return value


MEMORY_FORK = (
    "peak_mb: the stage's peak growth of private (anonymous) resident memory, the largest over the repeats, in the "
    "stage's forked process: the larger of (a) the exact peak RSS (getrusage ru_maxrss: a forked child's high-water "
    "mark starts at its RSS at the fork) less the RSS before the stage and less the file-backed pages (shared-library "
    "code) the stage faulted in by its end, and (b) the 20 ms samples of RssAnon less its value before the stage. "
    "total_rss_growth_mb: (a) with the file-backed pages; process_peak_mb: the process's absolute peak RSS.")
MEMORY_NO_FORK = ("20 ms samples of RssAnon in this one process, less its value before the stage: freed memory of "
                  "earlier stages is reused (glibc keeps it), so later stages are underestimated")
MEMORY_KEYS = ("rss_before_mb", "peak_mb", "total_growth_mb", "file_growth_mb", "anon_sampled_growth_mb",
               "private_growth_mb")


def summarise(samples: dict[str, list[dict]]) -> dict:
    """Per stage: the medians of the seconds, tokens/s, the memory (the largest of the repeats), the ratio to SFT."""
    stages = {}
    for stage, runs in samples.items():
        cpu = [s["cpu"] for s in runs]
        med = statistics.median(cpu)
        work = {k: v for k, v in runs[0].items() if k not in ("cpu", "wall", "prepare_cpu", *MEMORY_KEYS)}
        stages[stage] = {
            "what": STAGES[stage], **work,
            "seconds_median": med, "seconds": cpu,
            "tokens_per_second": work["tokens"] / med if med > 0 else None,
            "prepare_seconds_median": statistics.median(s["prepare_cpu"] for s in runs),
            "wall_seconds_median": statistics.median(s["wall"] for s in runs), "wall_seconds": [s["wall"] for s in runs],
            "peak_mb": max(s["private_growth_mb"] for s in runs),
            "total_rss_growth_mb": max(s["total_growth_mb"] for s in runs),
            "file_backed_growth_mb": max(s["file_growth_mb"] for s in runs),
            "process_peak_mb": max(s["peak_mb"] for s in runs),
        }
    sft = stages.get("sft", {}).get("seconds_median")
    for entry in stages.values():
        entry["ratio_to_sft_seconds"] = entry["seconds_median"] / sft if sft else None
    return stages


def bench(args) -> dict:
    keep_freed_memory()  # as a run does (sprec_lib.cpu), before the setup: every fork inherits it
    torch.set_num_threads(args.threads)
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    b = Bench(args)
    fork = not args.no_fork
    samples: dict[str, list[dict]] = {s: [] for s in args.stages}
    for r in range(args.repeats):
        for stage in (args.stages if r % 2 == 0 else args.stages[::-1]):
            if fork:
                release_free_memory()
                sample = in_forked_process(b.measure, stage, r, True)
            else:
                sample = b.measure(stage, r, False)
            samples[stage].append(sample)
            print(f"repeat {r + 1}/{args.repeats} {stage:<12} {sample['cpu']:7.2f} CPU s  {sample['tokens']:>7} tokens  "
                  f"+{sample['private_growth_mb']:.0f} MB", flush=True)
    sasrec_params = sum(p.numel() for p in b.assistant.parameters())
    return {
        "profile": args.profile, "dataset": str(args.dataset), "rows": len(b.rows), "eval_rows": len(b.eval_rows),
        "repeats": args.repeats, "isolation": "a forked process per (stage, repeat)" if fork else "none (one process)",
        "start_model": b.start_how, "llm_parameters": sum(p.numel() for p in b.model.parameters()),
        "sasrec_parameters": sasrec_params, "shape": dataclasses.asdict(b.shape),
        "stage_configs": {"sft": dataclasses.asdict(b.cfg.sft), "dpo": dataclasses.asdict(b.cfg.dpo),
                          "sdpo": dataclasses.asdict(b.cfg.sdpo), "dmpo": dataclasses.asdict(b.cfg.dmpo),
                          "rosepo": dataclasses.asdict(b.cfg.rosepo), "sasrec": dataclasses.asdict(b.sasrec_cfg),
                          "d3": dataclasses.asdict(b.cfg.d3), "eval": dataclasses.asdict(b.ecfg)},
        "memory_measure": MEMORY_FORK if fork else MEMORY_NO_FORK,
        "machine": machine(args.threads), "threads": torch.get_num_threads(),
        "cpu": trainers.cpu_bf16_capability(),
        "stages": summarise(samples),
        "samples": samples,
    }


def print_table(res: dict) -> None:
    print(f"\n{res['profile']} on {Path(res['dataset']).name}: {res['rows']} training rows, {res['eval_rows']} eval rows, "
          f"{res['repeats']} repeats, {res['threads']} thread(s), CPU {res['machine']['cpu_capability']}; "
          f"{res['isolation']}")
    print(f"start model: {res['start_model']}")
    print("| stage | what | tokens | CPU s | tokens/s | x SFT | of which prepare s | peak MB | process peak MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in res["stages"].items():
        ratio = f"{s['ratio_to_sft_seconds']:.2f}" if s["ratio_to_sft_seconds"] is not None else "-"
        tps = f"{s['tokens_per_second']:.0f}" if s["tokens_per_second"] is not None else "-"
        print(f"| {name} | {s['what']} | {s['tokens']} | {s['seconds_median']:.2f} | {tps} | {ratio} | "
              f"{s['prepare_seconds_median']:.2f} | {s['peak_mb']:.0f} | {s['process_peak_mb']:.0f} |")
    print("CPU seconds of the stage's process (medians); tokens: real tokens the stage's model processed (see the "
          "docstring); peak MB: the stage's peak growth of private memory; a shared machine: differences under ~20% are noise")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "sprec" / "MovieLens"),
                   help="a folder in the paper's format (default: the paper's MovieLens folder)")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--rows", type=int, default=32, help="training rows, the same for every stage")
    p.add_argument("--eval-rows", type=int, default=32, help="test rows decoded (and SASRec's validation rows)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sasrec-epochs", type=int, default=2, help="SASRec's epochs over the rows (default: tiny's SFT epochs)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--start", default=None, metavar="CHECKPOINT", help="start from a trained checkpoint instead")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config assignments (as sprec train --set)")
    p.add_argument("--no-fork", action="store_true", help="run every stage in this process (memory: sampled only)")
    p.add_argument("--cache-dir", default=None, help="the asset cache (MiniLM, catalogue embeddings); default: sprec's")
    p.add_argument("--tmp", default="/tmp/sprec-bench")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.rows < 1 or args.eval_rows < 1 or args.repeats < 1 or args.sasrec_epochs < 1:
        p.error("--rows, --eval-rows, --repeats and --sasrec-epochs must be >= 1")
    res = bench(args)
    res["versions"] = versions()
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    res["command"] = "OMP_NUM_THREADS=1 python benchmarks/baseline_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print_table(res)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"baseline_cost-{args.profile}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)
    print(f"-> {path}")
    return res


if __name__ == "__main__":
    main()
