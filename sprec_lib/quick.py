"""Quick mode, the one switch: every size shrunk so that the whole book runs in minutes (tests, CI).

One switch, ``quick=True`` or the environment variable ``SPREC_QUICK=1`` (:func:`quick_mode`), read
by everything: ``sprec train --quick``, ``sprec book run --quick``, the notebooks and
:func:`sprec_lib.experiments.obtain`. What it shrinks lives here:

* :data:`QUICK_RUN`: a run's config (a 2-layer model of width 64, a handful of steps per stage),
  so that a whole method runs in seconds on a CPU;
* :data:`NOTEBOOK_SIZES`: each notebook's sizes (a constant, or a rule on the full value, e.g.
  the first seed only), read through :func:`sizes`;
* :func:`quick_dataset`: a synthetic dataset folder for a page that is given none.

Numbers made in quick mode check the plumbing and mean nothing as results; quick runs live under
``runs/quick`` and never reach ``results/``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

# A run in quick mode: a 2-layer model of width 64 and a handful of steps per stage (``--set``
# overrides applied after the profile's), so that a whole method runs in seconds on a CPU.
QUICK_RUN: list[str] = [
    "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
    "model.vocab_size=400", "model.max_positions=256",
    "pretrain.max_steps=4", "sft.max_steps=40", "sft.lr=5e-3", "sft.loss_on=completion",
    "dpo.max_steps=3", "sdpo.max_steps=2", "sdpo.n_negatives=2",
    "sprec.iterations=2", "sprec.train_rows=8", "sprec.valid_rows=4", "sprec.sft.max_steps=2", "sprec.dpo.max_steps=3",
    "sprec.eval_sft_steps=true",  # so that the training page's step-by-step section runs in quick mode too
    "train_rows=32", "eval.rows=12", "eval.batch_size=8", "eval.max_new_tokens=12",
    # the baselines (sprec_lib/methods): a few epochs or steps each, fewer beams
    "sasrec.epochs=5", "sasrec.patience=5", "dmpo.stage.max_steps=2", "dmpo.stage.n_negatives=2",
    "rosepo.stage.max_steps=3", "d3.num_beams=5",
]


# Quick mode's dataset for a page that is given none (the pretrained-LLM chapter reads named
# datasets, which a test machine may lack): a small synthetic folder, written under runs/quick.
QUICK_DATA = "runs/quick/data/synthetic"
QUICK_DATA_SIZES = {"n_items": 60, "sizes": (256, 32, 64), "seed": 0}  # sprec_lib.data.synthetic.make_synthetic


def quick_dataset(folder: str = QUICK_DATA) -> str:
    """The synthetic dataset folder of quick mode (:data:`QUICK_DATA_SIZES`), written (again: the
    same files every time) under the repository root; returns ``folder``."""
    from .data.sprec_format import write_sprec_folder
    from .data.synthetic import make_synthetic
    from .paths import resolve

    write_sprec_folder(make_synthetic(**QUICK_DATA_SIZES), resolve(folder))
    return folder


def _quick_dataset(_values):
    return [quick_dataset()]


def quick_mode(quick: bool = False) -> bool:
    """``quick``, or the environment variable ``SPREC_QUICK`` set to 1 / true / yes / on."""
    return bool(quick) or os.environ.get("SPREC_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


def _first(values):
    return list(values)[:1]


def _ends(values):
    values = list(values)
    return [values[0], values[-1]] if len(values) > 1 else values


def _first_two(values):
    return list(values)[:2]


def _first_seed_each(sweeps):
    return {name: list(seeds)[:1] for name, seeds in dict(sweeps).items()}


# Each notebook's quick sizes: a value replaces the full one, a function maps it.
NOTEBOOK_SIZES: dict[str, dict[str, Any]] = {
    "00_scorecard": {"seeds": _first, "sweeps": _first_seed_each, "sweep_ratios": _ends, "sweep_n_negatives": _first_two},
    "01_theorem": {"n_items": 20, "optimiser_steps": 100, "n_betas": 7, "iterations": 4},
    "02_datasets": {},  # reading a dataset takes about a second: full size
    "03_training": {"seeds": _first},
    "04_ablations": {"seeds": _first},
    "05_negative_samples": {"seeds": _first, "ratios": _ends, "n_negatives": _first_two},
    "06_results": {"seeds": _first, "sweeps": _first_seed_each, "sweep_ratios": _ends, "sweep_n_negatives": _first_two},
    # the runs of a tiny model on a synthetic folder: the small profile's model is never loaded
    "08_pretrained": {"datasets": _quick_dataset, "seeds": _first, "profile": "tiny", "compare_profile": "tiny"},
}


def sizes(notebook: str, quick: bool, **full) -> SimpleNamespace:
    """The notebook's sizes: ``full`` as given, or, in quick mode, as :data:`NOTEBOOK_SIZES` says."""
    rules = NOTEBOOK_SIZES.get(notebook, {}) if quick_mode(quick) else {}
    out = {}
    for name, value in full.items():
        rule = rules.get(name, value)
        out[name] = rule(value) if callable(rule) else rule
    return SimpleNamespace(**out)
