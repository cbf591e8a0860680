"""The training stages on trl 1.16: domain pretraining, SFT, DPO and Softmax-DPO (S-DPO).

Each stage function takes a model, its tokenizer, rows of text and a
:class:`~sprec_lib.config.StageConfig`, runs trl's trainer (the Hugging Face ``Trainer`` loop does
the optimisation), writes the trainer's ``log_history`` to ``out_dir/log_history.json`` and
returns the trained model in eval mode, with the trainer (and its optimizer state) dropped. The
``make_*_trainer`` functions build the trainer without training it, for tests and notebooks that
want to look inside (collated batches, reference log-probs).

* :func:`pretrain`: plain causal-LM training on text (the ``tiny`` profile's domain pretraining,
  ours: the paper starts from a pretrained Llama), ``SFTTrainer`` with packing.
* :func:`sft`: supervised fine-tuning on prompt/completion rows (BIGRec's SFT, SPRec's SFT step).
* :func:`dpo`: DPO with the sigmoid loss (SPRec's DPO step: the chosen completion is the
  target, the rejected one the model's own earlier recommendation).
* :func:`sdpo`: S-DPO with ``K`` rejected completions per prompt, :class:`SDPOTrainer`.

Choices shared by all stages (:func:`training_args`):

* The ``StageConfig`` fields map one to one onto trl's config. trl 1.x defaults to bf16 and
  gradient checkpointing; without CUDA both are turned off (checkpointing recomputes every forward;
  bf16 autocast was emulated, and slow, on CPUs without native bf16: see ``dtype`` below) and
  ``use_cpu=True``. On CUDA: bf16 mixed precision if the GPU supports it, and trl's gradient
  checkpointing (memory for the paper's 1B model).
* Checkpoints inside a stage: every ``checkpoint_minutes`` of training (:class:`CheckpointEvery`)
  the trainer saves ``out_dir/checkpoint-<step>`` (model, optimizer, scheduler, RNG states; only the
  latest is kept), and :func:`_train` resumes from the latest one it finds there, so a stage killed
  after an hour loses at most ``checkpoint_minutes``. The checkpoints are deleted when the stage
  finishes: the run folder saves the returned model itself. A time interval rather than a step
  interval, because a step costs far more on our CPU than on a GPU. Resuming is exact: the trainer
  restores the RNG states and skips the batches already seen (``tests/test_trainers.py`` compares
  a resumed stage with an uninterrupted one).
* Epoch snapshots (``StageConfig.save_epochs``, off by default): :class:`EpochSnapshots` saves the
  model at the end of every epoch but the last into ``out_dir/epoch<N>/`` (as the stage's own model,
  with a checksum record), so that one run of E epochs also gives the models after fewer; they stay
  when the stage finishes, and a stage resumed from a checkpoint keeps those already saved. They are
  not the models of shorter runs: the learning-rate schedule spans the whole stage (see the class).
* Reference model of DPO and S-DPO: the model the stage starts from (the SFT model). For a
  full-parameter model (``tiny``) it is a frozen deep copy made here, unless ``ref_model`` is
  given (trl would otherwise reload it from ``config.name_or_path``, which an in-memory model does
  not have). For a PEFT model that already carries its trained adapter, trl copies the
  ``"default"`` adapter into a frozen ``"ref"`` adapter; we delete it after training so that
  saving the model saves the trained adapter only.
* DPO and S-DPO train without dropout (trl's ``disable_dropout``, also the default of the trl
  version the paper used); the dropout rates are put back before the model is returned.
* trl patches ``model.forward`` with a fused LM head (log-probs without the full logits). The
  patch is undone before a stage returns (and before a deep copy is made): a deep copy of a patched
  model would keep calling the *original* model's forward through the patch's closure.

Speed switches (issue 15; each keeps a way back to trl's stock path, and ``tests/test_trainers.py``
shows the same loss and gradients either way):

* ``StageConfig.fast_head`` (default True): :class:`FastHead` replaces trl's patch by
  :func:`add_lm_head`, which runs the LM head only at the positions whose label is not -100 (trl's
  own kernel, ``ChunkedLogProbFunction``). trl does that on Triton devices only; on CPU it scores
  every position, prompt and padding included, though in DPO only about 6% of positions are
  completion tokens. Used by :class:`FastSFTTrainer` (pretraining and SFT), :class:`FastDPOTrainer`
  (DPO) and :class:`SDPOTrainer` (S-DPO, and DMPO on it), for the policy and the reference. False:
  trl's head, untouched. Measured on the micro model: the loss bit for bit, every gradient bit for
  bit but the tied embedding/head matrix's (summed in another order: within 1e-6 of its largest).
* ``StageConfig.head_kernel`` (default ``"logits"``; with ``fast_head``, on CPU): the head's
  log-probs from the labelled positions' full logits and torch's ``cross_entropy``
  (:func:`_logits_head`): trl's chunked kernel recomputes its tiles in the backward and makes many
  passes over them, 2.5x slower for the tiny profile's head. ``"chunked"``: trl's kernel. Measured:
  every gradient within 1e-6 of its largest, as the test requires of ``fast_head``.
* ``StageConfig.shared_prompt`` (default False; DPO and S-DPO, with ``fast_head``): each distinct
  prompt of a batch runs once and its completions run against its cached keys and values
  (:func:`_shared_prompt_rows`), for the policy and the reference: the prompt is about half of the
  tokens DPO runs. Not bit for bit (other batch shapes, another attention layout): log-probs within
  5e-7, gradients within 3e-6 of their largest on the micro model; hence off by default.
* ``StageConfig.token_metrics`` (default ``"logged_steps"``): :class:`FastSFTTrainer` computes trl's
  entropy and token accuracy, which only feed the logs, on the steps whose log line is written;
  ``"every_step"`` is trl's way. The losses and weights are bit for bit the same.
* ``ModelConfig.dtype`` (default ``"float32"``) -> :func:`resolve_dtype` -> the ``dtype`` argument
  of every stage function: ``"bfloat16"`` trains under bf16 autocast on CPU (the weights stay fp32);
  ``"auto"`` picks it where the CPU has native bf16 and a bf16 matmul measured faster
  (:func:`cpu_bf16_capability`). Not the default: its effect on the metrics is unmeasured.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import re
import shutil
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import DynamicCache, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.data.data_collator import DataCollatorMixin
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.data_utils import common_prefix_length
from trl.models.utils import disable_gradient_checkpointing
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, FusedCausalLMOutput, pad, use_adapter

from . import models
from .config import StageConfig
from .distributed import is_main
from .losses import sdpo_loss
from .runs import (CHECKPOINT_MINUTES, StageInterrupted, clear_stage_record, mark_stage_finished, snapshot_dir,
                   stage_snapshots)

# trl tokenizes a stage's rows with ``datasets.map``, a few seconds with a progress bar per pass;
# the trainer's own bar (steps, loss) is the one worth watching, and the per-pass bars flood logs
# and notebook pages.
datasets.disable_progress_bars()


def training_args(config_cls, cfg: StageConfig, out_dir: str | Path, seed: int, dtype: str = "float32", **extra):
    """trl's ``SFTConfig``/``DPOConfig`` from a :class:`StageConfig` (see the module docstring).

    ``dtype`` (:func:`resolve_dtype`): ``"bfloat16"`` trains under bf16 autocast on CPU too; on CUDA
    bf16 is used wherever the GPU supports it, as before."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16' (resolve 'auto' with resolve_dtype), got {dtype!r}")
    cuda = torch.cuda.is_available()
    return config_cls(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.scheduler,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        seed=seed,
        data_seed=seed,
        report_to="none",
        save_strategy="no",  # CheckpointEvery decides when to save
        save_total_limit=1,
        dataloader_num_workers=0,
        disable_tqdm=False,
        bf16=(cuda and torch.cuda.is_bf16_supported()) or (not cuda and dtype == "bfloat16"),
        activation_checkpointing=cuda,  # trl's `gradient_checkpointing`, renamed in transformers 5
        use_cpu=not cuda,
        **extra,
    )


def _unpatch_forward(model) -> None:
    """Undo trl's fused-LM-head patch (and accelerate's autocast wrapper) on ``model.forward``."""
    modules = [model, model.get_base_model()] if is_peft_model(model) else [model]
    for module in modules:
        module.__dict__.pop("forward", None)
        module.__dict__.pop("_original_forward", None)


def _frozen_copy(model):
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


# -- the LM head where the loss needs it; bf16 where the CPU has it ------------------------------

# Config attributes that make trl's head scale or cap the logits; a model with any of them keeps
# trl's head (none of the Llama-architecture models of the profiles has one).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling", "output_router_logits")


# The "logits" head kernel builds a [rows, vocab] fp32 matrix (and autograd keeps its softmax): at
# most this many elements (1 GiB), else the chunked kernel runs.
_LOGITS_BUDGET = 2**28


def _logits_head(hidden, weight, bias, targets, outputs: tuple[str, ...]):
    """trl's per-token fields (``ChunkedLogProbFunction``'s order: log-probs, entropy,
    log-sum-of-squared-probs, mean logit, is-top-1) from the full ``[rows, vocab]`` logits and torch's
    ``cross_entropy``: one matmul fewer than the chunked kernel (which recomputes its tiles in the
    backward) and fewer passes over the tiles; on CPU about 2.5x faster for the tiny profile's head.
    Only the log-probs carry gradients (trl's trainers detach the others, which feed their logs)."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    log_probs = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    entropy = log_sum_sq_probs = mean_logits = is_top1 = None
    with torch.no_grad():
        z = logits.detach()
        if "entropy" in outputs or "log_sum_sq_probs" in outputs:
            log_p = z.log_softmax(-1)
            if "entropy" in outputs:
                entropy = -(log_p.exp() * log_p).sum(-1)
            if "log_sum_sq_probs" in outputs:
                log_sum_sq_probs = torch.logsumexp(2 * log_p, -1)
        if "mean_logits" in outputs:
            mean_logits = z.mean(-1)
        if "is_top1" in outputs:
            is_top1 = z.argmax(-1) == targets  # argmax: the first maximum, as trl's kernel
    return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1


class _HeadSettings:
    """What :func:`add_lm_head`'s forward computes: ``outputs`` (trl's per-token fields) and
    ``compact`` (score the labelled positions only). A trainer may change ``outputs`` between calls;
    ``placeholders`` are fields returned as zeros so that trl's metric code still runs.
    ``shared_prompt``: rows that share a prompt run it once (:func:`_shared_prompt_rows`);
    ``shared_calls`` counts the calls that did. ``kernel``: ``"chunked"`` (trl's) or ``"logits"``
    (:func:`_logits_head`, with ``compact``)."""

    def __init__(self, outputs: tuple[str, ...], compact: bool, shared_prompt: bool = False, kernel: str = "chunked"):
        if kernel not in ("chunked", "logits"):
            raise ValueError(f"head kernel must be 'chunked' or 'logits', got {kernel!r}")
        self.outputs, self.compact, self.placeholders = tuple(outputs), compact, ()
        self.shared_prompt, self.shared_calls, self.kernel = shared_prompt, 0, kernel


def _shared_prompt_rows(model, input_ids, attention_mask, labels):
    """The hidden states that predict the labelled tokens of a batch whose rows share prompts (DPO's
    ``[chosen; rejected]``, S-DPO's ``K + 1`` blocks), with each distinct prompt run once.

    A row's prompt is its tokens before the first labelled one. The distinct prompts run as one
    right-padded batch that keeps its keys and values (``DynamicCache``); each row's completion then
    runs against its prompt's cache, selected per row (differentiably: the gradients of every row
    that shares a prompt flow back into it), at positions ``P_i, P_i + 1, ...`` (``position_ids``),
    the cache's padding masked out. The first completion token is predicted from the prompt's last
    hidden state. Returns ``(hidden [M, H], targets [M], mask [N, T - 1])`` with the ``M`` labelled
    positions in the row-major order of ``mask``, as :func:`add_lm_head` wants them; or None where the
    batch does not have this shape (left padding, a row without label, no two rows with one prompt),
    and the caller runs every row whole.
    """
    n, t = input_ids.shape
    shifted = labels[:, 1:]
    mask = shifted != -100
    if attention_mask is None or t < 2 or not mask.any(1).all():
        return None
    arange = torch.arange(t, device=input_ids.device)
    lengths = attention_mask.sum(1)
    if not torch.equal(attention_mask.bool(), arange < lengths[:, None]):  # right padding only
        return None
    prompt_len = mask.int().argmax(1) + 1  # the first labelled token's index
    if (mask & (arange[:-1] >= (lengths - 1)[:, None])).any():  # a label on padding
        return None
    ids, plens = input_ids.tolist(), prompt_len.tolist()
    groups: dict[tuple, int] = {}
    group = torch.tensor([groups.setdefault(tuple(ids[i][: plens[i]]), len(groups)) for i in range(n)],
                         device=input_ids.device)
    if len(groups) == n:
        return None
    first = torch.full((len(groups),), n, device=input_ids.device).scatter_reduce(
        0, group, torch.arange(n, device=input_ids.device), reduce="amin")
    p_max = int(prompt_len.max())
    prompt_mask = (arange[:p_max] < prompt_len[first][:, None]).long()
    cache = DynamicCache(config=model.config)  # filled by the prompt's forward
    prompt = model.base_model(input_ids=input_ids[first, :p_max], attention_mask=prompt_mask, cache=cache, use_cache=True)
    cache.batch_select_indices(group)
    comp_len = lengths - prompt_len
    c_max = int(comp_len.max())
    cols = torch.arange(c_max, device=input_ids.device)
    at = (prompt_len[:, None] + cols).clamp(max=t - 1)  # a row's completion tokens, right-padded
    completion = model.base_model(
        input_ids=input_ids.gather(1, at),
        attention_mask=torch.cat([prompt_mask[group], (cols < comp_len[:, None]).long()], 1),
        position_ids=prompt_len[:, None] + cols,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    last = prompt.last_hidden_state[group, prompt_len - 1]  # predicts each row's first completion token
    hidden = torch.cat([last[:, None], completion[:, :-1]], 1)  # column j predicts completion token j
    shifted_at = (prompt_len[:, None] - 1 + cols).clamp(max=t - 2)  # its column in ``shifted``
    valid = (cols < comp_len[:, None]) & mask.gather(1, shifted_at)
    return hidden[valid], shifted.gather(1, shifted_at)[valid], mask


def head_supported(model) -> bool:
    """Whether :func:`add_lm_head` can stand in for trl's head on ``model`` (no logit scaling,
    soft-capping or MoE router loss; a plain ``get_output_embeddings()`` linear head)."""
    base = model.get_base_model() if is_peft_model(model) else model
    text_config = base.config.get_text_config()
    if text_config is not base.config or any(getattr(text_config, a, None) for a in _LOGIT_TRANSFORMS):
        return False
    return isinstance(base.get_output_embeddings(), torch.nn.Linear)


def add_lm_head(model, outputs: tuple[str, ...] = ("log_probs",), compact: bool = True,
                shared_prompt: bool = False, kernel: str = "chunked") -> _HeadSettings:
    """Replace trl's fused-LM-head patch on ``model`` (``trl.trainer.utils.add_fused_lm_head``) by
    one that projects through the LM head only the positions whose label is not ``-100``, on any
    device (trl does that on Triton devices only, ``compact = _use_triton(...)``; on CPU it scores
    every position, prompt and padding included, and masks afterwards). The per-token fields are
    trl's (by its ``ChunkedLogProbFunction``, or ``kernel="logits"``), scattered back to
    ``[batch, seq_len - 1]`` with zeros elsewhere, in trl's ``FusedCausalLMOutput``. ``compact=False`` scores every position
    as trl does on CPU (it only lets a trainer choose ``outputs`` per call). ``shared_prompt`` (with
    ``compact``): rows that share a prompt run it once (:func:`_shared_prompt_rows`; batches of
    another shape, or with other model inputs than ``input_ids`` and ``attention_mask``, run whole).
    ``kernel="logits"`` (with ``compact``, on CPU): the labelled positions' logits at once and
    torch's ``cross_entropy`` (:func:`_logits_head`) instead of trl's chunked kernel, unless that
    matrix would exceed ``_LOGITS_BUDGET`` elements.
    Without ``fused_lm_head=True``, and with pre-shifted ``shift_labels``, trl's own forward runs.
    Returns the settings the forward reads at every call. Undone by :func:`_unpatch_forward`.
    """
    base = model.get_base_model() if is_peft_model(model) else model
    if not head_supported(base):
        raise ValueError(f"{type(base).__name__}: its logits are scaled or capped; keep trl's head")
    stock = base.__dict__.get("forward")  # trl's patch, if the trainer added it
    if stock is None:
        raise ValueError("add_lm_head replaces trl's fused-LM-head patch, which this model does not carry")
    settings = _HeadSettings(outputs, compact, shared_prompt and compact, kernel)

    @functools.wraps(type(base).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or shift_labels is not None:
            return stock(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                         num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        head = self.get_output_embeddings()
        requested = tuple(dict.fromkeys(("log_probs", *settings.outputs)))
        shared = None
        if settings.shared_prompt and not args and {k for k, v in kwargs.items() if v is not None} <= {
                "input_ids", "attention_mask", "use_cache"}:
            shared = _shared_prompt_rows(self, kwargs.get("input_ids"), kwargs.get("attention_mask"), labels)
        if shared is not None:
            settings.shared_calls += 1
            rows, targets, mask = (x.to(head.weight.device) for x in shared)
        else:
            hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
            labels = labels[:, 1:]
            hidden, labels = hidden.to(head.weight.device), labels.to(head.weight.device)
            mask = labels != -100
            if settings.compact:
                rows, targets = hidden[mask], labels[mask]
            else:
                rows, targets = hidden.reshape(-1, hidden.size(-1)), labels.clamp(min=0).reshape(-1)
        if (settings.kernel == "logits" and settings.compact and rows.device.type == "cpu"
                and rows.shape[0] * head.weight.shape[0] <= _LOGITS_BUDGET):
            per_token = _logits_head(rows, head.weight, head.bias, targets, requested)
        else:
            per_token = ChunkedLogProbFunction.apply(rows, head.weight, head.bias, targets, 1.0,
                                                     _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, requested)
        if settings.compact:
            # masked_scatter keeps the output connected to the graph even when no label is valid (as trl)
            per_token = [None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token]
        else:
            per_token = [None if x is None else x.view(mask.shape).masked_fill(~mask, 0) for x in per_token]
        fields = dict(zip(("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"), per_token))
        for name in settings.placeholders:
            if fields[name] is None:
                fields[name] = torch.zeros(mask.shape, dtype=torch.bool if name == "is_top1" else torch.float32,
                                           device=mask.device)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-fields["log_probs"].sum() / count, label_mask=mask, **fields)

    base.forward = forward.__get__(base)
    return settings


class FastHead:
    """Mixin for trl's ``SFTTrainer`` and ``DPOTrainer``: after trl's ``__init__`` patched the
    policy (and the reference) with its fused LM head, :func:`add_lm_head` replaces the patch, so
    that the head runs only where the loss reads (``fast_head=True``). ``head_outputs``: the
    per-token fields the policy's head computes (trl's choice unless a subclass needs fewer).
    ``fast_head=False``: trl's head, untouched. A model :func:`head_supported` refuses keeps trl's.
    ``shared_prompt`` (preference trainers, with ``fast_head``): the policy and the reference run
    each distinct prompt of a batch once (:func:`_shared_prompt_rows`). ``head_kernel`` (with
    ``fast_head``): ``"chunked"`` (trl's kernel) or ``"logits"`` (:func:`_logits_head`).
    """

    def head_outputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __init__(self, *args, fast_head: bool = True, shared_prompt: bool = False, head_kernel: str = "logits",
                 **kwargs):  # (StageConfig's defaults, for trainers built without a StageConfig)
        super().__init__(*args, **kwargs)
        self.fast_head = bool(fast_head) and head_supported(self.model)
        self.shared_prompt = self.fast_head and bool(shared_prompt)
        self.policy_head = self.ref_head = None
        if self.fast_head:
            self.policy_head = add_lm_head(self.model, self.head_outputs(), shared_prompt=self.shared_prompt,
                                           kernel=head_kernel)
            if getattr(self, "ref_model", None) is not None:
                self.ref_head = add_lm_head(self.ref_model, ("log_probs",), shared_prompt=self.shared_prompt,
                                            kernel=head_kernel)


def cpu_bf16_capability() -> dict:
    """Whether this CPU computes bf16 natively, and how fast: the ISA flags (``avx512_bf16``,
    ``amx_bf16`` in ``/proc/cpuinfo``), oneDNN's own check, torch's capability string, and a
    512 x 512 matmul timed in fp32 and bf16 (GFLOP/s in CPU time, so that other processes on the
    machine do not count: median of 5, at the current thread count)."""
    import time as _time

    from .cpu import cpu_identity

    flags = set(cpu_identity()["isa"])
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False

    def gflops(dtype, n=512, reps=8):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(5):
            t0 = _time.process_time()
            for _ in range(reps):
                a @ b
            times.append((_time.process_time() - t0) / reps)
        return 2 * n**3 / max(sorted(times)[2], 1e-9) / 1e9

    fp32, bf16 = gflops(torch.float32), gflops(torch.bfloat16)
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "onednn_bf16": onednn,
            "threads": torch.get_num_threads(), "matmul_gflops": {"float32": fp32, "bfloat16": bf16},
            "bf16_speedup": bf16 / fp32}


@functools.cache
def _bf16_capability() -> dict:
    return cpu_bf16_capability()


def _native_bf16(cap: dict) -> bool:
    """Whether :func:`cpu_bf16_capability`'s reading says the CPU computes bf16 natively."""
    return cap["onednn_bf16"] and (cap["avx512_bf16"] or cap["amx_bf16"])


def slow_bf16_warning(dtype: str) -> str | None:
    """A warning when ``dtype`` (resolved) is bf16 on a CPU that has no native bf16: there autocast
    emulates it, and a bf16 matmul can run at a few percent of fp32's speed (on an AVX2 EPYC,
    0.02x), so the run takes many times its estimate. None on CUDA, for fp32, or with native bf16."""
    if dtype != "bfloat16" or torch.cuda.is_available():
        return None
    cap = _bf16_capability()
    if _native_bf16(cap):
        return None
    return (f"training dtype bfloat16 on a CPU without native bf16 ({cap['cpu_capability']}): a bf16 matmul runs at "
            f"{cap['bf16_speedup']:.2f}x fp32's speed here, so the run will take many times its estimate; "
            "--set model.dtype=float32 (or auto) trains in fp32 (another run: its config differs)")


@functools.cache
def _auto_dtype() -> str:
    cap = _bf16_capability()
    return "bfloat16" if _native_bf16(cap) and cap["bf16_speedup"] >= 1.5 else "float32"


def resolve_dtype(dtype: str) -> str:
    """``ModelConfig.dtype`` -> the training dtype: ``"float32"`` or ``"bfloat16"`` (autocast).
    ``"auto"``: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX, and oneDNN uses it) and a
    bf16 matmul measured at least 1.5x faster than fp32 (:func:`cpu_bf16_capability`, once per
    process), else fp32. On CUDA the ``bf16`` flag decides, as before: ``"float32"`` is returned."""
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    if torch.cuda.is_available():
        return "float32"
    return _auto_dtype() if dtype == "auto" else dtype


class CheckpointEvery(TrainerCallback):
    """Make the trainer save a checkpoint at the end of the first step after every ``minutes``, and
    at the end of the step during which SIGTERM or SIGINT arrived (:attr:`stop_signal`; then the
    training stops too, so a run killed at minute 9 loses one step, not 9 minutes).

    Under ``accelerate launch`` every process must save at the same step (saving synchronises
    them), so rank 0's clock and signal decide and the decision is broadcast."""

    def __init__(self, minutes: float):
        self.seconds, self.last = minutes * 60, time.monotonic()
        self.stop_signal: int | None = None  # the signal this process got
        self.stopped = False  # the stop every process agreed on (rank 0's signal, broadcast)

    def on_step_end(self, args, state, control, **kwargs):
        due = time.monotonic() - self.last >= self.seconds
        stop = self.stop_signal is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flags = torch.tensor([float(due), float(stop)], device=args.device)
            torch.distributed.broadcast(flags, src=0)
            due, stop = bool(flags[0].item()), bool(flags[1].item())
        if due or stop:
            control.should_save, self.last = True, time.monotonic()
        if stop:
            control.should_training_stop = self.stopped = True


class EpochSnapshots(TrainerCallback):
    """``StageConfig.save_epochs``: at the end of every epoch but the stage's last, save the model
    and its tokenizer to ``out_dir/epoch<N>/model`` (:func:`sprec_lib.models.save`, the format of a
    stage's model: a full model, or a LoRA model's adapter) and then record its files' sizes and
    sha256 (:func:`sprec_lib.runs.mark_stage_finished`, as a finished stage's ``DONE``), which
    :func:`sprec_lib.runs.verify_stage` checks before the snapshot is evaluated or copied. A
    snapshot saved again (a stage resumed from a checkpoint before that epoch's end, or restarted)
    loses its record first and gets a new one after its model.

    "The last epoch" is the one that ends at the stage's last step (``max_steps``: with a fractional
    ``epochs``, or ``StageConfig.max_steps``, the last epoch may be partial); its model is the stage's
    own. An epoch cut short by a stop (SIGTERM: :class:`CheckpointEvery`) is not an epoch's end.
    A stage resumed from a checkpoint written at the very end of an epoch (before the snapshot was
    saved: a kill in between) starts from that epoch's model, and saves its snapshot then.

    Fidelity: the snapshot after epoch N of an E-epoch stage is not the model an N-epoch stage
    would give. The learning-rate schedule spans the E epochs: after epoch 1 of 2 the linear schedule
    has decayed only halfway (a 1-epoch run ends at 0), and warmup was counted against E epochs.
    Choosing the epoch count from snapshots is early stopping's reading of "N epochs", and the
    choice must say so where it is recorded.

    Under ``accelerate launch`` the main process saves; the others go on training."""

    def __init__(self, out_dir: str | Path, log=print):
        self.out_dir, self.log = Path(out_dir), log

    @staticmethod
    def epoch_end(state) -> int | None:
        """N when the trainer's state is at the end of epoch N and the stage goes on, else None."""
        epoch = state.epoch or 0.0
        n = round(epoch)
        if n < 1 or abs(epoch - n) > 1e-9 or state.global_step >= state.max_steps:
            return None
        return n

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0 or not is_main():
            return
        n = self.epoch_end(state)  # resumed at an epoch's very end: the model is that epoch's
        if n is not None and n not in stage_snapshots(self.out_dir):
            self.save(n, model, processing_class, state)
        missing = [k for k in range(1, int(state.epoch or 0) + 1) if k not in stage_snapshots(self.out_dir)
                   and k != n and k < state.num_train_epochs]
        if missing:
            self.log(f"{self.out_dir.name}: resumed after the end of epoch(s) {missing}, whose snapshot is missing "
                     "and cannot be made again from here (train the stage from its start to have it)")

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        n = self.epoch_end(state)
        if n is not None and is_main():
            self.save(n, model, processing_class, state)

    def save(self, n: int, model, tokenizer, state) -> Path:
        folder = snapshot_dir(self.out_dir, n)
        clear_stage_record(folder)  # the record goes first: the model is about to change
        extra = {}
        if is_peft_model(model) and "ref" in model.peft_config:  # DPO's frozen reference adapter (trl's): not saved
            extra["selected_adapters"] = ["default"]
        models.save(model, tokenizer, folder / "model", **extra)
        mark_stage_finished(folder, epoch=n, of_epochs=state.num_train_epochs, global_step=state.global_step,
                            max_steps=state.max_steps)
        return folder


@contextmanager
def _save_on_signals(callback: CheckpointEvery):
    """While the block runs, SIGTERM and SIGINT ask ``callback`` to save and stop at the end of the
    step; a second signal stops at once (as without this). Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def ask(signum, frame):
        if callback.stop_signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        callback.stop_signal = signum

    for sig in saved:
        signal.signal(sig, ask)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class _StageProgress(ProgressCallback):
    """The trainer's progress bar, labelled with the stage (``pretrain 120/400``)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.label)


def verify_checkpoint(path: str | Path) -> str | None:
    """What is wrong with the trainer checkpoint ``path``, or None when it loads: ``trainer_state.json``
    parses with a ``global_step``; every ``*.safetensors`` opens (its header covers the file, so a
    truncated one fails) and lists its tensors; ``optimizer.pt``, ``scheduler.pt`` and the
    ``rng_state*.pth`` are present and load as the trainer loads them (``torch.load`` with
    ``weights_only=True``, numpy's RNG types allowed). A checkpoint that passed stays trusted in this
    process while its files keep their sizes and modification times."""
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals

    path = Path(path)
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "no trainer_state.json (cut short while saving)"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"trainer_state.json does not parse ({e})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        signature = tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError as e:
        return f"unreadable ({e})"
    if _VERIFIED_CHECKPOINTS.get(str(path.resolve())) == signature:
        return None
    weights = [p for p in files if p.suffix == ".safetensors"]
    if not weights:
        return "no model weights (*.safetensors)"
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key).get_shape()
        except Exception as e:  # safetensors raises its own error type (and OSError)
            return f"{w.name} does not load ({type(e).__name__}: {e})"
    pickles = ([path / "optimizer.pt", path / "scheduler.pt"] + (sorted(path.glob("rng_state*.pth")) or [path / "rng_state.pth"])
               + sorted(path.glob("scaler.pt")))  # the gradient scaler's state, saved with fp16 only
    for p in pickles:
        if not p.is_file():
            return f"no {p.name}"
        try:
            with safe_globals():
                torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated zip, a bad pickle, ...
            return f"{p.name} does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    _VERIFIED_CHECKPOINTS[str(path.resolve())] = signature
    return None


_VERIFIED_CHECKPOINTS: dict[str, tuple] = {}


def last_checkpoint(out_dir: str | Path, log=print) -> Path | None:
    """The latest ``checkpoint-<step>`` in ``out_dir`` that verifies (:func:`verify_checkpoint`),
    or None. A checkpoint cut short while saving (no ``trainer_state.json``: the trainer writes it
    last) or one that does not load is deleted, with a line to ``log`` saying why and what the
    stage falls back to (an earlier checkpoint, or the stage's start), so that no rerun trips on it
    again. (Deleted, not renamed: the trainer's checkpoint rotation counts any ``checkpoint-<N>*``
    folder, and would delete a fresh checkpoint in favour of a renamed corrupt one.)"""
    steps = sorted(((int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*")
                    if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()), reverse=True)
    for i, (_, path) in enumerate(steps):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        shutil.rmtree(path, ignore_errors=True)
        later = next((p for _, p in steps[i + 1:] if verify_checkpoint(p) is None), None)
        log(f"{path.name} is unusable ({problem}); " + ("could not delete it" if path.exists() else "deleted it")
            + "; falling back to " + (later.name if later else "the stage's start"))
    return None


def _train(trainer, out_dir: str | Path, checkpoint_minutes: float | None = CHECKPOINT_MINUTES,
           save_epochs: bool = False):
    """Train (resuming from the latest checkpoint in ``out_dir``), write ``log_history.json``, delete
    the checkpoints, and return the model alone (eval mode, trainer dropped). ``save_epochs``
    (``StageConfig.save_epochs``): keep the model of every epoch's end but the last
    (:class:`EpochSnapshots`)."""
    from .distributed import on_main

    out_dir = Path(out_dir)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_StageProgress(out_dir.name))
    if save_epochs:
        trainer.add_callback(EpochSnapshots(out_dir))
    checkpoints = CheckpointEvery(checkpoint_minutes) if checkpoint_minutes is not None else None
    # Under accelerate launch the main process checks (and may delete) the checkpoints; every
    # process resumes from the one it chose.
    resume = on_main(last_checkpoint, out_dir)
    if checkpoints is None:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    else:
        trainer.add_callback(checkpoints)
        with _save_on_signals(checkpoints):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if checkpoints.stopped:  # every process, whichever got the signal
            saved = on_main(last_checkpoint, out_dir)
            name = signal.Signals(checkpoints.stop_signal).name if checkpoints.stop_signal else "a signal on the main process"
            raise StageInterrupted(f"{out_dir}: {name} during training; "
                                   f"saved {saved.name if saved else 'no checkpoint'}; run the same command to resume")
    on_main(_finish_stage_folder, out_dir, trainer.state.log_history, share=False)
    return _release(trainer)


def _finish_stage_folder(out_dir: Path, log_history: list) -> None:
    """The end of a stage, on the main process: its losses written, its checkpoints deleted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "log_history.json").write_text(json.dumps(log_history, indent=1) + "\n")
    for checkpoint in out_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


def _release(trainer):
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(trainer, DPOTrainer) and trainer.ref_model is None and is_peft_model(model):
        if "ref" in model.peft_config:
            model.delete_adapter("ref")  # the frozen copy trl added; keep the trained adapter only
    _unpatch_forward(model)
    for module, p in getattr(trainer, "dropout_to_restore", {}).items():
        module.p = p  # e.g. LoRA's dropout for a later SFT stage on this model
    trainer.accelerator.free_memory()  # drops the accelerator's references to the optimizer and models
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    if isinstance(trainer, DPOTrainer):
        trainer.ref_model = None
    del trainer
    gc.collect()
    return model.eval()


# -- pretraining and SFT ------------------------------------------------------------------------


def make_pretrain_trainer(model, tokenizer, texts: list[str], cfg: StageConfig, out_dir, seed: int,
                          dtype: str = "float32") -> SFTTrainer:
    """Causal-LM training on ``texts`` (loss on every token), packed into ``cfg.max_length`` blocks.

    trl appends EOS to every text. ``packing_strategy="bfd_split"``: best-fit-decreasing packing
    keeps each text whole in one block (position ids restart at each text and attention stays within
    it, so a text is seen as at inference, from position 0); a text longer than a block is split
    rather than truncated. ``cfg.fast_head`` and ``cfg.token_metrics``: :class:`FastSFTTrainer`.
    """
    _unpatch_forward(model)
    args = training_args(SFTConfig, cfg, out_dir, seed, dtype, packing=True, packing_strategy="bfd_split")
    dataset = Dataset.from_dict({"text": list(texts)})
    return FastSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          fast_head=cfg.fast_head, head_kernel=cfg.head_kernel, token_metrics=cfg.token_metrics)


def pretrain(model, tokenizer, texts: list[str], cfg: StageConfig, out_dir, seed: int,
             checkpoint_minutes: float | None = CHECKPOINT_MINUTES, dtype: str = "float32"):
    return _train(make_pretrain_trainer(model, tokenizer, texts, cfg, out_dir, seed, dtype), out_dir, checkpoint_minutes,
                  save_epochs=cfg.save_epochs)


def make_sft_trainer(
    model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, eval_rows: list[dict] | None = None,
    dtype: str = "float32",
) -> SFTTrainer:
    """SFT on ``{"prompt", "completion"}`` rows; trl appends EOS to the completion.

    ``cfg.loss_on="all"``: loss on prompt and completion tokens, as the paper's public code (its
    ``train/sft.py`` trains a causal LM on the whole formatted text). ``"completion"``: on the
    completion only (trl's ``completion_only_loss``). With ``eval_rows`` the eval loss is logged
    every epoch. ``cfg.fast_head`` and ``cfg.token_metrics``: :class:`FastSFTTrainer`; ``dtype``:
    :func:`training_args`.
    """
    if cfg.loss_on not in ("all", "completion"):
        raise ValueError(f"StageConfig.loss_on must be 'all' or 'completion', got {cfg.loss_on!r}")
    _unpatch_forward(model)
    extra = {"completion_only_loss": cfg.loss_on == "completion"}
    if eval_rows:
        extra["eval_strategy"] = "epoch"
    args = training_args(SFTConfig, cfg, out_dir, seed, dtype, **extra)
    return FastSFTTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(rows, ("prompt", "completion")),
        eval_dataset=_dataset(eval_rows, ("prompt", "completion")) if eval_rows else None,
        processing_class=tokenizer,
        fast_head=cfg.fast_head,
        head_kernel=cfg.head_kernel,
        token_metrics=cfg.token_metrics,
    )


def sft(model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, eval_rows: list[dict] | None = None,
        checkpoint_minutes: float | None = CHECKPOINT_MINUTES, dtype: str = "float32"):
    return _train(make_sft_trainer(model, tokenizer, rows, cfg, out_dir, seed, eval_rows, dtype), out_dir,
                  checkpoint_minutes, save_epochs=cfg.save_epochs)


class FastSFTTrainer(FastHead, SFTTrainer):
    """trl's ``SFTTrainer`` with :class:`FastHead` (``fast_head``: the head on the labelled tokens
    only: the completion with ``loss_on="completion"``, every non-padding token with ``"all"``) and
    ``token_metrics``.

    trl computes the entropy and top-1 accuracy of every scored token at every step, for its logs
    only (``entropy``, ``mean_token_accuracy``): on CPU that is two extra passes over every
    ``[tokens, vocab]`` tile. ``token_metrics="logged_steps"`` computes them on the steps whose log
    line is written (the first, and every ``logging_steps``-th), so a logged value is that step's
    rather than the mean over the steps since the last log; evaluation always computes them.
    ``"every_step"``: trl's behaviour. The loss and the gradients do not depend on the choice (the
    head returns zeros in their place, and the values trl appends for the skipped steps are dropped).
    """

    def head_outputs(self) -> tuple[str, ...]:
        return ("log_probs", "entropy", "is_top1")  # trl's: is_top1 feeds mean_token_accuracy

    def __init__(self, *args, token_metrics: str = "every_step", **kwargs):
        if token_metrics not in ("every_step", "logged_steps"):
            raise ValueError(f"token_metrics must be 'every_step' or 'logged_steps', got {token_metrics!r}")
        super().__init__(*args, **kwargs)
        self.token_metrics = token_metrics
        if token_metrics == "logged_steps" and self.policy_head is None and head_supported(self.model):
            # trl's head computes the metrics at every call; ours, scoring every position as trl's, can skip them
            self.policy_head = add_lm_head(self.model, self.head_outputs(), compact=False)

    def token_metrics_due(self) -> bool:
        """Whether the step being computed logs the token metrics (always under ``"every_step"``)."""
        args = self.args
        if self.token_metrics == "every_step" or self.policy_head is None or not self.model.training:
            return True
        if str(getattr(args.logging_strategy, "value", args.logging_strategy)) != "steps" or args.logging_steps < 1:
            return True  # logs at epoch ends or at a fraction of the run: keep trl's way
        step = self.state.global_step + 1  # the optimizer step these micro-batches belong to
        return (args.logging_first_step and step == 1) or step % int(args.logging_steps) == 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.token_metrics_due():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        head, metrics = self.policy_head, self._metrics["train"]
        kept = {key: len(metrics.get(key, ())) for key in ("entropy", "mean_token_accuracy")}
        head.outputs, head.placeholders = ("log_probs",), ("entropy", "is_top1")
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            head.outputs, head.placeholders = self.head_outputs(), ()
        for key, n in kept.items():  # the zeros trl logged for the skipped metrics
            del metrics[key][n:]
            if not metrics[key]:
                del metrics[key]
        return result


def _dataset(rows: list[dict], columns: tuple[str, ...]) -> Dataset:
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"expected a non-empty list of rows with keys {columns}, missing {missing}")
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


# -- DPO ----------------------------------------------------------------------------------------


def make_dpo_trainer(
    model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, ref_model=None, trainer_cls=None,
    dtype: str = "float32", extra_columns: tuple[str, ...] = (),
) -> DPOTrainer:
    """DPO (sigmoid loss, ``beta=cfg.beta``) on ``{"prompt", "chosen", "rejected"}`` rows.

    The reference is the model as passed in (see the module docstring), or ``ref_model``.
    trl appends EOS to both completions. ``trainer_cls``: :class:`SDPOTrainer` for S-DPO (default
    :class:`FastDPOTrainer`); ``cfg.fast_head``, ``cfg.shared_prompt``: :class:`FastHead`; ``dtype``:
    :func:`training_args`; ``extra_columns``: row fields the trainer's collator reads besides the
    three (RosePO's ``epsilon``).
    """
    _unpatch_forward(model)
    if ref_model is None and not is_peft_model(model):
        ref_model = _frozen_copy(model)
    dropout = {m: m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    args = training_args(DPOConfig, cfg, out_dir, seed, dtype, beta=cfg.beta, loss_type=["sigmoid"])
    trainer_cls = trainer_cls or FastDPOTrainer
    trainer = trainer_cls(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=_dataset(rows, ("prompt", "chosen", "rejected", *extra_columns)),
        processing_class=tokenizer,
        **({"fast_head": cfg.fast_head, "shared_prompt": cfg.shared_prompt, "head_kernel": cfg.head_kernel}
           if issubclass(trainer_cls, FastHead) else {}),
    )
    trainer.dropout_to_restore = dropout  # trl sets every dropout to 0 (as the paper's trl did) for good
    return trainer


def dpo(model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, ref_model=None,
        checkpoint_minutes: float | None = CHECKPOINT_MINUTES, dtype: str = "float32"):
    return _train(make_dpo_trainer(model, tokenizer, rows, cfg, out_dir, seed, ref_model, dtype=dtype), out_dir,
                  checkpoint_minutes, save_epochs=cfg.save_epochs)


class FastDPOTrainer(FastHead, DPOTrainer):
    """trl's ``DPOTrainer`` with :class:`FastHead`: the policy's and the reference's LM head on the
    completion tokens only (trl's metrics, also computed there only, are unchanged: they read the
    completion tokens alone)."""

    def head_outputs(self) -> tuple[str, ...]:
        # trl's: entropy, mean_logits and is_top1 feed its logs, log_sum_sq_probs the WPO weights
        return ("log_probs", "entropy", "mean_logits", "is_top1") + (("log_sum_sq_probs",) if self.use_weighting else ())


# -- S-DPO --------------------------------------------------------------------------------------


@dataclass
class DataCollatorForSoftmaxPreference(DataCollatorMixin):
    """Pads rows of one chosen and ``K`` rejected completions into ``(K + 1) * B`` sequences.

    Layout, the generalisation of trl's ``[chosen..., rejected...]``: block ``j`` (rows
    ``j*B .. j*B + B - 1``) holds completion ``j`` of every example, ``j = 0`` the chosen one and
    ``j = 1..K`` the rejected ones; each sequence is ``prompt_ids + completion_ids``, right-padded.
    Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` (1 on completion tokens).
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        counts = {len(ex["rejected_ids"]) for ex in examples}
        if len(counts) != 1:
            raise ValueError(f"every example of a batch needs the same number of rejected completions, got {counts}")
        (k,) = counts
        ids, masks = [], []
        for j in range(k + 1):
            for ex in examples:
                completion = ex["chosen_ids"] if j == 0 else ex["rejected_ids"][j - 1]
                ids.append(ex["prompt_ids"] + completion)
                masks.append([0] * len(ex["prompt_ids"]) + [1] * len(completion))
        if self.max_length is not None:
            if self.truncation_mode not in ("keep_start", "keep_end"):
                raise ValueError(f"unsupported truncation mode {self.truncation_mode!r}")
            keep_start = self.truncation_mode == "keep_start"
            cut = slice(None, self.max_length) if keep_start else slice(-self.max_length, None)
            ids, masks = [s[cut] for s in ids], [m[cut] for m in masks]

        def padded(seqs, value):
            return pad([torch.tensor(s, dtype=torch.long) for s in seqs], value, "right", self.pad_to_multiple_of)

        return {
            "input_ids": padded(ids, self.pad_token_id),
            "attention_mask": padded([[1] * len(s) for s in ids], 0),
            "completion_mask": padded(masks, 0),
        }


class SDPOTrainer(FastHead, DPOTrainer):
    """Softmax-DPO (S-DPO, arXiv 2406.09215) on trl's ``DPOTrainer``.

    Rows are ``{"prompt": str, "chosen": str, "rejected": list[str]}`` with the same number ``K``
    of rejected completions in every row. What changes from DPO:

    * :meth:`_prepare_dataset` tokenizes the ``K`` rejected completions into a list ``rejected_ids``
      (EOS appended to every completion, as trl does for DPO);
    * :class:`DataCollatorForSoftmaxPreference` lays a batch out as ``[chosen; rej_1; ...; rej_K]``;
    * :meth:`_compute_loss` scores the ``K + 1`` completions under the policy and the reference
      (sum of completion-token log-probs, trl's fused LM head; with ``fast_head`` (:class:`FastHead`)
      on the completion tokens only, log-probs alone) and calls :func:`sprec_lib.losses.sdpo_loss`.

    Logged: ``loss``, ``rewards/chosen``, ``rewards/rejected`` (mean over the K negatives),
    ``rewards/accuracies`` (the chosen reward above *every* negative's, as S-DPO's code),
    ``rewards/margins`` (chosen minus the mean negative), ``logps/chosen``, ``logps/rejected``.
    The reference is ``ref_model`` or, for a PEFT model, trl's frozen ``"ref"`` adapter (or the
    adapters disabled). Not supported: ``precompute_ref_log_probs``, ``ld_alpha``,
    ``use_weighting``, other loss types, ``f_divergence_type``; vision datasets.
    """

    _tag_names = ["trl", "sdpo"]
    _name = "S-DPO"

    def head_outputs(self) -> tuple[str, ...]:
        return ("log_probs",)  # S-DPO logs no token metric

    def __init__(
        self, model, args: DPOConfig, train_dataset, processing_class, ref_model=None, data_collator=None, **kwargs
    ):
        unsupported = {
            "precompute_ref_log_probs": args.precompute_ref_log_probs,
            "ld_alpha": args.ld_alpha is not None,
            "use_weighting": args.use_weighting,
            "loss_type": list(args.loss_type) != ["sigmoid"],
            "f_divergence_type": args.f_divergence_type != "reverse_kl",
        }
        if any(unsupported.values()):
            raise NotImplementedError(f"SDPOTrainer does not support {[k for k, v in unsupported.items() if v]}")
        self.num_negatives = None  # K, read from the dataset by _prepare_dataset
        if data_collator is None:
            tok = getattr(processing_class, "tokenizer", processing_class)
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            data_collator = DataCollatorForSoftmaxPreference(
                pad_token_id=pad_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not isinstance(dataset, Dataset) or {"prompt", "chosen", "rejected"} - set(dataset.column_names):
            raise ValueError("SDPOTrainer needs a datasets.Dataset with columns prompt, chosen, rejected")
        if "prompt_ids" in dataset.column_names:
            return dataset  # already prepared
        counts = {len(r) if isinstance(r, list) else -1 for r in dataset["rejected"]}
        if len(counts) != 1 or min(counts) < 1:
            raise ValueError(f"{dataset_name}: every row needs a non-empty list of rejected completions of one length")
        (k,) = counts
        if self.num_negatives not in (None, k):
            raise ValueError(f"{dataset_name}: {k} rejected completions per row, train: {self.num_negatives}")
        self.num_negatives = k
        tok = getattr(processing_class, "tokenizer", processing_class)
        eos = tok.eos_token

        def tokenize(example):
            completions = [example["chosen"], *example["rejected"]]
            completions = [c if c.endswith(eos) else c + eos for c in completions]
            prompt_ids = tok(example["prompt"])["input_ids"]
            full = [tok(example["prompt"] + c)["input_ids"] for c in completions]
            # As trl: the completion starts where prompt and prompt+completion tokenize differently
            n = min(common_prefix_length(prompt_ids, ids) for ids in full)
            rejected_ids = [ids[n:] for ids in full[1:]]
            return {"prompt_ids": prompt_ids[:n], "chosen_ids": full[0][n:], "rejected_ids": rejected_ids}

        dataset = dataset.map(tokenize, num_proc=args.dataset_num_proc, desc=f"Tokenizing {dataset_name} dataset")
        if args.max_length is not None and args.truncation_mode == "keep_start":
            # A prompt that fills max_length leaves no completion token to learn from (as trl)
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length, num_proc=args.dataset_num_proc)
        return dataset

    def _split(self, logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[(K+1)*B]`` in the collator's layout -> chosen ``[B]`` and rejected ``[B, K]``."""
        per_row = logps.view(self.num_negatives + 1, -1).T  # [B, K+1]
        return per_row[:, 0], per_row[:, 1:]

    @staticmethod
    def _model_inputs(inputs):
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "use_cache": False}
        return kwargs, labels

    @staticmethod
    def _sequence_logps(outputs, inputs) -> torch.Tensor:
        # log_probs[:, t] is log p(token t+1); zero where the label is -100 (prompt and padding)
        seq_len = inputs["completion_mask"].size(1) - 1
        return outputs.log_probs[:, -seq_len:].sum(dim=1)

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of the batch's completions: chosen ``[B]`` and rejected ``[B, K]``.

        ``model`` is ``self.ref_model``, or the policy when the reference is a PEFT adapter state
        (trl's ``"ref"`` adapter if present, else the adapters disabled).
        """
        kwargs, labels = self._model_inputs(inputs)
        adapter = nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        checkpointing = nullcontext()
        if self.args.gradient_checkpointing:  # a no-grad forward has nothing to checkpoint
            checkpointing = disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs)
        with torch.no_grad(), checkpointing, adapter, self.accelerator.autocast():
            outputs = model(**kwargs, labels=labels, fused_lm_head=True)
        return self._split(self._sequence_logps(outputs, inputs))

    def preference_loss(self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, inputs):
        """The per-row loss from the sequence log-probs (chosen ``[B]``, rejected ``[B, K]``): S-DPO's
        softmax loss. The one hook a multi-negative loss overrides (DMPO, RosePO); the data path,
        the reference log-probs and the logged rewards stay this trainer's."""
        return sdpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, self.beta)

    def extra_metrics(self, inputs) -> dict:
        """Per-row values to log beside the rewards (none for S-DPO)."""
        return {}

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        kwargs, labels = self._model_inputs(inputs)
        outputs = model(**kwargs, labels=labels, fused_lm_head=True)
        chosen_logps, rejected_logps = self._split(self._sequence_logps(outputs, inputs))
        ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(
            self.ref_model if self.ref_model is not None else self.model, inputs
        )
        loss = self.preference_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, inputs).mean()

        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps).detach()  # [B]
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps).detach()  # [B, K]
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards.mean(dim=1),
            "rewards/accuracies": (chosen_rewards.unsqueeze(1) > rejected_rewards).all(dim=1).float(),
            "rewards/margins": chosen_rewards - rejected_rewards.mean(dim=1),
            "logps/chosen": chosen_logps.detach(),
            "logps/rejected": rejected_logps.detach().mean(dim=1),
            **self.extra_metrics(inputs),
        }
        for key, value in metrics.items():
            self._metrics[mode][key].append(self.accelerator.gather(value).mean().item())
        return (loss, outputs) if return_outputs else loss


def make_sdpo_trainer(
    model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, ref_model=None, dtype: str = "float32"
) -> SDPOTrainer:
    """S-DPO on ``{"prompt", "chosen", "rejected": [K strings]}`` rows; otherwise as :func:`make_dpo_trainer`."""
    return make_dpo_trainer(model, tokenizer, rows, cfg, out_dir, seed, ref_model, trainer_cls=SDPOTrainer, dtype=dtype)


def sdpo(model, tokenizer, rows: list[dict], cfg: StageConfig, out_dir, seed: int, ref_model=None,
         checkpoint_minutes: float | None = CHECKPOINT_MINUTES, dtype: str = "float32"):
    return _train(make_sdpo_trainer(model, tokenizer, rows, cfg, out_dir, seed, ref_model, dtype), out_dir,
                  checkpoint_minutes, save_epochs=cfg.save_epochs)
