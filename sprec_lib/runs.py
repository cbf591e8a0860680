"""The run: one folder per run, a typed record that describes itself. Only this module knows its layout.

```
RUN/config.json              the resolved RunConfig, the run's spec (method, variant, label, seed,
                             dataset, profile), package versions, the machine, git commit
RUN/manifest.json            the ordered lists of finished stages and evaluated labels
RUN/FINISHED                 written last: the run finished, and its final stage
RUN/log.txt                  what happened, appended, with full dates
RUN/stages/<stage>/model/    the checkpoint after the stage (a full model, or a LoRA adapter)
RUN/stages/<stage>/log_history.json   the trainer's losses
RUN/stages/<stage>/DONE      written last: the stage finished
RUN/stages/<stage>/checkpoint-<step>/  while a stage trains: its latest trainer checkpoint
RUN/stages/<stage>/epoch<N>/model/     with StageConfig.save_epochs: the model at the end of epoch
RUN/stages/<stage>/epoch<N>/DONE       N (every epoch but the last), and its record (as a stage's)
RUN/negatives/<stage>.parquet         self-play negatives
RUN/predictions/<label>.parquet       evaluation predictions
RUN/metrics/<label>.json              evaluation metrics
RUN/partial/<decode>.jsonl            while a decode runs: its finished batches, to resume from
                                      (sprec_lib.decoding.DecodeJournal; removed when it ends)
```

Running again on the same folder skips every stage whose ``DONE`` marker exists and starts the
first unfinished one from the last finished stage's model, or from the unfinished stage's latest
trainer checkpoint where it has one (saved every few minutes of training); every stage seeds
itself from the run's seed and its own name, so a resumed run ends where an uninterrupted one would.

The order of stages and evaluations is the manifest's, never the files' modification times (which
a ``git clone`` resets). Runs written before the manifest existed (the first committed results) get
the recipe order: ``pretrain``, ``sft``, the preference stage, then the iterations by number.

:class:`RunSpec` names a run: its folder is ``<root>/<dataset>-<profile>/<label>-seed<seed>``
(:meth:`RunSpec.folder`), and nothing else builds or parses that name.

Under ``accelerate launch`` (several processes, :mod:`sprec_lib.distributed`) only the main process
writes: on the others every method that writes (the config, the log, markers, the manifest,
negatives, predictions, metrics, the folder's lock) does nothing, and reading works as ever.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .assets import sha256_file
from .config import RunConfig, flat_diff, from_dict, run_config, to_dict, without_neutral_switches
from .distributed import is_main

# Minutes of training between two trainer checkpoints inside a stage (sprec_lib.trainers._train).
CHECKPOINT_MINUTES = 10.0

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "tokenizers", "sentence-transformers", "sprec-book")

CONFIG, MANIFEST, FINISHED, DONE, LOG, LOCK = "config.json", "manifest.json", "FINISHED", "DONE", "log.txt", ".lock"


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine(threads: int | None = None) -> dict:
    """What the numbers depend on beyond the config: same seed, same metrics holds only on one CPU
    kind at one thread count (float sums are ordered differently with other SIMD widths or threads).
    Two CPUs with one capability string can differ too (MKL and oneDNN pick kernels by vendor and
    ISA: :data:`sprec_lib.cpu.KERNEL_FLAGS`), so the vendor, model and those flags are recorded."""
    import platform

    import torch

    from .cpu import cpu_identity, freed_memory_kept

    cpu = cpu_identity()  # the capability string alone does not tell two AVX512 CPUs' kernels apart
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": threads or torch.get_num_threads(),
            "cpu_vendor": cpu["vendor"], "cpu_model": cpu["model"], "cpu_isa": cpu["isa"],
            "malloc_keeps_freed_memory": freed_memory_kept(),
            "processor": platform.machine(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def stage_seed(seed: int, stage: str) -> int:
    """A per-stage seed: stable across processes (unlike ``hash``), distinct per stage."""
    return (seed * 1_000_003 + int(hashlib.sha256(stage.encode()).hexdigest()[:8], 16)) % 2**31


def write_json(obj, path: Path) -> None:
    """Write atomically: a unique temporary file, then a rename (a kill never leaves half a file)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def _write_parquet(frame, path: Path) -> None:
    """Atomically, as :func:`write_json`: a kill during the write leaves the old file or none."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    frame.to_parquet(tmp)
    tmp.replace(path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def _done_record(stage_dir: Path) -> dict | None:
    """The stage's ``DONE`` record, or None (absent, or not a JSON object: never a finished stage)."""
    try:
        doc = read_json(Path(stage_dir) / DONE)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def model_checksums(stage_dir: Path) -> dict | None:
    """The size and sha256 of each file of a finished stage's model, from its ``DONE`` record; None
    when the record is missing or holds none. The identity of the very weights a stage ended with."""
    record = _done_record(stage_dir)
    return (record.get("model_files") or None) if record is not None else None


def stage_finished(stage_dir: Path) -> bool:
    """Whether a stage folder (in a run, or a copy in the shared stage cache) holds a finished stage:
    its ``DONE`` marker exists and parses (cheap; :func:`verify_stage` checks the model against it)."""
    return _done_record(stage_dir) is not None


def _model_files(stage_dir: Path) -> dict[str, dict]:
    """Size and sha256 of every file of the stage's ``model/`` folder, by POSIX path inside it."""
    model = Path(stage_dir) / "model"
    if not model.is_dir():
        return {}
    return {p.relative_to(model).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(model.rglob("*")) if p.is_file()}


def mark_stage_finished(stage_dir: Path, **info) -> None:
    """Write ``DONE`` (last, atomically), with the size and sha256 of each file of the stage's model
    (``model_files``), which :func:`verify_stage` checks before the model is loaded or reused."""
    write_json({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info, "model_files": _model_files(stage_dir)},
               Path(stage_dir) / DONE)


def clear_stage_record(stage_dir: Path) -> None:
    """Remove a stage folder's ``DONE`` (before its model is saved again: the old record must not
    vouch for a model being replaced)."""
    (Path(stage_dir) / DONE).unlink(missing_ok=True)


def verify_stage(stage_dir: Path) -> str | None:
    """What is wrong with a finished stage's saved model (a file missing, of another size or
    content than its ``DONE`` record says), or None when it matches. A ``DONE`` written before the
    record existed (no ``model_files``: the first runs) is trusted as it is."""
    stage_dir = Path(stage_dir)
    doc = _done_record(stage_dir)
    if doc is None:
        return f"{stage_dir / DONE} is missing or unreadable"
    recorded = doc.get("model_files")
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        return f"{stage_dir / DONE}: its model_files record is not a mapping"
    model = stage_dir / "model"
    for rel, want in sorted(recorded.items()):
        path = model / rel
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{path} has {size} bytes, {want.get('size')} when the stage finished"
        if sha256_file(path) != want.get("sha256"):
            return f"{path} differs from the file saved when the stage finished (sha256)"
    return None


def copy_stage(src: Path, dest: Path) -> str | None:
    """Copy a finished stage folder to ``dest`` (replaced), its ``DONE`` last, and verify the copy
    against that record, and each epoch snapshot's copy against its own: None when all verify,
    else the problem (``dest`` is then removed). Used both ways between a run and the shared stage
    cache."""
    src, dest = Path(src), Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    try:  # the snapshots' DONE files come with their folders; the stage's own comes last
        shutil.copytree(src, dest, ignore=lambda folder, names: [DONE] if Path(folder) == src else [])
        shutil.copy2(src / DONE, dest / DONE)
    except OSError as e:
        shutil.rmtree(dest, ignore_errors=True)
        return f"copying {src} to {dest} failed: {e}"
    problem = verify_stage(dest)
    for snapshot in stage_snapshots(dest).values():
        problem = problem or verify_stage(snapshot)
    if problem is not None:
        shutil.rmtree(dest, ignore_errors=True)
    return problem


# -- epoch snapshots (StageConfig.save_epochs) ---------------------------------------------------
# A snapshot folder ``<stage folder>/epoch<N>/`` is laid out as a stage folder (``model/`` and a
# ``DONE`` record of its files: mark_stage_finished, verify_stage); inside a pipeline it is named
# ``<stage>@epoch<N>`` (snapshot_name), e.g. for Pipeline.load.
_SNAPSHOT = re.compile(r"^epoch([1-9]\d*)$")
_SNAPSHOT_NAME = re.compile(r"^(.+)@epoch([1-9]\d*)$")


def snapshot_dir(stage_dir: Path, epoch: int) -> Path:
    """Where a stage folder keeps the model of the end of its epoch ``epoch`` (1, 2, ...)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"an epoch snapshot's epoch is an int >= 1, got {epoch!r}")
    return Path(stage_dir) / f"epoch{epoch}"


def stage_snapshots(stage_dir: Path) -> dict[int, Path]:
    """The finished epoch snapshots of a stage folder (their ``DONE`` parses), by epoch, in order."""
    stage_dir = Path(stage_dir)
    found = {int(m.group(1)): p for p in stage_dir.glob("epoch*")
             if (m := _SNAPSHOT.match(p.name)) and p.is_dir() and stage_finished(p)} if stage_dir.is_dir() else {}
    return dict(sorted(found.items()))


def snapshot_name(stage: str, epoch: int) -> str:
    """The name of stage ``stage``'s snapshot after epoch ``epoch`` in a pipeline: ``sft@epoch1``."""
    snapshot_dir(Path("."), epoch)  # checks the epoch
    return f"{stage}@epoch{epoch}"


def split_snapshot(name: str) -> tuple[str, int | None]:
    """``"sft@epoch1"`` -> ``("sft", 1)``; a stage's own name -> ``(name, None)``."""
    m = _SNAPSHOT_NAME.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


_ITERATION = re.compile(r"^it(\d+)(?:-(.*))?$")
_BASE_ORDER = {"pretrain": 0, "sft": 1}
_ITERATION_ORDER = {"negatives": 0, "sft": 1, "dpo": 2, None: 3}


def recipe_order(label: str) -> tuple:
    """The order a recipe makes its stages and evaluations in: ``pretrain``, ``sft``, the other
    stages after SFT, then ``it1``'s negatives, SFT, DPO and evaluation, ``it2``'s, ... A label
    with a suffix (``sft-constrained-5``: a re-evaluation) follows its stage."""
    m = _ITERATION.match(label)
    if m:
        rest = m.group(2)
        step = rest if rest in _ITERATION_ORDER else None
        return (2, int(m.group(1)), _ITERATION_ORDER[step], rest or "")
    base = label.split("-", 1)[0]
    return (0 if base in _BASE_ORDER else 1, _BASE_ORDER.get(base, 0), 0, label)


class RunConfigMismatch(ValueError):
    pass


class RunLocked(RuntimeError):
    """Another process is training in this run folder."""


class StageInterrupted(Exception):
    """A stage stopped on SIGTERM or SIGINT after saving a checkpoint to resume from."""


def provenance(threads: int | None) -> dict:
    """What every run record's ``config.json`` says about where and when it was made: package
    versions, the machine (at ``threads`` torch threads), the git commit and the time."""
    return {"versions": versions(), "machine": machine(threads), "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def config_mismatch(path: Path, saved: dict, asked: dict) -> str:
    """The message of a run folder asked to resume with another config: the fields that differ."""
    diff = {k: (v, asked.get(k)) for k, v in saved.items() if asked.get(k) != v}
    return (f"{path}: this run was started with a different config (saved vs asked: {diff}); "
            "use a new run folder to change it")


class Run:
    """A run folder: its config and spec, the stages it finished, what it evaluated, whether it ended."""

    def __init__(self, folder: str | Path, cfg: RunConfig | None = None, variant: str | None = None):
        """Open (or create) a run folder. A new run needs ``cfg`` (and its ``variant``: the name of
        the overrides that make it, e.g. ``nosft``); an existing one keeps its own, and refuses a
        different ``cfg`` (start a new folder, or delete this one, to change it). A ``cfg`` that differs
        only in the stages' speed switches or measure-only settings
        (:data:`~sprec_lib.config.NEUTRAL_SWITCHES`) is not different: the run goes on with the
        settings it was started with."""
        self.folder = Path(folder)
        path = self.folder / CONFIG
        if path.exists():
            saved_doc = read_json(path)
            saved = from_dict(RunConfig, saved_doc["config"])
            # A config that differs only in the neutral switches resumes the run as it was started.
            if cfg is not None and without_neutral_switches(to_dict(cfg)) != without_neutral_switches(to_dict(saved)):
                raise RunConfigMismatch(config_mismatch(path, to_dict(saved), to_dict(cfg)))
            if cfg is not None and is_main():
                ignored = flat_diff(to_dict(saved), to_dict(cfg))  # the neutral switches only, here
                if ignored:  # say so: a measure asked for (e.g. sprec.eval_sft_steps) will not be made
                    import warnings

                    warnings.warn(f"{self.folder}: the run resumes with the settings it was started with; asked "
                                  + ", ".join(f"{k}={now!r} (the run has {was!r})" for k, (was, now) in ignored.items())
                                  + ". Use a new run folder to have them.", stacklevel=2)
            self.cfg, self._spec = saved, saved_doc.get("spec")
        else:
            if cfg is None:
                raise FileNotFoundError(f"{path}: no run here (no {CONFIG})")
            self.cfg = cfg
            if variant is None:  # a folder named by RunSpec says its variant; else the method alone
                variant = _variant_from_name(self.folder.name, cfg.method)
            self._spec = {"method": cfg.method, "variant": variant, "label": _label(cfg.method, variant),
                          "seed": cfg.seed, "dataset": Path(cfg.dataset).name, "profile": cfg.profile}
            if not is_main():  # another process of a launch: the main process writes the config
                return
            write_json({"config": to_dict(cfg), "spec": self._spec, **provenance(cfg.model.torch_threads)}, path)

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r}, {self.label}, seed {self.seed})"

    # -- what the run is -----------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.cfg.method

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def dataset(self) -> str:
        return Path(self.cfg.dataset).name

    @property
    def variant(self) -> str:
        if self._spec:
            return self._spec["variant"]
        return _variant_from_name(self.folder.name, self.cfg.method)

    @property
    def label(self) -> str:
        """The method and variant (``sprec-nosft``): the run's row in a table."""
        return _label(self.method, self.variant)

    # -- stages --------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.folder / "stages" / stage

    def model_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "model"

    def snapshot_dir(self, stage: str, epoch: int) -> Path:
        """The folder of ``stage``'s snapshot after epoch ``epoch`` (``model/`` and ``DONE``;
        StageConfig.save_epochs): :func:`verify_stage` verifies it, its ``model/`` loads as a stage's."""
        return snapshot_dir(self.stage_dir(stage), epoch)

    def snapshots(self, stage: str) -> list[int]:
        """The epochs whose snapshot ``stage`` keeps (finished: a ``DONE`` that parses), in order."""
        return list(stage_snapshots(self.stage_dir(stage)))

    def done(self, stage: str) -> bool:
        """Cheap: the stage's ``DONE`` marker exists and parses (:meth:`verify` checks its model)."""
        return stage_finished(self.stage_dir(stage))

    def verify(self, stage: str) -> str | None:
        """What is wrong with the finished ``stage``'s saved model (see :func:`verify_stage`), or None."""
        return verify_stage(self.stage_dir(stage))

    def mark_done(self, stage: str, **info) -> None:
        if not is_main():
            return
        mark_stage_finished(self.stage_dir(stage), **info)
        self._append("stages", stage)
        self.log(f"stage {stage} done" + (f" {info}" if info else ""))

    def reopen(self, stage: str, why: str) -> None:
        """Take back a finished ``stage`` whose model does not verify: its ``DONE`` goes (so the
        stage runs again), and the log says ``why``."""
        if not is_main():
            return
        (self.stage_dir(stage) / DONE).unlink(missing_ok=True)
        self.log(f"stage {stage}: {why}; running it again")

    def adopt(self, stage: str, source: Path) -> None:
        """Record a finished ``stage`` copied in from ``source`` (the shared stage cache)."""
        if not is_main():
            return
        self._append("stages", stage)
        self.log(f"stage {stage}: reused {source}")

    def clear(self, stage: str) -> None:
        """Remove what an interrupted attempt at ``stage`` left behind, except its trainer
        checkpoints (``checkpoint-<step>/``), from which the stage resumes, and its finished epoch
        snapshots (``epoch<N>/`` with a ``DONE``: a stage resumed past an epoch's end cannot make
        that epoch's snapshot again; one it makes again is overwritten)."""
        if not is_main():
            return
        if self.stage_dir(stage).exists() and not self.done(stage):
            keep = set(stage_snapshots(self.stage_dir(stage)).values())
            for path in self.stage_dir(stage).iterdir():
                if path in keep:
                    for inner in path.iterdir():  # a save cut short leaves model.tmp<pid>/
                        if inner.name not in ("model", DONE):
                            shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
                elif not (path.is_dir() and path.name.startswith("checkpoint-")):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    @property
    def stages(self) -> list[str]:
        """The finished stages, in the order they finished."""
        listed = self._manifest().get("stages")
        if listed is not None:
            return [s for s in listed if self.done(s)]
        found = [p.parent.name for p in (self.folder / "stages").glob(f"*/{DONE}")]
        return sorted(found, key=recipe_order)

    # -- the end ---------------------------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        return (self.folder / FINISHED).exists()

    @property
    def final_stage(self) -> str | None:
        return read_json(self.folder / FINISHED)["final_stage"] if self.is_finished else None

    def finish(self, final_stage: str) -> None:
        """Mark the run finished, ``final_stage`` being the model its headline metrics come from.

        On a run that had finished already (``sprec train`` called again on its folder, e.g. to
        fill the stage cache) the mark stays as it was, and only the ``finished:`` line is logged
        again: it closes the process segment that the new start line opened, so that the compute
        read from the log (:func:`sprec_lib.results.run_compute`) does not stretch that segment's
        upper bound to whatever starts next."""
        if not is_main():
            return
        if self.is_finished:
            self.log(f"finished: {self.label}, final stage {self.final_stage} (had finished; nothing trained)")
            return
        write_json({"method": self.method, "final_stage": final_stage}, self.folder / FINISHED)
        self.log(f"finished: {self.label}, final stage {final_stage}")

    # -- evaluations ---------------------------------------------------------------------------
    def metrics_path(self, label: str) -> Path:
        return self.folder / "metrics" / f"{label}.json"

    def predictions_path(self, label: str) -> Path:
        return self.folder / "predictions" / f"{label}.parquet"

    def partial_path(self, decode: str) -> Path:
        """Where a decode in progress (``eval-<label>``, ``negatives-<stage>``) keeps its finished
        batches (:class:`~sprec_lib.decoding.DecodeJournal`); never exported."""
        return self.folder / "partial" / f"{decode}.jsonl"

    def negatives_path(self, stage: str) -> Path:
        return self.folder / "negatives" / f"{stage}.parquet"

    def save_negatives(self, stage: str, frame) -> None:
        if is_main():
            _write_parquet(frame, self.negatives_path(stage))

    def load_negatives(self, stage: str):
        """The negatives saved for ``stage`` (lists restored), or None."""
        import pandas as pd

        path = self.negatives_path(stage)
        if not path.exists():
            return None
        frame = pd.read_parquet(path)
        frame["negatives"] = frame["negatives"].map(list)
        return frame

    def save_predictions(self, label: str, frame) -> None:
        if is_main():
            _write_parquet(frame, self.predictions_path(label))

    def has_metrics(self, label: str) -> bool:
        return self.metrics_path(label).exists()

    def record_metrics(self, label: str, metrics: dict) -> None:
        if not is_main():
            return
        write_json(metrics, self.metrics_path(label))
        self._append("evaluations", label)

    @property
    def labels(self) -> list[str]:
        """The evaluated labels, in the order they were evaluated (``sft``, then ``it1``, ...)."""
        found = {p.stem for p in (self.folder / "metrics").glob("*.json")}
        listed = [x for x in self._manifest().get("evaluations", []) if x in found]
        return listed + sorted(found - set(listed), key=recipe_order)

    def metrics_of(self, label: str) -> dict:
        """One evaluation's metrics."""
        return read_json(self.metrics_path(label))

    def metrics(self) -> dict[str, dict]:
        """Every evaluation's metrics, in :attr:`labels` order."""
        return {label: self.metrics_of(label) for label in self.labels}

    @property
    def final_label(self) -> str | None:
        """The label of the final stage's own evaluation: the stage's name, or the iteration's for
        SPRec (``it3``); other labels of that stage (``it3-dpo-grounded-5-valid``) are
        re-evaluations with other settings. None: not finished, or not evaluated."""
        final = self.final_stage
        for label in self.labels:
            if (label == final or _ITERATION.match(label) and "-" not in label) and \
                    self.metrics_of(label).get("stage") == final:
                return label
        return None

    def final_metrics(self) -> dict:
        """The metrics of a finished run's final stage (:attr:`final_label`)."""
        if not self.is_finished:
            raise FileNotFoundError(f"{self.folder}: the run has not finished")
        label = self.final_label
        if label is None:
            raise FileNotFoundError(f"{self.folder}: no evaluation of its final stage {self.final_stage!r}")
        return self.metrics_of(label)

    @contextmanager
    def lock(self):
        """Hold the run folder for this process: a second ``sprec train`` on the same ``--out``
        stops at once with :class:`RunLocked`, naming the process that holds it. (Where ``fcntl``
        is missing, i.e. Windows, there is no lock.) Under ``accelerate launch`` the main process
        holds it for all, and its :class:`RunLocked` is raised on every process."""
        from .distributed import on_main

        with ExitStack() as held:
            on_main(lambda: held.enter_context(self._hold()), share=False)
            yield

    @contextmanager
    def _hold(self):
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is None or not is_main():
            yield
            return
        import os

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLocked(f"{self.folder}: a run is training here ({holder}); wait for it, or stop it first") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- the log and the manifest ---------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append ``message`` to the log, dated, and print it (on the main process only)."""
        if not is_main():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.folder / LOG, "a") as f:
            f.write(line + "\n")

    def _manifest(self) -> dict:
        path = self.folder / MANIFEST
        return read_json(path) if path.exists() else {}

    def _append(self, key: str, item: str) -> None:
        if not is_main():
            return
        manifest = self._manifest()
        new = not manifest
        if new:  # the first entry, or a run from before the manifest: start it from what is there
            manifest = {"stages": self.stages, "evaluations": self.labels}
        items = manifest.setdefault(key, [])
        if item not in items:
            items.append(item)
        if new or items[-1] == item:
            write_json(manifest, self.folder / MANIFEST)

    # -- export --------------------------------------------------------------------------------
    def export(self, dest: str | Path) -> "Run":
        """Copy the run's small files (config, manifest, log, end marker, metrics, training losses)
        to ``dest``, for git; checkpoints, predictions and negatives stay here (large, or derived
        from data whose terms forbid redistribution). Returns the exported run."""
        dest = Path(dest)
        (dest / "metrics").mkdir(parents=True, exist_ok=True)
        for name in (CONFIG, MANIFEST, LOG, FINISHED):
            if (self.folder / name).exists():
                shutil.copy2(self.folder / name, dest / name)
        for p in (self.folder / "metrics").glob("*.json"):
            shutil.copy2(p, dest / "metrics" / p.name)
        for p in (self.folder / "stages").glob("*/log_history.json"):
            (dest / "losses").mkdir(exist_ok=True)
            shutil.copy2(p, dest / "losses" / f"{p.parent.name}.json")
        return Run(dest)

    def losses(self) -> dict[str, list]:
        """The trainer's log history per stage (from the run's stages, or an export's ``losses/``)."""
        paths = list((self.folder / "losses").glob("*.json")) or list((self.folder / "stages").glob("*/log_history.json"))
        return {(p.stem if p.parent.name == "losses" else p.parent.name): read_json(p)
                for p in sorted(paths, key=lambda p: recipe_order(p.stem if p.parent.name == "losses" else p.parent.name))}


def open_run(folder: str | Path) -> Run | None:
    """The finished run in ``folder``, or None (no run there, or one that has not finished)."""
    folder = Path(folder)
    if (folder / FINISHED).exists() and (folder / CONFIG).exists():
        return Run(folder)
    return None


def reuse_or_make(exported: Path, local: Path, *, open_folder, fits, make, export, may_make: bool, quick: bool,
                  log=print, missing: str = ""):
    """The one order in which both families find a run (:func:`sprec_lib.experiments.obtain` and
    :func:`sprec_lib.cllmr.report.obtain`), for any run type with ``is_finished``:

    1. the exported copy, when it is finished and ``fits`` (made with the settings asked for);
    2. the local folder: a run there made with other settings is never overwritten (it is said, and
       None returned), except a quick one, which is disposable and removed;
    3. the finished local run, or ``make()`` (which resumes an unfinished folder) when ``may_make``
       or ``quick``; otherwise ``missing`` is said and None returned;
    4. unless quick, ``export(run, exported)``, whose value is returned.

    ``open_folder(folder)`` is the run in ``folder`` (finished or not) or None. Quick runs never read
    or write ``exported``: plumbing, not results."""
    if not quick:
        run = open_folder(exported)
        if run is not None and run.is_finished:
            if fits(run):
                return run
            log(f"{exported}: made with other settings; not used")
    run = open_folder(local)
    if run is not None and not fits(run):
        if not quick:
            log(f"{local}: made with other settings; not used (move it away to train this run there)")
            return None
        shutil.rmtree(local)
        run = None
    if run is None or not run.is_finished:
        if not (may_make or quick):
            if missing:
                log(missing)
            return None
        run = make()
    return run if quick else export(run, exported)


def finished_runs(root: str | Path) -> list[Run]:
    """Every finished run folder below ``root``, in path order."""
    return [Run(p.parent) for p in sorted(Path(root).rglob(FINISHED)) if (p.parent / CONFIG).exists()]


# -- naming ------------------------------------------------------------------------------------
def _label(method: str, variant: str) -> str:
    return method + (f"-{variant}" if variant else "")


def _variant_from_name(name: str, method: str) -> str:
    """A folder named ``<method>[-<variant>]-seed<S>`` (:meth:`RunSpec.name`) -> its variant."""
    stem = name.rsplit("-seed", 1)[0] if "-seed" in name else method
    return stem[len(method) + 1:] if stem.startswith(method + "-") else ""


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: a dataset folder, a method, a variant (a name for a few settings
    changed, e.g. the ablations), a profile and a seed."""

    data_dir: str  # a dataset folder (relative to the repository root, or absolute)
    method: str
    seed: int = 0
    profile: str = "tiny"
    variant: str = ""  # names the overrides in the folder name ("" for the method as configured)
    overrides: tuple[str, ...] = ()

    @property
    def dataset(self) -> str:
        return Path(self.data_dir).name

    @property
    def label(self) -> str:
        """The method and variant, e.g. ``sprec-nosft`` (a table's row)."""
        return _label(self.method, self.variant)

    @property
    def name(self) -> str:
        return f"{self.label}-seed{self.seed}"

    def group(self) -> str:
        return f"{self.dataset}-{self.profile}"

    def folder(self, root: str | Path) -> Path:
        """Where this run lives under ``root`` (``runs/`` or ``results/runs/``)."""
        return Path(root) / self.group() / self.name

    def config(self, quick: bool = False) -> RunConfig:
        from .paths import resolve
        from .quick import QUICK_RUN

        extra = list(self.overrides) + (QUICK_RUN if quick else [])
        return run_config(self.profile, extra, dataset=str(resolve(self.data_dir)), method=self.method, seed=self.seed)

    def command(self, runs_root: str = "runs") -> str:
        """The ``sprec train`` command that makes this run."""
        args = ["sprec", "train", "--dataset", self.data_dir, "--method", self.method, "--profile", self.profile,
                "--seed", str(self.seed), "--out", self.folder(runs_root).as_posix()]
        if self.variant:
            args += ["--variant", self.variant]
        if self.overrides:
            args += ["--set", *self.overrides]
        return shlex.join(args)
