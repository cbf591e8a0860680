"""A method as a sequence of stages in a run folder: ``train(cfg, folder)`` runs or resumes it.

| method | stages (each starts from the one before) |
|---|---|
| ``sft``  (BIGRec) | [pretrain (tiny)] -> sft |
| ``dpo``  | ... sft -> dpo (one uniformly random negative per row) |
| ``sdpo`` | ... sft -> sdpo (``sdpo.n_negatives`` random negatives, Softmax-DPO loss) |
| ``sprec``| ... sft -> it1-negatives -> it1-sft -> it1-dpo -> it2-negatives -> ... (T iterations) |

Every model stage is evaluated on the test split (``metrics/<stage>.json``); for SPRec that is the
end of every iteration (the per-iteration curves of the paper's Fig. 4). ``sft`` is iteration 0.

Stages shared between runs: ``pretrain`` depends on the dataset and the model only (its seed is
fixed: it plays the part of a pretrained LLM's weights), ``sft`` on those plus the SFT settings
and the run's seed. Both are cached under the asset cache and reused by every method's run with
the same inputs, so SFT, DPO, S-DPO and SPRec of one seed start from the very same SFT model.
Runs started together take turns (:func:`shared_stage_lock`): one trains, the others wait and reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import models
from .assets import cache_root
from .config import RunConfig, to_dict
from .data import Dataset
from .data.sprec_format import read_sprec_folder
from .evaluation import evaluate
from .prompts import input_text, prompt, target_completion
from .runs import CHECKPOINT_MINUTES, Run, stage_seed, write_json
from .selfplay import negatives_for, preference_rows, sample_rows

PRETRAIN_SEED = 0
METHODS = ("sft", "dpo", "sdpo", "sprec")


def dataset_hash(folder: str | Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*.json")):
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


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

    # -- models --------------------------------------------------------------------------------
    def load(self, stage: str | None):
        """Bring the model that ``stage`` ended with into memory (None: the untrained base model)."""
        if self.at == stage:
            return
        if stage is None:
            self.model, self.tokenizer = models.base_model(self.cfg.model, self.ds, PRETRAIN_SEED, self.cache_dir)
            self.model.to(models.device())
        else:
            self.model, self.tokenizer = models.load(self.run.model_dir(stage), self.cfg.model, self.cache_dir)
        self.at = stage

    def shared_key(self, stage: str) -> str | None:
        """Cache key of a stage that runs of other methods can reuse (None: not shared)."""
        c = to_dict(self.cfg)
        if stage == "pretrain":
            parts = {"data": self.data_key, "model": c["model"], "pretrain": c["pretrain"]}
        elif stage == "sft":
            parts = {"data": self.data_key, "model": c["model"], "pretrain": c["pretrain"], "sft": c["sft"],
                     "train_rows": c["train_rows"], "seed": c["seed"]}
        else:
            return None
        return stage + "-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def stage(self, name: str, start: str | None, fn) -> None:
        """Run ``fn(model, tokenizer, seed, out_dir) -> model`` as stage ``name`` unless it is done."""
        run = self.run
        if run.done(name):
            return
        run.clear(name)
        key = self.shared_key(name)
        if key is None:
            self._train_stage(name, start, fn)
            return
        cached = cache_root(self.cache_dir) / "stages" / key
        # One run at a time trains a shared stage: a second run of the same stage (two seeds' DPO
        # and S-DPO started together) waits, then reuses it instead of training it twice.
        with shared_stage_lock(cached.with_name(cached.name + ".lock"), lambda: run.log(
                f"stage {name}: waiting for another run that trains it ({cached.name})")):
            if (cached / "DONE").exists():
                shutil.rmtree(run.stage_dir(name), ignore_errors=True)  # e.g. our own interrupted attempt's checkpoints
                shutil.copytree(cached, run.stage_dir(name))
                run.log(f"stage {name}: reused {cached}")
                return
            self._train_stage(name, start, fn)
            tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
            shutil.copytree(run.stage_dir(name), tmp, dirs_exist_ok=True)
            if cached.exists():  # left by a copy that did not finish (no DONE): replace it
                shutil.rmtree(cached)
            tmp.replace(cached)

    def _train_stage(self, name: str, start: str | None, fn) -> None:
        from . import trainers

        run = self.run
        self.load(start)
        seed = PRETRAIN_SEED if name == "pretrain" else stage_seed(self.cfg.seed, name)
        run.log(f"stage {name}: starting from {start or 'the base model'} (seed {seed})")
        if resume := trainers.last_checkpoint(run.stage_dir(name)):
            run.log(f"stage {name}: resuming from {resume.name} (its trainer state, optimizer and RNG)")
        model = fn(self.model, self.tokenizer, seed, run.stage_dir(name))
        models.save(model, self.tokenizer, run.model_dir(name))
        self.model, self.at = model, name
        run.mark_done(name)

    def evaluate(self, stage: str, label: str | None = None) -> dict:
        """Evaluate the model ``stage`` ended with (once: a finished evaluation is read back)."""
        label = label or stage
        path = self.run.metrics_path(label)
        if path.exists():
            return json.loads(path.read_text())
        self.load(stage)
        if self.cfg.eval.mode == "grounded" and self._grounder is None:
            from .evaluation import Grounder

            self._grounder = Grounder(self.ds, self.cache_dir)
        predictions, metrics = evaluate(self.model, self.tokenizer, self.ds, self.cfg.eval, self.cache_dir, self._grounder)
        metrics["stage"] = stage
        path_p = self.run.predictions_path(label)
        path_p.parent.mkdir(parents=True, exist_ok=True)
        predictions.to_parquet(path_p)
        write_json(metrics, path)
        at1, at5 = metrics.get("@1", {}), metrics.get(f"@{max(self.cfg.eval.ks)}", {})
        self.run.log(f"eval {label}: valid_ratio {metrics['valid_ratio']:.3f}, HR@{max(self.cfg.eval.ks)} "
                     f"{at5.get('HR', float('nan')):.4f}, DivRatio@1 {at1.get('DivRatio', float('nan')):.4f}, "
                     f"ORRatio@1 {at1.get('ORRatio', float('nan')):.4f}")
        return metrics

    # -- stages --------------------------------------------------------------------------------
    def base_stage(self) -> str | None:
        """``pretrain`` for the tiny profile (the model and tokenizer start here), else the base model."""
        if self.cfg.model.profile != "tiny":
            return None
        from . import trainers

        self.stage("pretrain", None, lambda m, t, seed, out: trainers.pretrain(
            m, t, pretrain_texts(self.ds), self.cfg.pretrain, out, seed, checkpoint_minutes=self.checkpoint_minutes))
        return "pretrain"

    def sft_stage(self, start: str | None) -> str:
        from . import trainers

        rows = sft_rows(training_rows(self.ds, self.cfg), self.ds)

        def fn(model, tokenizer, seed, out):
            if self.cfg.model.lora and not hasattr(model, "peft_config"):
                model = models.add_lora(model, self.cfg.model)
            return trainers.sft(model, tokenizer, rows, self.cfg.sft, out, seed, checkpoint_minutes=self.checkpoint_minutes)

        self.stage("sft", start, fn)
        return "sft"

    def preference_stage(self, name: str, start: str, n_negatives: int, stage_cfg) -> str:
        """DPO (n = 1) or S-DPO (n > 1) on uniformly random negatives."""
        from . import trainers
        from .config import SPRecConfig

        rows = training_rows(self.ds, self.cfg)
        rng = np.random.default_rng([self.cfg.seed, 2])
        negs = negatives_for(rows, self.ds, SPRecConfig(negatives="random", n_negatives=n_negatives), rng)
        pairs, _ = preference_rows(rows, negs, self.ds, n_negatives, stage_cfg.template)
        train = trainers.dpo if n_negatives == 1 else trainers.sdpo
        self.stage(name, start, lambda m, t, seed, out: train(m, t, pairs, stage_cfg, out, seed, checkpoint_minutes=self.checkpoint_minutes))
        return name

    def sprec_iterations(self, start: str) -> str:
        from . import trainers

        cfg = self.cfg.sprec
        pool = training_rows(self.ds, self.cfg)
        prev = start
        for it in range(1, cfg.iterations + 1):
            rng = np.random.default_rng([self.cfg.seed, 100 + it])
            rows = sample_rows(pool, cfg.train_rows, rng)
            valid = sample_rows(self.ds.valid, cfg.valid_rows, rng)  # the SFT step's eval loss
            negs_path = self.run.negatives_path(f"it{it}")
            if negs_path.exists():
                import pandas as pd

                negs = pd.read_parquet(negs_path)
                negs["negatives"] = negs["negatives"].map(list)
            else:
                self.load(prev)
                negs = negatives_for(rows, self.ds, cfg, rng, self.model, self.tokenizer, self.cfg.eval.batch_size)
                negs_path.parent.mkdir(parents=True, exist_ok=True)
                negs.to_parquet(negs_path)
            pairs, skipped = preference_rows(rows, negs, self.ds, cfg.n_negatives, cfg.dpo.template)
            in_cat = float(np.mean([all(v) for v in negs["in_catalogue"] if len(v)])) if len(pairs) else 0.0
            self.run.log(f"it{it}: {len(pairs)} preference pairs, {skipped} rows skipped (negative = positive or "
                         f"no title parsed); {in_cat:.1%} of the negatives are catalogue titles")
            if cfg.sft_step:
                self.stage(f"it{it}-sft", prev, lambda m, t, seed, out: trainers.sft(
                    m, t, sft_rows(rows, self.ds), cfg.sft, out, seed, eval_rows=sft_rows(valid, self.ds), checkpoint_minutes=self.checkpoint_minutes))
                prev = f"it{it}-sft"
            if cfg.dpo_step:
                train = trainers.dpo if cfg.n_negatives == 1 else trainers.sdpo

                def dpo_step(m, t, seed, out, pairs=pairs, train=train, it=it):
                    if not pairs:  # every negative was skipped: nothing to learn from
                        self.run.log(f"it{it}-dpo: no preference pairs; the model passes through unchanged")
                        return m
                    return train(m, t, pairs, cfg.dpo, out, seed, checkpoint_minutes=self.checkpoint_minutes)

                self.stage(f"it{it}-dpo", prev, dpo_step)
                prev = f"it{it}-dpo"
            self.evaluate(prev, label=f"it{it}")
        return prev


def train(cfg: RunConfig, folder: str | Path, cache_dir=None, checkpoint_minutes: float | None = CHECKPOINT_MINUTES) -> Run:
    """Run (or resume) ``cfg.method`` in ``folder``; returns the run (metrics under ``metrics/``).

    A stage cut short resumes from its latest checkpoint, saved every ``checkpoint_minutes`` of
    training (None: no checkpoints inside a stage; the run still resumes stage by stage). The
    interval is not part of the run's config: it changes when work is saved, not the result."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r} (methods: {', '.join(METHODS)})")
    run = Run(folder, cfg)
    ds = read_sprec_folder(cfg.dataset)
    p = Pipeline(run, ds, cache_dir, checkpoint_minutes)
    run.log(f"{cfg.method} on {ds.name} ({cfg.profile} profile, seed {cfg.seed})")
    start = p.base_stage()
    last = p.sft_stage(start)
    p.evaluate("sft")
    if cfg.method == "dpo":
        last = p.preference_stage("dpo", "sft", 1, cfg.dpo)
        p.evaluate(last)
    elif cfg.method == "sdpo":
        last = p.preference_stage("sdpo", "sft", cfg.sdpo.n_negatives, cfg.sdpo)
        p.evaluate(last)
    elif cfg.method == "sprec":
        last = p.sprec_iterations("sft")
    if not (run.folder / "FINISHED").exists():
        write_json({"method": cfg.method, "final_stage": last}, run.folder / "FINISHED")
        run.log(f"finished: {cfg.method}, final stage {last}")
    return run



def evaluate_run(folder: str | Path, stage: str | None = None, assignments: list[str] | None = None, cache_dir=None) -> Run:
    """Evaluate a finished stage of a run (default: its final one), optionally with other eval
    settings (``eval.mode=constrained``, ``eval.split=valid``, ...); the metrics are labelled
    ``<stage>`` or, with other settings, ``<stage>-<mode>-<k>`` plus ``-<split>`` off the test split."""
    import dataclasses

    from .config import override

    run = Run(folder)
    if stage is None:
        finished = run.folder / "FINISHED"
        if not finished.exists():
            raise FileNotFoundError(f"{finished}: the run has not finished; name a finished stage with --stage")
        stage = json.loads(finished.read_text())["final_stage"]
    if not run.done(stage):
        raise FileNotFoundError(f"{run.stage_dir(stage)}: stage {stage!r} has not finished")
    cfg = override(run.cfg, assignments)
    label = stage
    if cfg.eval != run.cfg.eval:
        label = f"{stage}-{cfg.eval.mode}-{max(cfg.eval.ks)}" + ("" if cfg.eval.split == "test" else f"-{cfg.eval.split}")
    p = Pipeline(run, read_sprec_folder(cfg.dataset), cache_dir)
    p.cfg = dataclasses.replace(p.cfg, eval=cfg.eval)
    p.evaluate(stage, label)
    return run
