"""The stage engine: ``train(cfg, folder)`` runs or resumes ``cfg.method``'s recipe in a run folder.

A method is a recipe in :mod:`sprec_lib.methods` (one file each); it drives a :class:`Pipeline`,
which runs named stages (each starts from the model another stage ended with), evaluates them and
keeps everything in a :class:`sprec_lib.runs.Run`. The shared start of every method is
:meth:`Pipeline.shared_start`: ``pretrain`` (tiny profile), then ``sft``, evaluated.

Every model stage a recipe evaluates is evaluated on the test split (``metrics/<label>.json``); for
SPRec that is the end of every iteration (the per-iteration curves of the paper's Fig. 4). ``sft``
is iteration 0.

Stages shared between runs: ``pretrain`` depends on the dataset and the model only (its seed is
fixed: it plays the part of a pretrained LLM's weights), ``sft`` on those plus the SFT settings
and the run's seed. Both are cached under the asset cache and reused by every method's run with
the same inputs, so SFT, DPO, S-DPO and SPRec of one seed start from the very same SFT model.
SPRec's first SFT step is shared too, among the SPRec variants that take it (:data:`SPREC_FIRST_SFT_STEP`).
Runs started together take turns (:func:`shared_stage_lock`): one trains, the others wait and reuse.
A shared stage a run finished before the cache held it (a run of older code, or on another cache) is
cached when the run is resumed, or when ``sprec train`` is called again on its finished folder.

Under ``accelerate launch`` every process runs the recipe: the trainers train data-parallel, and
everything else happens on the main process alone (:mod:`sprec_lib.distributed`): whether a stage
is done, reused or trained is its decision, sent to the others; it saves the stage's model, marks
it done and caches it; it evaluates. The others wait, then load what it saved.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from . import distributed, models
from .assets import cache_root
from .config import SPEED_SWITCHES, RunConfig, StageConfig, flat_diff, to_dict
from .data import Dataset
from .data.sprec_format import read_sprec_folder
from .evaluation import evaluate
from .prompts import input_text, prompt, target_completion
from .cpu import keep_freed_memory
from .paths import folder_hash
from .runs import (CHECKPOINT_MINUTES, Run, copy_stage, model_checksums, read_json, snapshot_name, split_snapshot,
                   stage_finished, stage_seed, verify_stage, write_json)
from .selfplay import negatives_for, preference_rows, sample_rows

PRETRAIN_SEED = 0


def dataset_hash(folder: str | Path) -> str:
    """The dataset's key in the shared stage cache: its JSON files' names and contents."""
    return folder_hash(folder, "*.json")[:16]


def training_rows(ds: Dataset, cfg: RunConfig):
    """The rows SFT and the preference methods train on: ``train_rows`` drawn with the run's seed."""
    return sample_rows(ds.train, cfg.train_rows, np.random.default_rng([cfg.seed, 1]))


def sft_rows(rows, ds: Dataset, template: str = "alpaca") -> list[dict]:
    return [{"prompt": prompt(s, ds.catalogue, ds.wording, template),
             "completion": target_completion(s, ds.catalogue, ds.wording)} for s in rows]


def pretrain_texts(ds: Dataset) -> list[str]:
    """Domain pretraining for ``tiny``: every user's training-period sequence where the source has
    full logs (prepared MovieLens; packing makes each position a next-item example, i.e. every
    window), else the training rows as prompt + completion (the paper's folders)."""
    if ds.sequences:
        return [input_text(tuple(seq), ds.catalogue, ds.wording) for seq in ds.sequences]
    return [prompt(s, ds.catalogue, ds.wording) + target_completion(s, ds.catalogue, ds.wording) for s in ds.train]


# StageConfig fields that the shared stage cache's key leaves out while they have the value given
# here (and keeps, as any field, otherwise), in every stage section the key hashes (pretrain, sft).
# The key hashes whole sections, so a field added to StageConfig would change every key, and every
# later run would train its SFT again instead of reusing the cached one (this happened once). A
# field added later goes here with its default, if that default makes the very stage the older code
# made: the keys of the stages cached before it stay as they were.
# ``save_epochs``: True keeps epoch snapshots in the stage folder, so such a stage has a key of its
# own (its cached copy carries them; one cached without them cannot serve it).
KEY_NEUTRAL: dict[str, object] = {"save_epochs": False}
# How a stage is computed, not what it computes: the speed switches (config.SPEED_SWITCHES, each
# tested to give the same loss and gradients) and the thread count. The key hashes them at their
# defaults whatever the run asks, so that a run with `--set model.torch_threads=1` (or a speed switch
# turned off to compare) reuses the stage another run trained, as `sprec runs missing` already treats
# such runs as the same run (experiments._comparable). Hashing them at their defaults, rather than
# leaving them out, keeps the keys of the stages cached before this rule: all had the defaults.
# (Until 2026-12-03 the thread count was hashed: a Steam run with torch_threads=1 missed the stage
# that its seed-0 sibling had cached with the default, and trained its pretraining again.)
_STAGE_DEFAULTS = to_dict(StageConfig())
KEY_AT_DEFAULT_STAGE: dict[str, object] = {k: _STAGE_DEFAULTS[k] for k in SPEED_SWITCHES}
KEY_AT_DEFAULT_MODEL: dict[str, object] = {"torch_threads": None}


def _key_section(section: dict, at_default: dict) -> dict:
    """A section of the key (:func:`to_dict` output): its :data:`KEY_NEUTRAL` fields at their value
    left out, and the fields of ``at_default`` set to the value given there."""
    out = {k: v for k, v in section.items() if not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}
    return {**out, **{k: v for k, v in at_default.items() if k in out}}


# SPRec's first SFT step trains on the positives of iteration 1's rows (drawn with the run's seed),
# starting from the shared ``sft``: it depends on neither the negatives, nor the DPO step, nor T. So
# SPRec, SPRec-RN, SPRec-noDPO and the random-ratio and N sweeps of one seed and one rows-per-iteration
# train the very same model (the same checksums, seen on MovieLens tiny seed 2), and share it. Later
# iterations start from a model the negatives shaped: each run's own.
SPREC_FIRST_SFT_STEP = "it1-sft"


def shared_stage_key(cfg: RunConfig, stage: str, data_key: str) -> str | None:
    """Cache key of a stage that runs of other methods can reuse (None: not shared): ``pretrain``,
    ``sft``, and SPRec's first SFT step (:data:`SPREC_FIRST_SFT_STEP`). Fields of
    :data:`KEY_NEUTRAL` at their neutral value are left out of the stage sections; the speed
    switches and the thread count are hashed at their defaults (:data:`KEY_AT_DEFAULT_STAGE`,
    :data:`KEY_AT_DEFAULT_MODEL`)."""
    c = to_dict(cfg)
    pretrain, sft = (_key_section(c[s], KEY_AT_DEFAULT_STAGE) for s in ("pretrain", "sft"))
    model = _key_section(c["model"], KEY_AT_DEFAULT_MODEL)
    sft_parts = {"data": data_key, "model": model, "pretrain": pretrain, "sft": sft,
                 "train_rows": c["train_rows"], "seed": c["seed"]}
    if stage == "pretrain":
        parts = {"data": data_key, "model": model, "pretrain": pretrain}
    elif stage == "sft":
        parts = sft_parts
    elif stage == SPREC_FIRST_SFT_STEP and c["method"] == "sprec" and c["sprec"]["sft_step"]:
        s = c["sprec"]
        parts = {**sft_parts, "sprec.sft": _key_section(s["sft"], KEY_AT_DEFAULT_STAGE),
                 "sprec.train_rows": s["train_rows"], "sprec.valid_rows": s["valid_rows"]}
    else:
        return None
    return stage + "-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def shared_stage_path(cfg: RunConfig, stage: str, data_key: str, cache_dir=None) -> Path | None:
    key = shared_stage_key(cfg, stage, data_key)
    return None if key is None else cache_root(cache_dir) / "stages" / key


def shared_evaluation_path(cfg: RunConfig, stage: str, data_key: str, stage_dir: Path, cache_dir=None) -> Path | None:
    """Where the evaluation of a shared stage (:func:`shared_stage_key`: pretrain, sft) under
    ``cfg.eval``'s settings is kept for the runs of other methods, beside the shared stage cache;
    None for a run's own stage, or for a stage whose ``DONE`` in ``stage_dir`` (a finished copy of
    it: the run's, or the cache's) records no model files. The key holds the stage's key, the eval
    settings and the checksums of the model's files, so an evaluation is only ever read back for
    the very weights it measured (a stage trained again, on another machine, is another model).
    The evaluation is greedy and grounded, so a second run of another method gets the first one's
    predictions and metrics instead of decoding again (on a CPU the ``small`` profile's SFT
    evaluation is 13-20 minutes of every DPO, S-DPO and SPRec run)."""
    key = shared_stage_key(cfg, stage, data_key)
    checksums = model_checksums(stage_dir) if key is not None else None
    if checksums is None:
        return None
    parts = {"eval": to_dict(cfg.eval), "model_files": checksums}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "evaluations" / f"{key}-eval-{digest}"


def read_shared_evaluation(folder: Path | None):
    """(predictions, metrics) kept by :func:`keep_shared_evaluation` in ``folder``, or None (none
    there, or one that does not read back: then it is evaluated again, and kept again)."""
    import pandas as pd

    if folder is None or not (folder / "metrics.json").exists():
        return None
    try:
        return pd.read_parquet(folder / "predictions.parquet"), read_json(folder / "metrics.json")
    except (OSError, ValueError):
        return None


def keep_shared_evaluation(folder: Path, predictions, metrics: dict) -> None:
    """Keep an evaluation for other runs: written to a temporary folder and renamed, so that a kill
    leaves a whole evaluation or none. One that does not read back is replaced; a whole one kept by
    another run meanwhile stays."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    predictions.to_parquet(tmp / "predictions.parquet")
    write_json(metrics, tmp / "metrics.json")
    if folder.exists() and read_shared_evaluation(folder) is None:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def shared_stage_lock(path: Path, on_wait=lambda: None):
    """An exclusive lock on ``path`` (a file beside the cached stage) for as long as the block
    runs; ``on_wait()`` is called once if another process holds it. Where ``fcntl`` is missing
    (Windows) there is no lock: two runs may then train the same stage twice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Pipeline:
    """The model in memory, the stage it came from, and the run it belongs to."""

    def __init__(self, run: Run, ds: Dataset, cache_dir=None, checkpoint_minutes: float | None = CHECKPOINT_MINUTES):
        self.run, self.cfg, self.ds, self.cache_dir = run, run.cfg, ds, cache_dir
        self.checkpoint_minutes = checkpoint_minutes  # passed to every trainer (trainers._train)
        self.model = self.tokenizer = None
        self.at: str | None = "nothing"
        self._grounder = None
        self.data_key = dataset_hash(self.cfg.dataset)
        keep_freed_memory()  # fewer page faults, the same numbers (sprec_lib.cpu); sprec eval comes here directly
        if self.cfg.model.torch_threads:  # here, not with the base model: a run may start from cached stages
            import torch

            torch.set_num_threads(self.cfg.model.torch_threads)
        from .trainers import resolve_dtype

        # The training dtype every stage uses: model.dtype, with "auto" resolved on this machine
        # (bf16 autocast where the CPU has it and it is measured faster; sprec_lib.trainers).
        self.dtype = resolve_dtype(self.cfg.model.dtype)

    # -- models --------------------------------------------------------------------------------
    def load(self, stage: str | None):
        """Bring the model that ``stage`` ended with into memory (None: the untrained base model;
        ``<stage>@epoch<N>``, :func:`~sprec_lib.runs.snapshot_name`: the stage's snapshot after epoch
        N, StageConfig.save_epochs)."""
        if self.at == stage:
            return
        if stage is None:
            self.model, self.tokenizer = models.base_model(self.cfg.model, self.ds, PRETRAIN_SEED, self.cache_dir)
            self.model.to(models.device())
        else:
            self.model, self.tokenizer = models.load(self.stage_folder(stage) / "model", self.cfg.model, self.cache_dir)
        self.at = stage

    def stage_folder(self, stage: str) -> Path:
        """The folder of the model ``stage`` ended with (``model/`` and ``DONE``): the stage's, or for
        ``<stage>@epoch<N>`` (:func:`~sprec_lib.runs.snapshot_name`) its snapshot's."""
        name, epoch = split_snapshot(stage)
        return self.run.stage_dir(name) if epoch is None else self.run.snapshot_dir(name, epoch)

    def shared_key(self, stage: str) -> str | None:
        return shared_stage_key(self.cfg, stage, self.data_key)

    def stage(self, name: str, start: str | None, fn) -> None:
        """Run ``fn(model, tokenizer, seed, out_dir) -> model`` as stage ``name`` unless it is done.

        A finished stage is verified first (its model against the checksums in its ``DONE``): one
        that does not verify runs again, and the log says why. A shared stage is copied from the
        shared stage cache and back, each copy verified; a cached copy that does not verify is
        removed and rebuilt by this run.

        Under ``accelerate launch`` the main process does all of that and tells the others whether
        to train; all of them train, the main process saves (and caches), and the others wait for it
        (they load the stage's model from the run folder when a later step needs it)."""
        cached = shared_stage_path(self.cfg, name, self.data_key, self.cache_dir)
        if distributed.on_main(self._finished, name):
            if cached is not None and distributed.is_main() and not stage_finished(cached):
                with shared_stage_lock(cached.with_name(cached.name + ".lock"), lambda: None):
                    if not stage_finished(cached) and self._cache(name, cached):  # finished before the cache held it
                        self.run.log(f"stage {name}: cached for other runs ({cached.name})")
            return
        if cached is None:
            self._train_stage(name, start, fn)
            return
        # One run at a time trains a shared stage: a second run of the same stage (two seeds' DPO
        # and S-DPO started together) waits, then reuses it instead of training it twice. (The main
        # process holds the lock, for all the processes of a launch.)
        with ExitStack() as held:
            if distributed.is_main():
                held.enter_context(shared_stage_lock(cached.with_name(cached.name + ".lock"), lambda: self.run.log(
                    f"stage {name}: waiting for another run that trains it ({cached.name})")))
            if distributed.on_main(self._reuse_cached, name, cached):  # the others wait for the copy
                return
            self._train_stage(name, start, fn)
            distributed.on_main(self._cache, name, cached, share=False)

    def _finished(self, name: str) -> bool:
        """Whether stage ``name`` is done in the run folder and verifies; else what an interrupted
        attempt left is cleared (its checkpoints stay) and False."""
        run = self.run
        if run.done(name):
            problem = run.verify(name)
            if problem is None:
                return True
            run.reopen(name, f"its saved model does not verify ({problem})")
        run.clear(name)
        return False

    def _reuse_cached(self, name: str, cached: Path) -> bool:
        """Copy the shared cache's finished stage ``name`` into the run (True), or say why not and
        clear the way for training it here (False). Under the cache's lock."""
        run = self.run
        if stage_finished(cached):
            problem = verify_stage(cached)
            if problem is None:  # copied over our own interrupted attempt's checkpoints, if any
                problem = copy_stage(cached, run.stage_dir(name))
                if problem is None:
                    run.adopt(name, cached)
                    return True
                run.log(f"stage {name}: the copy from {cached} does not verify ({problem}); training it here")
            else:
                run.log(f"stage {name}: the shared cache's copy does not verify ({problem}); removing it, "
                        "training the stage again and caching it anew")
                shutil.rmtree(cached, ignore_errors=True)
            run.clear(name)
        return False

    def _cache(self, name: str, cached: Path) -> bool:
        """Copy the run's finished stage ``name`` into the shared stage cache (verified); whether it did."""
        run = self.run
        tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
        problem = copy_stage(run.stage_dir(name), tmp)
        if problem is not None:
            run.log(f"stage {name}: not cached, the copy does not verify ({problem})")
            return False
        if cached.exists():  # left by a copy that did not finish, or one that did not verify: replace it
            shutil.rmtree(cached)
        tmp.replace(cached)
        return True

    def _train_stage(self, name: str, start: str | None, fn) -> None:
        from . import trainers

        run = self.run
        self.load(start)
        seed = PRETRAIN_SEED if name == "pretrain" else stage_seed(self.cfg.seed, name)

        def prepare():
            run.log(f"stage {name}: starting from {start or 'the base model'} (seed {seed})")
            # A checkpoint that does not load is deleted here (and said so in the log): the stage falls
            # back to an earlier checkpoint, or to its start, and no later run trips on it again.
            if resume := trainers.last_checkpoint(run.stage_dir(name), log=lambda m: run.log(f"stage {name}: {m}")):
                run.log(f"stage {name}: resuming from {resume.name} (its trainer state, optimizer and RNG)")

        distributed.on_main(prepare, share=False)  # the others resume from what the main process kept
        model = fn(self.model, self.tokenizer, seed, run.stage_dir(name))
        self.model, self.at = model, name  # the same weights on every process (data-parallel training)
        distributed.on_main(self._save, name, share=False)

    def _save(self, name: str) -> None:
        models.save(self.model, self.tokenizer, self.run.model_dir(name))
        self.run.mark_done(name)

    def evaluate(self, stage: str, label: str | None = None) -> dict:
        """Evaluate the model ``stage`` ended with (once: a finished evaluation is read back).
        Under ``accelerate launch``: on the main process, the others wait and get its metrics."""
        return distributed.on_main(self._evaluate, stage, label or stage)

    def _evaluate(self, stage: str, label: str) -> dict:
        if self.run.has_metrics(label):
            return self.run.metrics_of(label)
        shared = shared_evaluation_path(self.cfg, stage, self.data_key, self.stage_folder(stage), self.cache_dir)
        if (kept := read_shared_evaluation(shared)) is not None:
            self.run.log(f"eval {label}: reused from the cache ({shared.name}: another run's evaluation of the same model)")
            return self.record_evaluation(label, stage, *kept)
        self.load(stage)
        if self.cfg.eval.mode == "grounded" and self._grounder is None:
            from .evaluation import Grounder

            self._grounder = Grounder(self.ds, self.cache_dir)
        journal = self.decode_journal(f"eval-{label}", stage)
        predictions, metrics = evaluate(self.model, self.tokenizer, self.ds, self.cfg.eval, self.cache_dir, self._grounder,
                                        journal=journal)
        if shared is not None:
            keep_shared_evaluation(shared, predictions, dict(metrics))
        metrics = self.record_evaluation(label, stage, predictions, metrics)
        if journal is not None:
            journal.discard()
        return metrics

    def decode_journal(self, decode: str, stage: str | None):
        """A :class:`~sprec_lib.decoding.DecodeJournal` for a decode with the model ``stage`` ended
        with, in the run's ``partial/`` folder, keyed by the checksums of that model's files (its
        ``DONE`` record); logs how many batches it resumes. None where the model has no such record
        (the untrained base model): that decode starts over when cut short."""
        from .decoding import DecodeJournal

        if stage is None or not distributed.is_main():
            return None
        checksums = model_checksums(self.stage_folder(stage))
        if checksums is None:
            return None
        return DecodeJournal(self.run.partial_path(decode), json.dumps(checksums, sort_keys=True),
                             log=lambda message: self.run.log(f"{decode}: {message}"))

    def record_evaluation(self, label: str, stage: str, predictions, metrics: dict) -> dict:
        """Keep an evaluation in the run (its predictions, its metrics labelled ``label`` with the
        ``stage`` they measure and the dataset's warnings, which qualify them) and log its headline.
        Every evaluation goes through here, a recipe's own (SASRec's ranking, D3's decoding) too."""
        metrics["stage"] = stage
        if self.ds.warnings:
            metrics["dataset_warnings"] = list(self.ds.warnings)
        self.run.save_predictions(label, predictions)
        self.run.record_metrics(label, metrics)
        k = max(self.cfg.eval.ks)
        at1, atk = metrics.get("@1", {}), metrics.get(f"@{k}", {})
        self.run.log(f"eval {label}: valid_ratio {metrics['valid_ratio']:.3f}, HR@{k} {atk.get('HR', float('nan')):.4f}, "
                     f"DivRatio@1 {at1.get('DivRatio', float('nan')):.4f}, ORRatio@1 {at1.get('ORRatio', float('nan')):.4f}")
        return metrics

    # -- stages --------------------------------------------------------------------------------
    def base_stage(self) -> str | None:
        """``pretrain`` for the tiny profile (the model and tokenizer start here), else the base model."""
        if self.cfg.model.profile != "tiny":
            return None
        from . import trainers

        self.stage("pretrain", None, lambda m, t, seed, out: trainers.pretrain(
            m, t, pretrain_texts(self.ds), self.cfg.pretrain, out, seed, checkpoint_minutes=self.checkpoint_minutes,
            dtype=self.dtype))
        return "pretrain"

    def sft_stage(self, start: str | None) -> str:
        from . import trainers

        rows = sft_rows(training_rows(self.ds, self.cfg), self.ds)

        def fn(model, tokenizer, seed, out):
            if self.cfg.model.lora and not hasattr(model, "peft_config"):
                model = models.add_lora(model, self.cfg.model)
            return trainers.sft(model, tokenizer, rows, self.cfg.sft, out, seed, checkpoint_minutes=self.checkpoint_minutes,
                                dtype=self.dtype)

        self.stage("sft", start, fn)
        return "sft"

    def shared_start(self) -> str:
        """Every method's start: ``pretrain`` (tiny profile), then ``sft``, evaluated; returns ``"sft"``."""
        last = self.sft_stage(self.base_stage())
        self.evaluate(last)
        return last

    def preference_stage(self, name: str, start: str, n_negatives: int, stage_cfg) -> str:
        """DPO (n = 1) or S-DPO (n > 1) on uniformly random negatives."""
        from . import trainers
        from .config import SPRecConfig

        rows = training_rows(self.ds, self.cfg)
        rng = np.random.default_rng([self.cfg.seed, 2])
        negs = negatives_for(rows, self.ds, SPRecConfig(negatives="random", n_negatives=n_negatives), rng)
        pairs, _ = preference_rows(rows, negs, self.ds, n_negatives, stage_cfg.template)
        train = trainers.dpo if n_negatives == 1 else trainers.sdpo
        self.stage(name, start, lambda m, t, seed, out: train(m, t, pairs, stage_cfg, out, seed,
                                                              checkpoint_minutes=self.checkpoint_minutes, dtype=self.dtype))
        return name


def train(cfg: RunConfig, folder: str | Path, cache_dir=None, checkpoint_minutes: float | None = CHECKPOINT_MINUTES,
          variant: str | None = None) -> Run:
    """Run (or resume) ``cfg.method``'s recipe in ``folder``; returns the run (metrics under ``metrics/``).

    ``variant`` names the settings that make this run differ from the method as configured (its
    table label is ``<method>-<variant>``); None: read from a folder named ``<label>-seed<S>``.

    A stage cut short resumes from its latest checkpoint, saved every ``checkpoint_minutes`` of
    training (None: no checkpoints inside a stage; the run still resumes stage by stage). The
    interval is not part of the run's config: it changes when work is saved, not the result.

    Under ``accelerate launch`` every process calls this; the main process writes the run, the
    others train with it and wait for it (see the module docstring)."""
    from . import methods

    recipe = methods.get(cfg.method)
    ds = read_sprec_folder(cfg.dataset)  # read (and checked) before anything is written
    keep_freed_memory()  # before the run records the machine, so that its config.json says so
    distributed.init()  # joins the launch's process group (nothing without one)
    run = distributed.on_main(Run, folder, cfg, variant)  # the main process makes the folder
    with run.lock():
        p = Pipeline(run, ds, cache_dir, checkpoint_minutes)
        run.log(f"{run.label} on {ds.name} ({cfg.profile} profile, seed {cfg.seed}; training dtype {p.dtype}"
                f"{' (model.dtype=auto)' if cfg.model.dtype == 'auto' else ''})")
        for warning in ds.warnings:
            run.log(f"dataset warning: {warning}")
        from .trainers import slow_bf16_warning

        if (slow := slow_bf16_warning(p.dtype)) is not None:
            run.log(f"warning: {slow}")
            print(f"warning: {slow}", file=sys.stderr)
        run.finish(recipe.run(p))
    return run


def evaluate_run(folder: str | Path, stage: str | None = None, assignments: list[str] | None = None, cache_dir=None,
                 epoch: int | None = None) -> Run:
    """Evaluate a finished stage of a run (default: its final one), optionally with other eval
    settings (``eval.mode=constrained``, ``eval.split=valid``, ...); the metrics are labelled
    ``<stage>`` or, with other settings, ``<stage>-<mode>-<k>`` plus ``-<split>`` off the test split.

    ``epoch``: the stage's snapshot after that epoch instead (a stage trained with
    ``save_epochs=true``; verified first), labelled with ``-epoch<N>`` after the stage:
    ``sft-epoch1``, ``sft-epoch1-grounded-5-valid``."""
    import dataclasses

    from .config import override

    run = Run(folder)
    if stage is None:
        if not run.is_finished:
            raise FileNotFoundError(f"{run.folder}: the run has not finished; name a finished stage with --stage")
        stage = run.final_stage
    if stage not in run.stages:  # also keeps --stage from naming a path outside the run
        raise FileNotFoundError(f"{run.folder}: no finished stage {stage!r} (finished: {', '.join(run.stages) or 'none'})")
    problem = run.verify(stage)
    if problem:
        raise FileNotFoundError(f"{run.folder}: stage {stage!r} does not verify ({problem}); "
                                "run `sprec train` on this folder to remake it")
    target, label = stage, stage
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an int >= 1, got {epoch!r}")
        snapshot = run.snapshot_dir(stage, epoch)
        if epoch not in run.snapshots(stage):
            kept = ", ".join(map(str, run.snapshots(stage))) or "none: the stage was not trained with save_epochs=true"
            raise FileNotFoundError(f"{snapshot}: stage {stage!r} has no snapshot of epoch {epoch} "
                                    f"(epochs with a snapshot: {kept}; the last epoch's model is the stage's own)")
        problem = verify_stage(snapshot)
        if problem:
            raise FileNotFoundError(f"{snapshot}: the snapshot of stage {stage!r} after epoch {epoch} does not verify "
                                    f"({problem})")
        target, label = snapshot_name(stage, epoch), f"{stage}-epoch{epoch}"
    cfg = override(run.cfg, assignments)
    if cfg.eval != run.cfg.eval:
        label = f"{label}-{cfg.eval.mode}-{max(cfg.eval.ks)}" + ("" if cfg.eval.split == "test" else f"-{cfg.eval.split}")
    p = Pipeline(run, read_sprec_folder(cfg.dataset), cache_dir)
    p.cfg = dataclasses.replace(p.cfg, eval=cfg.eval)
    p.evaluate(target, label)
    return run


# -- what a run will do, without doing it (``sprec train --dry-run``) ---------------------------------
BENCHMARKS = "benchmarks/results"


def _stage_cfg(cfg: RunConfig, section: str | None):
    out = cfg
    for part in (section or "").split("."):
        out = getattr(out, part) if part else None
    return out


def _steps(rows: int | None, stage) -> int | None:
    """Optimizer steps of a stage on ``rows`` rows (its ``max_steps`` when set)."""
    if stage.max_steps > 0:
        return stage.max_steps
    if rows is None:
        return None
    per_step = stage.batch_size * stage.grad_accum
    return max(1, -(-int(rows * stage.epochs) // per_step))


def _benchmark(profile: str) -> dict | None:
    """The benchmark behind a profile's estimates: the one taken on this kind of CPU
    (``sprec_iteration-<profile>-<capability>.json``, e.g. ``-AVX2``, written by the benchmark's
    ``--per-cpu``) where there is one, else ``sprec_iteration-<profile>.json``; None when neither is."""
    import torch

    from .paths import resolve

    folder = resolve(BENCHMARKS)
    names = [f"sprec_iteration-{profile}.json"]
    if not torch.cuda.is_available():
        names.insert(0, f"sprec_iteration-{profile}-{torch.backends.cpu.get_cpu_capability()}.json")
    for name in names:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text()) | {"path": str(folder / name)}
    return None


def _median_seconds(entry: dict, dtype: str = "float32", shared_prompt: bool = False) -> float | None:
    """A benchmark stage's median seconds: the side-by-side benchmark's variant that trains as the
    stage will (``new``, ``new_shared`` with the shared prompt, ``..._bf16`` under bf16 autocast),
    else its fp32 ``new`` (or ``old``), or a flat entry's. The shared prompt changes nothing in an
    SFT stage, so ``new_shared_bf16`` times bf16 SFT too."""
    bf16 = "_bf16" if dtype == "bfloat16" else ""
    names = [f"new{'_shared' if shared_prompt else ''}{bf16}"] + ([f"new_shared{bf16}"] if bf16 else []) + ["new", "old"]
    for key in names:
        if isinstance(entry.get(key), dict):
            return entry[key].get("seconds_median")
    return entry.get("seconds_median")


def _estimate(kind: str, rows: int | None, steps: int | None, stage, bench: dict | None,
              dtype: str = "float32") -> tuple[float | None, int | None]:
    """(seconds, tokens) of a stage, scaled from the benchmark's per-row figures (None: no basis),
    timed in the training ``dtype`` where the benchmark has it (evaluation: always its fp32 figure).
    Pretraining is packed: its tokens are steps x batch x length, timed at the SFT stage's token rate."""
    measured = None
    if bench is not None:
        key = {"pretrain": "sft", "sft": "sft", "dpo": "dpo", "sdpo": "dpo", "negatives": "negatives", "eval": "eval"}.get(kind)
        measured = bench["stages"].get(key) if key else None  # a kind the benchmark has not timed: no estimate
    if kind == "pretrain":
        tokens = steps * stage.batch_size * stage.grad_accum * stage.max_length if steps else None
        seconds = _median_seconds(measured, dtype) if measured else None
        rate = measured.get("tokens_per_s") or (measured.get("tokens") / seconds if seconds and measured.get("tokens") else None) \
            if measured else None
        return (tokens / rate if tokens and rate else None), tokens
    if measured is None or rows is None:
        return None, None
    trains = kind not in ("eval", "negatives")
    seconds = _median_seconds(measured, dtype if trains else "float32",
                              bool(getattr(stage, "shared_prompt", False)) and trains)
    if seconds is None:
        return None, None
    # Per row the benchmark timed: its evaluation rows; for DPO the pairs it trained, which are
    # fewer than its rows where a row's negative equalled its positive and was skipped (the `small`
    # benchmark kept 3 pairs of 16 rows: divided by 16, its DPO estimate was 5x short, 51 min for a
    # MovieLens DPO stage that ran 3 h); every other stage, its rows.
    if kind == "eval":
        timed = bench["eval_rows"]
    elif kind in ("dpo", "sdpo"):
        timed = bench.get("pairs") or bench["rows"]  # a benchmark from before it recorded its pairs: its rows
    else:
        timed = bench["rows"]
    per_row = seconds / timed
    tokens_per_row = measured["tokens"] / timed if measured.get("tokens") else None
    epochs = stage.epochs if stage is not None else 1
    if kind == "sdpo":  # the prompt and 1 + K completions, against DPO's prompt and 2
        more = (1 + stage.n_negatives) / 2
        shared = bool(getattr(stage, "shared_prompt", False))
        if shared and measured.get("head_positions") and measured.get("tokens"):
            # The prompt runs once (StageConfig.shared_prompt): only the completions, a tenth of the
            # tokens on `small` (titles after a 200-token history), multiply. Without it every
            # completion runs with its own copy of the prompt.
            share = measured["head_positions"] / measured["tokens"]
            more = (1 - share) + share * more
        per_row *= more
    tokens = int(rows * epochs * tokens_per_row) if tokens_per_row else None
    return rows * epochs * per_row, tokens


@functools.lru_cache(maxsize=None)
def _logged_compute(root: Path):
    """:func:`sprec_lib.results.compute_spent` of the finished runs under ``root``, read once per
    process; None when there are none or a log cannot be read (an estimate is a convenience: a log
    it cannot read never stops a plan)."""
    from .results import LogFormatError, compute_spent, finished_runs

    try:
        return compute_spent(finished_runs(root)) if root.is_dir() else None
    except (LogFormatError, FileNotFoundError):
        return None


def _logged_stage(profile: str, stage: str, results=None):
    """(rows, column): the committed runs of ``profile`` (under ``results``, default
    :data:`sprec_lib.paths.RESULTS`) whose logs show ``stage`` trained (a stage reused from the cache
    logs 0), and the logged-compute column of its hours; ``(None, column)`` when there is none."""
    from .paths import RESULTS, resolve
    from .results import STAGE_COLUMN

    spent, column = _logged_compute(resolve(results or RESULTS)), STAGE_COLUMN.format(stage)
    if spent is None or column not in spent:
        return None, column
    return spent[(spent["profile"] == profile) & (spent[column] > 0)], column


def logged_stage_seconds(profile: str, dataset: str, stage: str, results=None) -> tuple[float | None, int]:
    """(median seconds, runs) that ``stage`` took in the committed runs of ``profile`` (under
    ``results``, default :data:`sprec_lib.paths.RESULTS`), read from their logs
    (:func:`sprec_lib.results.run_compute`; a stage reused from the cache is not counted): those on
    ``dataset`` when any ran it, else those on any dataset. ``(None, 0)`` when no committed run
    trained it. The dry run's estimate for a stage kind the benchmark has not timed (SASRec's
    training, for SASRec, D3 and RosePO): lane time beside another lane, on whichever machine
    made those runs, so a rough figure."""
    import statistics

    ran, column = _logged_stage(profile, stage, results)
    if ran is None:
        return None, 0
    here = ran[ran["dataset"] == dataset]
    pick = here if len(here) else ran
    if not len(pick):
        return None, 0
    return statistics.median(pick[column]) * 3600, len(pick)


def logged_pretrain_seconds(dataset: str, steps: int, results=None) -> tuple[float | None, int]:
    """(seconds, runs) for ``steps`` steps of ``tiny``'s pretraining on ``dataset``: the median seconds
    a step took in the committed runs that pretrained on it in one go (read from their logs; one
    interrupted and resumed is left out, as its logged time is a part), times ``steps``. ``(None, 0)``
    when none did. The dry run prefers it to the benchmark's scaling for pretraining, which times
    pretraining at the SFT stage's token rate and came out short by a median 1.4x on AVX512 (2x on
    Steam), as pretraining puts the LM head on every position and SFT only on the answer's
    (``benchmarks/results/estimate_accuracy.json``). Lane time beside another lane, on whichever
    machine made the runs."""
    import statistics

    ran, column = _logged_stage("tiny", "pretrain", results)
    if ran is None or not steps:
        return None, 0
    per_step = []
    for _, r in ran[ran["dataset"] == dataset].iterrows():
        if "pretrain" in r["interrupted"].split(", "):
            continue
        run_steps = json.loads((Path(r["run"]) / "config.json").read_text())["config"]["pretrain"]["max_steps"]
        per_step.append(r[column] * 3600 / run_steps)
    return (statistics.median(per_step) * steps, len(per_step)) if per_step else (None, 0)


def plan(cfg: RunConfig, folder: str | Path | None = None, cache_dir=None, ds: Dataset | None = None,
         data_key: str | None = None, from_logs: bool = True) -> dict:
    """What ``train(cfg, folder)`` would do, without writing anything: each stage with its rows,
    steps, tokens and an estimate of its time (from ``benchmarks/results``; with ``from_logs``, from
    the committed runs' logs for pretraining where runs on the dataset have them,
    :func:`logged_pretrain_seconds`, and for a kind the benchmark has not timed,
    :func:`logged_stage_seconds`), which shared stages it would reuse from the cache (``shared``: the
    cache entry of a stage that runs share, None for a run's own stage), which are already done in
    ``folder``, the device and threads. ``from_logs=False``: the benchmark's scaling alone (what
    ``benchmarks/estimate_accuracy.py`` sets against the logs)."""
    import torch

    from . import methods
    from .config import run_config

    recipe = methods.get(cfg.method)
    # A caller planning many runs reads and hashes each dataset once (experiments.grid).
    ds = ds if ds is not None else read_sprec_folder(cfg.dataset)
    data_key = data_key if data_key is not None else dataset_hash(cfg.dataset)
    existing = None
    if folder is not None and (Path(folder) / "config.json").exists():
        existing = Run(folder)  # raises RunConfigMismatch when it was made with another config
    n_train = len(ds.train) if cfg.train_rows is None else min(cfg.train_rows, len(ds.train))
    n_eval = len(ds.splits[cfg.eval.split]) if cfg.eval.rows is None else min(cfg.eval.rows, len(ds.splits[cfg.eval.split]))
    bench = _benchmark(cfg.profile)
    from .methods import StagePlan
    from .trainers import resolve_dtype, slow_bf16_warning

    dtype = resolve_dtype(cfg.model.dtype)  # "auto" as this machine would resolve it

    shared = ([StagePlan("pretrain", "pretrain", "pretrain")] if cfg.model.profile == "tiny" else []) + [
        StagePlan("sft", "sft", "sft", n_train), StagePlan("eval sft", "eval", None, n_eval)] if recipe.llm else []
    stages = []
    for s in shared + recipe.plan(cfg):
        rows = n_eval if s.kind == "eval" else (min(s.rows, n_train) if s.rows is not None else None)
        stage = _stage_cfg(cfg, s.section)
        steps = _steps(rows, stage) if stage is not None else None
        seconds, tokens = _estimate(s.kind, rows, steps, stage, bench, dtype)
        status = "to run"
        if s.kind == "eval":  # a shared stage's evaluation is shared too (None: the run's own)
            key, model = shared_stage_key(cfg, s.name[5:], data_key), shared_stage_path(cfg, s.name[5:], data_key, cache_dir)
            kept = None if model is None else shared_evaluation_path(cfg, s.name[5:], data_key, model, cache_dir)
            reusable, shared = read_shared_evaluation(kept) is not None, None if key is None else f"{key}-eval"
        else:
            cached = shared_stage_path(cfg, s.name, data_key, cache_dir)  # None: the run's own stage
            reusable, shared = cached is not None and stage_finished(cached), None if cached is None else cached.name
        if existing is not None and (existing.done(s.name) or s.kind == "eval" and existing.has_metrics(s.name[5:])):
            status = "done in the run folder"
        elif reusable:
            status = "reused from the cache"
        note = s.note
        if from_logs and s.kind == "pretrain" and status == "to run":  # the logs' figure, where there is one, beats scaling
            logged, runs = logged_pretrain_seconds(ds.name, steps)
            if logged is not None:
                seconds, note = logged, "; ".join(filter(None, [note, f"estimate: median s/step of {runs} committed run(s)' logs"]))
        if from_logs and seconds is None and status == "to run":  # a kind the benchmark has not timed: the logs, if any
            seconds, runs = logged_stage_seconds(cfg.profile, ds.name, s.name)
            if seconds is not None:
                note = "; ".join(filter(None, [note, f"estimate: median of {runs} committed run(s)' logs"]))
        stages.append({"stage": s.name, "kind": s.kind, "rows": rows, "steps": steps, "tokens": tokens,
                       "estimate_s": seconds, "status": status, "note": note,
                       "shared": shared})
    base = run_config(cfg.profile, dataset=cfg.dataset, method=cfg.method, seed=cfg.seed)
    diff = flat_diff(to_dict(base), to_dict(cfg))
    threads = cfg.model.torch_threads or torch.get_num_threads()
    return {"method": recipe.name, "title": recipe.title, "dataset": ds.name, "profile": cfg.profile, "seed": cfg.seed,
            "device": str(models.device()), "threads": threads, "stages": stages, "changed": diff,
            "benchmark": None if bench is None else f"{bench['path']} ({bench['rows']} rows, {bench.get('threads')} thread(s), {bench.get('date')})",
            "folder": None if folder is None else str(folder), "resumes": existing is not None,
            "warnings": [w for w in [slow_bf16_warning(dtype), _other_cpu_warning(bench)] if w]}


def _other_cpu_warning(bench: dict | None) -> str | None:
    """A warning when the benchmark behind the estimates was taken on another kind of CPU (its
    capability string, e.g. AVX512 against AVX2): there the estimates can be off by a factor (2.4x
    slower tiny pretraining seen on an AVX2 EPYC against the AVX512 machine of the benchmarks)."""
    import torch

    if bench is None or torch.cuda.is_available():
        return None
    here = torch.backends.cpu.get_cpu_capability()
    there = (bench.get("cpu") or {}).get("cpu_capability")
    if there == here:
        return None
    return (f"the benchmark behind the estimates was taken on {'an ' + there + ' CPU' if there else 'a CPU it does not record'}; "
            f"this one is {here}: expect other times (rerun benchmarks/sprec_iteration.py here for this machine's)")


