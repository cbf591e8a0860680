"""The method registry: each method is one recipe in one file of this package, registering itself.

A :class:`Method` says which stages it runs after the shared start (``pretrain`` for the tiny
profile, then SFT), which config sections it reads (so that a run of another method whose other
sections differ is not stale), its label for tables and whether the paper's Table 1 has it. The CLI
choices, :mod:`sprec_lib.experiments`, the order of result tables and the notebooks read the list
from here (:func:`names`, :func:`table1`). Adding a method is one file here plus its test: every
module of this package is imported when the registry is first read.

A recipe's ``run(pipeline) -> final stage`` drives :class:`sprec_lib.pipeline.Pipeline`, the stage
engine (cached, locked, resumable stages and evaluations); ``plan(cfg) -> [StagePlan]`` says what it
will train without training (``sprec train --dry-run``).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..config import ConfigError


@dataclass(frozen=True)
class StagePlan:
    """One stage a method will run: its name, the trainer kind and config section it uses, the rows
    it trains on (or generates for) and, for the self-play negatives, the decoding."""

    name: str
    kind: str  # pretrain | sft | dpo | sdpo | negatives | eval
    section: str | None  # the StageConfig it trains with, dotted (``sprec.dpo``); None: no training
    rows: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Method:
    name: str  # the --method value, and the runs' label
    title: str  # its row name in the book's tables
    run: Callable  # run(pipeline) -> the final stage's name
    plan: Callable  # plan(cfg) -> list[StagePlan] after the shared start
    sections: tuple[str, ...] = ()  # RunConfig sections it reads beyond the shared ones
    order: int = 100  # its place in tables
    table1: bool = True  # one of the book's Table-1 rows
    paper: str | None = None  # its label in the paper's tables (sprec_lib/paper/sprec_tables.csv); None: not there
    llm: bool = True  # it starts from the shared LLM start (pretrain, SFT); False: SASRec, a model of its own
    doc: str = field(default="", compare=False)


# The sections every method reads: the run's identity, its rows, evaluation; and, for the LLM methods,
# the model and the shared start (pretraining, SFT).
SHARED_SECTIONS = ("dataset", "method", "profile", "seed", "train_rows", "eval")
LLM_SECTIONS = ("model", "pretrain", "sft")

_REGISTRY: dict[str, Method] = {}
_loaded = False


def register(method: Method) -> Method:
    if method.name in _REGISTRY and _REGISTRY[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def all_methods() -> list[Method]:
    _load()
    return sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name))


def names() -> tuple[str, ...]:
    """Every method's name, in table order (the CLI's ``--method`` choices)."""
    return tuple(m.name for m in all_methods())


def table1() -> tuple[str, ...]:
    """The methods of the book's Table 1, in table order."""
    return tuple(m.name for m in all_methods() if m.table1)


def get(name: str) -> Method:
    _load()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r} (methods: {', '.join(names())})")
    return _REGISTRY[name]


def sections(name: str) -> tuple[str, ...]:
    """The RunConfig fields a run of ``name`` reads: the shared ones and the method's own."""
    method = get(name)
    return SHARED_SECTIONS + (LLM_SECTIONS if method.llm else ()) + method.sections
