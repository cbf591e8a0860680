"""Where the time of one tiny SFT step and one tiny DPO step goes: ``torch.profiler`` around a few
optimizer steps of the library's own trainers, self CPU time sorted into categories.

    python benchmarks/step_profile.py --rows 128 --warmup-steps 2 --steps 6

The start model, the rows and the DPO pairs are built as in ``benchmarks/sprec_iteration.py``
(whose helpers this script imports): the ``tiny`` profile's base model (``models.base_model``, seed 0)
on the MovieLens folder, ``--rows`` training rows sampled with seed 0, random catalogue titles as the
DPO negatives (the start model is untrained). The trainers are ``trainers.make_sft_trainer`` and
``trainers.make_dpo_trainer`` with the ``tiny`` profile's ``cfg.sprec.sft`` / ``cfg.sprec.dpo`` as
they are (fast_head, head_kernel="logits", token_metrics="logged_steps"; DPO shared_prompt=True),
only ``max_steps`` capped at ``--warmup-steps + --steps``. One optimizer step is 16 rows for SFT
(batch 8 x grad-accum 2) and 8 pairs for DPO (batch 2 x grad-accum 4); none of the measured steps
is a logging step (steps 1, 10, 20, ... log, and SFT then also computes entropy and accuracy).

Each stage runs twice on deep copies of the same start model with the same seed, hence the same
batches: once without the profiler (per-step CPU and wall seconds: the step's real cost, and its
ratio to the FLOP floor), once with ``torch.profiler`` (CPU activity, ``record_shapes=False``)
active over the ``--steps`` steps after ``--warmup-steps``. Matmul FLOPs are counted from the model
shape and the collated batches (:func:`step_work`), both as needed (the floor's count) and as run
(padding, and DPO's shared-prompt layout, included). ``--with-flops`` also has the profiler count
them (``with_flops=True``: the two counts agreed exactly, layers and head, in a check run), but not
by default: under it the SFT steps page-faulted their large tensors afresh (about 75,000 minor faults
and up to 1 s of system time a step against none without the profiler), which inflates the head's
share. A step is measured from one ``on_step_end`` to the next: it includes fetching and
collating its micro-batches, forward and backward of each, gradient clipping, AdamW, the scheduler
and ``zero_grad``.

Categories (of the profiled window's wall time; the rows add up to it). Each aten op's *self* time
goes to one category, decided by where it runs (ranges this script opens around the model's layers,
the decoder layers, the final norm, the rotary embedding, the shared-prompt code, and the trainer's
phases) and, in the backward, by the autograd node that runs it and the forward op that made that
node (matched by sequence number):

* matmuls: aten::mm/addmm/bmm/matmul/linear and whatever runs inside them, forward and backward;
  split into the transformer layers and the LM head.
* attention: scaled_dot_product_attention (and softmax) and its backward.
* elementwise & norms: every other op inside the decoder layers, the final norm and the rotary
  embedding (RMSNorm's pow/mean/rsqrt/mul, SiLU, rotary's mul/cat/neg, residual adds, views).
* LM head + loss: the non-matmul ops between the last hidden state and the loss (picking the
  labelled positions, cross_entropy/log_softmax, the logged per-token metrics, the loss itself,
  DPO's sigmoid loss and rewards).
* optimizer: gradient accumulation (AccumulateGrad), gradient clipping, AdamW (fused), the scheduler
  and zero_grad: their aten ops.
* other aten ops: embedding lookup and its backward, the attention-mask building (``create_causal_mask``), the
  shared-prompt plumbing (grouping, KV-cache row selection), the trainer's loss bookkeeping.
* data collation, Python & framework overhead: the window's wall time minus the self time of every
  aten op, plus the aten ops run while collating (so that collation is one row). Its sub-rows:
  collation; the autograd engine's own bookkeeping (self time of its node events); non-aten time
  (Python, and C++ glue between ops) inside the forward, by where (decoder layers, the model's top
  level, the mask, the shared-prompt grouping, the trainer/head/loss code), the backward, and the
  optimizer; the trainer loop outside those.

A profiled op costs more than an unprofiled one (the profiler records every op): the profiled
steps' CPU time against the unprofiled run's shows by how much (in the JSON,
``profiler_inflation``); ops and overhead are inflated alike per op, so the shares lean a little
towards the many small ops. Durations in the trace are wall-clock: on a machine that other jobs share,
a wait for a core lands in whatever was running. ``cpu_over_wall`` says how much of the window the
process actually ran; the "CPU-corrected" matmul GFLOP/s assumes the waits fell evenly. Read shares
and ratios measured in the same run rather than absolute times.

Writes ``benchmarks/results/step_profile-tiny.json``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import functools
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback
from transformers.models.llama import modeling_llama
from transformers.trainer_callback import ProgressCallback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

# the start model, the matmul peak, the FLOPs of a shape: as the iteration benchmark has them
import sprec_iteration as si

from sprec_lib import trainers
from sprec_lib.config import SPRecConfig, run_config
from sprec_lib.cpu import keep_freed_memory
from sprec_lib.data.sprec_format import read_sprec_folder
from sprec_lib.pipeline import sft_rows
from sprec_lib.runs import versions
from sprec_lib.selfplay import negatives_for, preference_rows, sample_rows

CATEGORIES = ("matmul (layers)", "matmul (LM head)", "attention", "elementwise & norms", "LM head + loss",
              "optimizer", "other aten ops", "collation, Python & framework overhead")
PHASES = ("collate", "forward", "backward", "clip_grad", "optimizer", "scheduler_zero_grad")

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::mv", "aten::addmv", "aten::dot", "aten::_addmm_activation"}
FLOP_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}  # the profiler's FLOP formulas
ATTENTION_OPS = {"aten::softmax", "aten::_softmax", "aten::_safe_softmax", "aten::_softmax_backward_data"}
MATMUL_NODES = ("MmBackward", "AddmmBackward", "BmmBackward", "BaddbmmBackward", "MvBackward", "LinearBackward",
                "MatmulBackward", "TBackward")  # TBackward: the linear's weight transpose (its gradient's sum)
# Ops that only make views or allocate (their time is dispatch cost, no arithmetic)
METADATA_OPS = {"aten::as_strided", "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::t", "aten::transpose",
                "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::permute",
                "aten::alias", "aten::detach", "aten::detach_", "aten::resolve_conj", "aten::resolve_neg",
                "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::contiguous", "aten::to",
                "aten::lift_fresh", "aten::split", "aten::chunk", "aten::narrow", "aten::flatten", "aten::numpy_T"}
ATTENTION_NODES = ("ScaledDotProduct", "SoftmaxBackward", "SafeSoftmaxBackward")


def is_aten(name: str) -> bool:
    """An operator (aten and other op namespaces), as opposed to ranges and autograd-engine events."""
    return "::" in name and not name.startswith(("autograd::", "torch::autograd", "phase::", "ctx::",
                                                  "Optimizer.", "profiler::", "ProfilerStep"))


def is_autograd_node(name: str) -> bool:
    return name.startswith(("autograd::engine::evaluate_function", "torch::autograd")) or (
        "Backward" in name and "::" not in name)


# -- instrumentation: named ranges around the trainer's phases and the model's parts ---------------


def annotate(obj, attr: str, label: str):
    """Wrap ``obj.attr`` (a bound method, a module's forward, a module-level function) in a profiler
    range; returns a function that undoes it."""
    fn = getattr(obj, attr)
    had_own = attr in getattr(obj, "__dict__", {})

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    setattr(obj, attr, wrapped)

    def undo():
        if had_own:
            setattr(obj, attr, fn)
        else:
            delattr(obj, attr)

    return undo


def annotate_model(model) -> list:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = base.model  # LlamaModel: embedding, mask, rotary, decoder layers, final norm
    undo = [annotate(inner, "forward", "ctx::layers"), annotate(inner.norm, "forward", "ctx::norm"),
            annotate(inner.rotary_emb, "forward", "ctx::rotary")]
    undo += [annotate(layer, "forward", "ctx::decoder") for layer in inner.layers]
    return undo


def stamp() -> np.ndarray:
    """Wall seconds, CPU seconds (user + system), system seconds, minor page faults of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return np.array([time.perf_counter(), time.process_time(), r.ru_stime, r.ru_minflt], dtype=float)


class StepClock(TrainerCallback):
    """Per-step wall and CPU seconds (``on_step_end`` to ``on_step_end``), phase ranges for the
    optimizer (``on_pre_optimizer_step`` .. ``on_optimizer_step``) and the scheduler + zero_grad
    (.. ``on_step_end``), and the profiler started after ``warmup`` steps, stopped after ``warmup +
    steps``."""

    def __init__(self, warmup: int, steps: int, prof=None):
        self.warmup, self.steps, self.prof = warmup, steps, prof
        self.marks, self.range, self.window = [], None, None

    def _enter(self, label):
        self.range = record_function(label)
        self.range.__enter__()

    def _exit(self):
        if self.range is not None:
            self.range.__exit__(None, None, None)
            self.range = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks.append(stamp())

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._enter("phase::optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._exit()
        self._enter("phase::scheduler_zero_grad")

    def on_step_end(self, args, state, control, **kwargs):
        self._exit()
        now = stamp()
        self.marks.append(now)
        if state.global_step == self.warmup + self.steps:
            if self.prof is not None:
                self.window = now - self.window  # (before stop's own work)
                self.prof.stop()
            control.should_training_stop = True
        if state.global_step == self.warmup and self.prof is not None:
            self.prof.start()
            self.window = stamp()


def build_trainer(stage, model, tok, data, stage_cfg, out_dir):
    make = trainers.make_sft_trainer if stage == "sft" else trainers.make_dpo_trainer
    trainer = make(copy.deepcopy(model), tok, data, stage_cfg, out_dir, 0)
    trainer.pop_callback(ProgressCallback)
    batches = []

    get = trainer.get_batch_samples

    def get_batch_samples(*args, **kwargs):
        with record_function("phase::collate"):
            out = get(*args, **kwargs)
        batches.append([{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "completion_mask")}
                        for b in out[0]])
        return out

    trainer.get_batch_samples = get_batch_samples
    annotate(trainer, "compute_loss", "phase::forward")
    annotate(trainer.accelerator, "backward", "phase::backward")
    annotate(trainer, "_clip_grad_norm", "phase::clip_grad")
    for m in (trainer.model, getattr(trainer, "ref_model", None)):
        if m is not None:
            annotate_model(m)
    return trainer, batches


# -- the needed work of the measured steps (as sprec_iteration's sft_work / dpo_work) --------------


def step_work(stage: str, micro_batches: list[dict], shape: si.Shape) -> dict:
    """The work of one optimizer step from its collated micro-batches.

    Needed (as ``sprec_iteration.sft_work`` / ``dpo_work``): real tokens only; SFT's loss on every
    token but the first; DPO's prompt once per pair, the head on the completion tokens, a reference
    forward; split into the linear layers + head (matmuls) and causal attention.
    As run (the matmul FLOPs the implementation executes): every position of the padded batches
    through the layers (SFT: ``[B, T]``; DPO with shared prompts: the distinct prompts padded to the
    longest, then every row's completion padded to the longest, as ``trainers._shared_prompt_rows``),
    the head on the labelled positions; for the layers and the head (3 forwards' worth for the
    trained policy, 1 for the reference)."""
    tokens = head = n2 = padded = run_tokens = 0
    for b in micro_batches:
        mask = b["attention_mask"]
        lens = mask.sum(1)
        padded += b["input_ids"].numel()
        if stage == "sft":
            tokens += int(lens.sum())
            head += int((lens - 1).sum())
            n2 += int((lens * lens).sum())
            run_tokens += b["input_ids"].numel()
        else:
            cm = b["completion_mask"]
            half = cm.shape[0] // 2
            p_all = cm.int().argmax(1)  # the first completion token's index = the prompt length
            p = p_all[:half]
            c, r = cm[:half].sum(1), cm[half:].sum(1)
            tokens += int((p + c + r).sum())
            head += int((c + r).sum())
            n2 += int(((p + c) ** 2 + (p + r) ** 2 - p * p).sum())
            ids = b["input_ids"].tolist()
            groups = {tuple(ids[i][: int(p_all[i])]) for i in range(len(ids))}
            if len(groups) < len(ids):  # shared prompts (trainers._shared_prompt_rows)
                run_tokens += len(groups) * int(p_all.max()) + len(ids) * int((lens - p_all).max())
            else:
                run_tokens += b["input_ids"].numel()
    factor = shape.train_factor + (0 if stage == "sft" else 1)
    linear = factor * shape.forward(tokens, head, 0)
    attention = factor * 2 * shape.layers * shape.hidden * n2
    run_layers = factor * 2 * shape.layer_params * run_tokens
    run_head = factor * 2 * shape.hidden * shape.vocab * head
    return {"tokens": tokens, "tokens_padded_batches": padded, "tokens_as_run": run_tokens, "head_positions": head,
            "flops": linear + attention, "linear_flops": linear, "attention_flops": attention,
            "run_matmul_flops_layers": run_layers, "run_matmul_flops_head": run_head}


# -- the trace, sorted -----------------------------------------------------------------------------


def classify(events) -> dict:
    """Self time (microseconds) per category, per phase, per op; executed matmul FLOPs; see the
    module docstring for the rules."""
    roots = [e for e in events if e.cpu_parent is None]
    # Forward context of each autograd sequence number: where the op that made the node ran.
    fwd_ctx: dict[int, str] = {}
    cat_us = collections.Counter()
    cat_ops = collections.defaultdict(collections.Counter)
    phase_total = collections.Counter()  # wall time in each phase range
    phase_aten = collections.Counter()  # aten self time inside each phase
    overhead = collections.Counter()  # non-aten self time, by where
    flops = collections.Counter()
    n_ops = n_metadata = 0
    total_self = metadata_us = 0.0

    # Depth-first, in time order, so that a forward op is seen before the backward node it made.
    stack = [(e, {"phase": None, "where": None, "node": None, "seq": -1, "mm": False, "attn": False})
             for e in sorted(roots, key=lambda e: e.time_range.start, reverse=True)]
    while stack:
        e, ctx = stack.pop()
        name = e.name
        ctx = dict(ctx)
        if name.startswith("phase::"):
            ctx["phase"] = name[7:]
            phase_total[ctx["phase"]] += e.cpu_time_total
        elif name.startswith("Optimizer.zero_grad"):
            ctx["phase"] = ctx["phase"] or "scheduler_zero_grad"
        elif name.startswith("ctx::"):
            label = name[5:]
            if label == "layers" or ctx["where"] in (None, "shared"):
                ctx["where"] = label
            elif ctx["where"] == "layers":
                ctx["where"] = label  # decoder / norm / rotary inside the layers
        elif name.startswith("autograd::engine::evaluate_function: "):
            ctx["node"], ctx["seq"] = name.split(": ", 1)[1], e.sequence_nr
        aten = is_aten(name)
        if aten:
            ctx["mm"] = ctx["mm"] or name in MATMUL_OPS
            ctx["attn"] = ctx["attn"] or name in ATTENTION_OPS or "scaled_dot_product" in name
            # An op records the sequence number the next autograd node will get; the op that makes
            # node N is the last (in time) to record N, so the last one wins.
            if ctx["node"] is None and ctx["phase"] != "backward" and e.sequence_nr >= 0:
                fwd_ctx[e.sequence_nr] = _where(ctx)
        for child in sorted(e.cpu_children, key=lambda c: c.time_range.start, reverse=True):
            stack.append((child, ctx))

        us = e.self_cpu_time_total
        total_self += us
        if name in FLOP_OPS:
            key = "matmul (LM head)" if _head_matmul(ctx, fwd_ctx) else "matmul (layers)"
            flops[key] += e.flops or 0
        if not aten:
            overhead[_overhead_part(name, ctx)] += us
            continue
        n_ops += 1
        if ctx["phase"]:
            phase_aten[ctx["phase"]] += us
        cat = _category(name, ctx, fwd_ctx)
        cat_us[cat] += us
        cat_ops[cat][name + (f" <- {ctx['node']}" if ctx["node"] else "")] += us
        if name in METADATA_OPS:
            metadata_us += us
            n_metadata += 1
    return {"category_us": cat_us, "category_ops": cat_ops, "phase_total_us": phase_total,
            "phase_aten_us": phase_aten, "overhead_us": overhead, "matmul_flops": flops, "aten_ops": n_ops,
            "self_us_total": total_self, "metadata_ops": n_metadata, "metadata_us": metadata_us}


def _overhead_part(name, ctx) -> str:
    phase = ctx["phase"]
    if phase == "collate":
        return "collation"
    if is_autograd_node(name):
        return "autograd engine bookkeeping"
    if phase == "forward":
        return {"shared": "Python in forward: shared-prompt grouping",
                "loss": "Python in forward: trainer, head & loss",
                "mask": "Python in forward: attention-mask building",
                "decoder": "Python in forward: decoder layers (HF)",
                }.get(_where(ctx), "Python in forward: LlamaModel top level, norm, rotary (HF)")
    if phase == "backward":
        return "non-aten time in backward"
    if phase:
        return "Python in clipping, optimizer, scheduler"
    return "trainer loop & callbacks (outside every range)"


def _where(ctx) -> str:
    """Where a forward op runs: layers / decoder / norm / rotary / shared (the shared-prompt code
    outside the layers) / loss (in compute_loss, outside the model's layers) / outside."""
    return ctx["where"] or ("loss" if ctx["phase"] == "forward" else "outside")


def _head_matmul(ctx, fwd_ctx) -> bool:
    where = fwd_ctx.get(ctx["seq"]) if ctx["node"] else _where(ctx)
    return where not in ("layers", "decoder", "norm", "rotary")


def _category(name, ctx, fwd_ctx) -> str:
    phase, node = ctx["phase"], ctx["node"]
    if phase == "collate":
        return "collation, Python & framework overhead"
    if (phase in ("clip_grad", "optimizer", "scheduler_zero_grad") or name.startswith(("aten::_foreach_", "aten::_fused_adam"))
            or (node and "AccumulateGrad" in node)):
        return "optimizer"
    where = fwd_ctx.get(ctx["seq"], "outside") if node else _where(ctx)
    if ctx["mm"] or (node and node.startswith(MATMUL_NODES)):
        return "matmul (layers)" if where in ("layers", "decoder", "norm", "rotary") else "matmul (LM head)"
    if ctx["attn"] or (node and node.startswith(ATTENTION_NODES)):
        return "attention"
    if where in ("decoder", "norm", "rotary"):
        return "elementwise & norms"
    if where in ("layers", "mask", "shared", "outside"):
        return "other aten ops"  # embedding, masks; shared-prompt plumbing; loss bookkeeping
    return "LM head + loss"  # "loss": in compute_loss, outside the model's layers


# -- one stage -------------------------------------------------------------------------------------


def run_stage(stage, model, tok, data, stage_cfg, shape, args, tmp: Path) -> dict:
    total = args.warmup_steps + args.steps
    stage_cfg = dataclasses.replace(stage_cfg, max_steps=total)
    out = {"stage_config": dataclasses.asdict(stage_cfg)}

    # (module-level ranges, for both runs alike)
    undo = [annotate(trainers, "_shared_prompt_rows", "ctx::shared"),
            annotate(modeling_llama, "create_causal_mask", "ctx::mask")]
    try:
        # 1. without the profiler: the steps' real cost
        trainer, batches_plain = build_trainer(stage, model, tok, data, stage_cfg, tmp / f"{stage}-plain")
        clock = StepClock(args.warmup_steps, args.steps)
        trainer.add_callback(clock)
        trainer.train()
        plain = np.diff(np.array(clock.marks), axis=0)[args.warmup_steps:]  # [steps, (wall, cpu, sys, minflt)]
        del trainer

        # 2. with the profiler, same seed, same batches
        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=False, with_flops=args.with_flops)
        trainer, batches = build_trainer(stage, model, tok, data, stage_cfg, tmp / f"{stage}-profiled")
        clock = StepClock(args.warmup_steps, args.steps, prof)
        trainer.add_callback(clock)
        trainer.train()
    finally:
        for u in undo:
            u()
    shared_calls = getattr(trainer.policy_head, "shared_calls", None)
    del trainer
    profiled = np.diff(np.array(clock.marks), axis=0)[args.warmup_steps:]
    measured = batches[args.warmup_steps:total]
    same = all(torch.equal(a["input_ids"], b["input_ids"]) for s, t in zip(batches_plain[args.warmup_steps:total], measured)
               for a, b in zip(s, t))

    t0 = time.process_time()
    res = classify(prof.events())
    analysis_seconds = time.process_time() - t0
    wall_us, cpu_us = clock.window[0] * 1e6, clock.window[1] * 1e6
    sys_s, faults = clock.window[2], clock.window[3]
    k = args.steps
    work = [step_work(stage, b, shape) for b in measured]
    work_sum = {key: sum(w[key] for w in work) for key in work[0]}

    aten_us = sum(res["category_us"].values())
    cat_us = dict(res["category_us"])
    overhead = dict(res["overhead_us"])
    key = "trainer loop & callbacks (outside every range)"
    overhead[key] = overhead.get(key, 0) + wall_us - res["self_us_total"]
    cat_us["collation, Python & framework overhead"] = (cat_us.get("collation, Python & framework overhead", 0)
                                                         + sum(overhead.values()))
    collate_aten = res["category_us"].get("collation, Python & framework overhead", 0)
    overhead["collation"] = overhead.get("collation", 0) + collate_aten

    peak = args.peak_gflops
    mm_us = cat_us.get("matmul (layers)", 0) + cat_us.get("matmul (LM head)", 0)
    run_flops = {"matmul (layers)": work_sum["run_matmul_flops_layers"], "matmul (LM head)": work_sum["run_matmul_flops_head"]}
    mm_flops = sum(run_flops.values())
    cpu_over_wall = cpu_us / wall_us
    categories = {}
    for c in CATEGORIES:
        us = cat_us.get(c, 0.0)
        categories[c] = {"ms_per_step": us / k / 1e3, "share_of_wall": us / wall_us,
                         "top_ops_ms_per_step": {n: v / k / 1e3 for n, v in res["category_ops"][c].most_common(8)}}
    categories["collation, Python & framework overhead"]["parts_ms_per_step"] = {
        n: v / k / 1e3 for n, v in sorted(overhead.items(), key=lambda kv: -kv[1])}
    phases = {p: {"ms_per_step": res["phase_total_us"].get(p, 0) / k / 1e3,
                  "share_of_wall": res["phase_total_us"].get(p, 0) / wall_us,
                  "non_aten_share_of_phase": 1 - res["phase_aten_us"].get(p, 0) / res["phase_total_us"][p]
                  if res["phase_total_us"].get(p) else None} for p in PHASES}
    rest = wall_us - sum(res["phase_total_us"].get(p, 0) for p in PHASES)
    phases["trainer loop (outside the phases)"] = {"ms_per_step": rest / k / 1e3, "share_of_wall": rest / wall_us}

    floor_s = work_sum["flops"] / (peak * 1e9)
    plain_cpu, plain_wall = plain[:, 1].sum(), plain[:, 0].sum()
    out.update({
        "steps_measured": k, "warmup_steps": args.warmup_steps, "same_batches_in_both_runs": same,
        "rows_per_step": stage_cfg.batch_size * stage_cfg.grad_accum,
        "shared_prompt_calls": shared_calls,
        "work_per_step": {key: v / k for key, v in work_sum.items()},
        "padding_waste": 1 - work_sum["tokens"] / work_sum["tokens_padded_batches"] if stage == "sft" else None,
        "unprofiled": {"cpu_seconds_per_step": plain_cpu / k, "wall_seconds_per_step": plain_wall / k,
                       "cpu_seconds": plain[:, 1].tolist(), "wall_seconds": plain[:, 0].tolist(),
                       "system_seconds": plain[:, 2].tolist(), "minor_faults": plain[:, 3].tolist(),
                       "system_share_of_cpu": plain[:, 2].sum() / plain_cpu, "minor_faults_per_step": plain[:, 3].sum() / k,
                       "floor_seconds_per_step": floor_s / k, "actual_over_floor": plain_cpu / floor_s},
        "profiled": {"cpu_seconds_per_step": cpu_us / 1e6 / k, "wall_seconds_per_step": wall_us / 1e6 / k,
                     "cpu_seconds": profiled[:, 1].tolist(), "wall_seconds": profiled[:, 0].tolist(),
                     "system_seconds": profiled[:, 2].tolist(), "minor_faults": profiled[:, 3].tolist(),
                     "system_share_of_cpu": sys_s / (cpu_us / 1e6), "minor_faults_per_step": faults / k,
                     "cpu_over_wall": cpu_over_wall, "aten_ops_per_step": res["aten_ops"] / k,
                     "view_and_alloc_ops_per_step": res["metadata_ops"] / k,
                     "view_and_alloc_ops_ms_per_step": res["metadata_us"] / k / 1e3,
                     "aten_self_share_of_wall": aten_us / wall_us, "analysis_cpu_seconds": analysis_seconds},
        "profiler_inflation": {"cpu_profiled_over_unprofiled": (cpu_us / 1e6) / plain_cpu,
                               "extra_us_per_aten_op": (cpu_us - plain_cpu * 1e6) / res["aten_ops"]},
        "categories": categories,
        "phases": phases,
        "matmul": {
            "executed_gflop_per_step": mm_flops / k / 1e9,
            "executed_gflop_per_step_by_part": {p: v / k / 1e9 for p, v in run_flops.items()},
            "profiler_counted_gflop_per_step_by_part": ({p: v / k / 1e9 for p, v in res["matmul_flops"].items()}
                                                        if args.with_flops else None),
            "needed_linear_gflop_per_step": work_sum["linear_flops"] / k / 1e9,
            "executed_over_needed": mm_flops / work_sum["linear_flops"],
            "achieved_gflops_wall": mm_flops / mm_us / 1e3 if mm_us else None,
            "achieved_gflops_cpu_corrected": mm_flops / (mm_us * cpu_over_wall) / 1e3 if mm_us else None,
            "by_part": {p: {"gflops_cpu_corrected": run_flops[p] / (cat_us[p] * cpu_over_wall) / 1e3}
                        for p in ("matmul (layers)", "matmul (LM head)") if cat_us.get(p)},
            "peak_gflops": peak,
        },
    })
    out["matmul"]["fraction_of_peak_cpu_corrected"] = (out["matmul"]["achieved_gflops_cpu_corrected"] or 0) / peak
    return out


def mean_tree(trees: list):
    """The element-wise mean of dicts of one structure (numbers averaged; other leaves: the first's)."""
    first = trees[0]
    if isinstance(first, dict):  # (keys missing from some: the mean of those that have them)
        keys = dict.fromkeys(k for t in trees for k in t)
        return {k: mean_tree([t[k] for t in trees if k in t]) for k in keys}
    if all(t == first for t in trees):
        return first
    if isinstance(first, (int, float)) and not isinstance(first, bool) and all(
            isinstance(t, (int, float)) for t in trees):
        return sum(trees) / len(trees)
    return first


def summarise(runs: list[dict]) -> dict:
    """Means over the repeats, each category's and phase's share range, and every repeat as measured."""
    out = mean_tree(runs)
    out["same_batches_in_both_runs"] = all(r["same_batches_in_both_runs"] for r in runs)
    for group in ("categories", "phases"):
        for name, entry in out[group].items():
            shares = [r[group][name]["share_of_wall"] for r in runs]
            entry["share_of_wall_min"], entry["share_of_wall_max"] = min(shares), max(shares)
    for c in CATEGORIES:  # the top ops: summed over the repeats, then the largest
        total = collections.Counter()
        for r in runs:
            total.update(r["categories"][c]["top_ops_ms_per_step"])
        out["categories"][c]["top_ops_ms_per_step"] = {n: v / len(runs) for n, v in total.most_common(8)}
    part = collections.Counter()
    for r in runs:
        part.update(r["categories"][CATEGORIES[-1]]["parts_ms_per_step"])
    out["categories"][CATEGORIES[-1]]["parts_ms_per_step"] = {n: v / len(runs) for n, v in part.most_common()}
    out["repeats"] = runs
    return out


def print_tables(res: dict) -> None:
    st = res["stages"]
    W = 42

    def share(entry):
        return (f"{100 * entry['share_of_wall']:>6.1f}% ({100 * entry['share_of_wall_min']:>4.1f}-"
                f"{100 * entry['share_of_wall_max']:>4.1f})")

    print(f"\n{res['profile']}: {res['threads']} thread(s), fp32 matmul peak {res['peak_gflops']:.0f} GFLOP/s "
          f"(measured in this run, CPU time); {res['rows']} rows sampled; "
          + "; ".join(f"{s}: {st[s]['rows_per_step']} rows/step, {st[s]['steps_measured']} steps after "
                      f"{st[s]['warmup_steps']} warm-up, x{res['repeats']}" for s in st))
    print("Self time of aten ops by category, the rest as overhead; ms per step (profiled wall clock), share of the\n"
          "step's wall time: mean of the repeats (min-max)")
    print(f"{'category':<{W}}" + "".join(f"{s + ' ms':>10}{'share (range)':>22}" for s in st))
    for c in CATEGORIES:
        print(f"{c:<{W}}" + "".join(f"{st[s]['categories'][c]['ms_per_step']:>10.1f}{share(st[s]['categories'][c]):>22}"
                                    for s in st))
    parts = list(dict.fromkeys(p for s in st for p in st[s]["categories"][CATEGORIES[-1]]["parts_ms_per_step"]))
    for p in parts:
        line = f"{'  - ' + p:<{W}}"
        for s in st:
            ms = st[s]["categories"][CATEGORIES[-1]]["parts_ms_per_step"].get(p, 0)
            line += f"{ms:>10.1f}{100 * ms / 1e3 / st[s]['profiled']['wall_seconds_per_step']:>7.1f}%{'':>14}"
        print(line)
    print(f"{'step (profiled wall)':<{W}}" + "".join(
        f"{1e3 * st[s]['profiled']['wall_seconds_per_step']:>10.1f}{'100.0%':>8}{'':>14}" for s in st))
    print("\nLargest ops of the non-matmul categories (ms/step self time; '<- Node': run by that autograd node):")
    for s in st:
        for c in CATEGORIES[2:-1]:
            top = list(st[s]["categories"][c]["top_ops_ms_per_step"].items())[:3]
            print(f"  {s} {c}: " + ", ".join(f"{n} {v:.1f}" for n, v in top))
    print("\nBy phase (ms/step, share of the step; in brackets: the phase's non-aten share):")
    for p in (*PHASES, "trainer loop (outside the phases)"):
        line = f"{p:<{W}}"
        for s in st:
            e = st[s]["phases"][p]
            na = e.get("non_aten_share_of_phase")
            line += f"{e['ms_per_step']:>10.1f}{100 * e['share_of_wall']:>7.1f}%" + (f" ({100 * na:>3.0f}%)" if na is not None else "       ") + " " * 7
        print(line)
    print("\nMatmuls, the floor, the measurement:")
    for s in st:
        m, u, pr, rep = st[s]["matmul"], st[s]["unprofiled"], st[s]["profiled"], st[s]["repeats"]
        print(f"{s}: matmuls executed {m['executed_gflop_per_step']:.2f} GFLOP/step (x{m['executed_over_needed']:.2f} "
              f"the needed {m['needed_linear_gflop_per_step']:.2f}); achieved {m['achieved_gflops_wall']:.1f} GFLOP/s "
              f"in wall time, {m['achieved_gflops_cpu_corrected']:.1f} CPU-corrected = "
              f"{100 * m['fraction_of_peak_cpu_corrected']:.0f}% of peak (layers "
              + ", LM head ".join(f"{v['gflops_cpu_corrected']:.0f}" for v in m["by_part"].values()) + ")")
        if m["profiler_counted_gflop_per_step_by_part"]:
            print("    (counted by the profiler: " + ", ".join(
                f"{p} {v:.2f} against {m['executed_gflop_per_step_by_part'][p]:.2f} from the batch shapes"
                for p, v in m["profiler_counted_gflop_per_step_by_part"].items()) + ")")
        print(f"    unprofiled step {u['cpu_seconds_per_step']:.3f} s CPU ({u['wall_seconds_per_step']:.3f} s wall); floor "
              f"{u['floor_seconds_per_step']:.3f} s; actual/floor " + ", ".join(
                  f"x{r['unprofiled']['actual_over_floor']:.2f}" for r in rep) + " (repeats)")
        print(f"    profiled step {pr['cpu_seconds_per_step']:.3f} s CPU: x" + ", x".join(
            f"{r['profiler_inflation']['cpu_profiled_over_unprofiled']:.2f}" for r in rep)
              + f" the unprofiled; {pr['aten_ops_per_step']:.0f} aten ops/step ({pr['view_and_alloc_ops_per_step']:.0f} "
              f"view/alloc-only, {pr['view_and_alloc_ops_ms_per_step']:.1f} ms); CPU/wall " + ", ".join(
                  f"{r['profiled']['cpu_over_wall']:.2f}" for r in rep)
              + f"; system time {100 * pr['system_share_of_cpu']:.0f}% of CPU; same batches: {st[s]['same_batches_in_both_runs']}"
              + (f"; padding {100 * st[s]['padding_waste']:.0f}% of the tokens run" if st[s]["padding_waste"] is not None else ""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(HERE.parents[1] / "shared" / "data" / "sprec" / "MovieLens"))
    p.add_argument("--rows", type=int, default=128, help="training rows sampled (SFT: 16 a step; DPO: 8 pairs a step)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps measured per stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="profile each stage this many times (means, share ranges)")
    p.add_argument("--with-flops", action="store_true",
                   help="also have the profiler count the matmul FLOPs (a check of the count from the batch shapes; "
                        "it distorts the timings: SFT steps page-fault their large tensors afresh under it)")
    p.add_argument("--stages", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    p.add_argument("--tmp", default="/tmp/sprec-step-profile")
    p.add_argument("--out", default=str(HERE / "results" / "step_profile-tiny.json"))
    args = p.parse_args(argv)
    keep_freed_memory()  # as sprec_iteration.py
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    ds = read_sprec_folder(args.dataset)
    cfg = run_config("tiny", dataset=args.dataset, method="sprec")
    model, tok, how = si.start_model(ds, cfg, None)
    torch.set_num_threads(args.threads)  # (base_model may set the profile's own)
    shape = si.Shape.of(model)
    rng = np.random.default_rng(0)
    rows = sample_rows(ds.train, args.rows, rng)
    negs = negatives_for(rows, ds, SPRecConfig(negatives="random"), rng)
    pairs, skipped = preference_rows(rows, negs, ds, 1)
    data = {"sft": sft_rows(rows, ds), "dpo": pairs}
    args.peak_gflops = si.matmul_peak(torch.float32)

    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    stages = {}
    try:
        runs = {stage: [] for stage in args.stages}
        for r in range(args.repeats):  # SFT, DPO, SFT, DPO, ...: each repeat sees the machine's load of its time
            for stage in args.stages:
                runs[stage].append(run_stage(stage, model, tok, data[stage], getattr(cfg.sprec, stage), shape, args,
                                             tmp / str(r)))
        stages = {stage: summarise(rs) for stage, rs in runs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    res = {
        "profile": "tiny", "dataset": args.dataset, "repeats": args.repeats, "rows": len(rows), "pairs": len(pairs), "skipped": skipped,
        "dpo_negatives": "random catalogue titles (the start model is untrained)", "start_model": how,
        "threads": torch.get_num_threads(), "allocator_keeps_freed_memory": keep_freed_memory(),
        "peak_gflops": args.peak_gflops, "shape": dataclasses.asdict(shape),
        "profiler": {"activities": ["CPU"], "record_shapes": False, "with_flops": args.with_flops},
        "stages": stages, "versions": versions(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"), "wall_seconds": time.perf_counter() - started,
        "command": "python benchmarks/step_profile.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "note": ("Run niced on a 2-core machine shared with other jobs (at higher priority): trace durations "
                 "are wall-clock and include waits for a core; read shares and same-run ratios."),
    }
    print_tables(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"-> {args.out}  ({res['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
