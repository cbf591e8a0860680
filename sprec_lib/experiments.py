"""The runs behind the book's tables: named in one place, found or trained.

A run is named by a :class:`RunSpec`: a dataset folder, a method, a variant (the ablations and the
negative-sample studies are SPRec with a few settings changed), a profile and a seed. Its folder is
``<root>/<dataset>-<profile>/<method>[-<variant>]-seed<seed>``, under two roots:

* ``runs/`` (ignored by git): the whole run, checkpoints included; resumable;
* ``results/runs/`` (committed): the small files :func:`sprec_lib.results.export_run` copies out.

:func:`obtain` returns a finished run for a spec; the first of these wins:

1. its exported copy under ``results/runs`` (so that a fresh clone builds the book from the
   committed results, without hours of training),
2. its finished local folder under ``runs/`` (exported first, so the results can be committed),
3. training it, when ``train=True`` (:func:`sprec_lib.pipeline.train` resumes an unfinished folder).

A found run counts only when its saved config is the one the spec asks for, in the sections its
method reads (the dataset compared by folder name, the thread count ignored); a stale copy is
reported and not used. In quick mode the
runs use :data:`~sprec_lib.quick.QUICK_RUN` sizes, live under ``runs/quick/<dataset>-<profile>-<data
hash>``, are trained whatever
``train`` says (seconds each) and never touch ``results/``: their numbers check the plumbing and
are not results.

The book's experiments (the paper's section in brackets):

* :func:`table1_methods`: the registry's Table-1 methods (:func:`sprec_lib.methods.table1`);
* :data:`ABLATIONS`: SPRec, SPRec-noSFT, SPRec-noDPO, SPRec-RN (Table 2);
* :func:`ratio_variants`, :func:`n_negative_variants`: the random-ratio sweep and the number of
  negatives N, each on :data:`NEGATIVE_STUDY` settings (section 5.4, Figs. 5 and 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from . import methods
from .config import RunConfig, to_dict, without_neutral_switches
from .paths import RESULTS, RUNS, resolve
from .runs import CONFIG, Run, RunSpec, open_run, reuse_or_make

__all__ = ["RunSpec", "table1_methods", "ABLATIONS", "ABLATION_LABELS", "NEGATIVE_STUDY", "ratio_variants",
           "n_negative_variants", "sweep", "specs", "matches", "obtain", "obtain_all", "book_specs", "is_done", "grid",
           "slurm_array", "lane_hours", "pack_lanes", "gather", "SCHEDULER_RESOURCES"]


def table1_methods() -> tuple[str, ...]:
    """The methods of Table 1, from the registry (``sprec_lib.methods``)."""
    return methods.table1()

# Variant name -> overrides of the SPRec loop (Table 2).
ABLATIONS: dict[str, tuple[str, ...]] = {
    "": (),  # SPRec itself
    "nosft": ("sprec.sft_step=false",),
    "nodpo": ("sprec.dpo_step=false",),
    "rn": ("sprec.negatives=random",),
}
ABLATION_LABELS = {"": "SPRec", "nosft": "SPRec-noSFT", "nodpo": "SPRec-noDPO", "rn": "SPRec-RN"}

# Section 5.4 trains each iteration on 1,024 rows and averages the last three of five iterations.
NEGATIVE_STUDY: tuple[str, ...] = ("sprec.train_rows=1024", "sprec.iterations=5")
LAST_ITERATIONS = 3
# The point both sweeps share: SPRec itself on those settings (no random negatives, N = 1). One run
# serves as ratio 0 of Fig. 5 and as N = 1 of Fig. 6, instead of two runs of the same recipe.
STUDY_SPREC = "n1024"


def ratio_variants(ratios=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[str, tuple[str, ...]]:
    """The random-ratio sweep (Fig. 5): a share ``r`` of each iteration's negatives drawn at random,
    the rest self-play (``r = 0`` is :data:`STUDY_SPREC`)."""
    return {(STUDY_SPREC if r == 0 else f"ratio{r:g}-n1024"):
            NEGATIVE_STUDY + (() if r == 0 else ("sprec.negatives=mix", f"sprec.random_ratio={r:g}"))
            for r in ratios}


def n_negative_variants(ns=(1, 2, 3, 4)) -> dict[str, tuple[str, ...]]:
    """The number of self-play negatives N (Fig. 6): beam search, the N most probable distinct titles,
    S-DPO's loss over them (N = 1 is plain SPRec's DPO step, :data:`STUDY_SPREC`)."""
    return {(STUDY_SPREC if n == 1 else f"neg{n}-n1024"):
            NEGATIVE_STUDY + (() if n == 1 else (f"sprec.n_negatives={n}",)) for n in ns}


# Each sweep's setting (the column of its rows) -> the variants of its values.
SWEEPS = {"random_ratio": ratio_variants, "n_negatives": n_negative_variants}


def sweep(data_dir: str, setting: str, values, seeds=(0,), profile: str = "tiny", train: bool = True,
          quick: bool = False):
    """One negative-sample sweep (``setting``: a key of :data:`SWEEPS`): find, or train, its runs;
    one row per finished run with the mean metrics of its last :data:`LAST_ITERATIONS` iterations
    (quick runs have two: their last one) and the setting's value
    (:func:`sprec_lib.results.sweep_rows`)."""
    from .results import sweep_rows

    variants = SWEEPS[setting](values)
    pairs = obtain_all(specs(data_dir, ["sprec"], seeds, profile, variants=variants), train=train, quick=quick)
    return sweep_rows(pairs, setting, dict(zip(variants, values)), 1 if quick else LAST_ITERATIONS)


def specs(data_dir: str, methods=None, seeds=(0,), profile: str = "tiny",
          variants: dict[str, tuple[str, ...]] | None = None) -> list[RunSpec]:
    """Every (method or variant, seed) of an experiment. ``variants`` (name -> overrides) apply to
    the one method in ``methods`` (SPRec, for the ablations and the negative-sample studies)."""
    out = []
    for seed in seeds:
        for method in methods or table1_methods():
            for variant, extra in ({"": ()} if variants is None else variants).items():  # {}: no run
                out.append(RunSpec(data_dir, method, int(seed), profile, variant, tuple(extra)))
    return out


def _comparable(cfg: RunConfig) -> dict:
    """The config fields the method reads (the registry's sections: e.g. SPRec's settings in an SFT
    run cannot change its results and do not make it stale), the dataset by folder name, the
    thread count, the stages' speed switches and the measure-only settings (:data:`~sprec_lib.config.NEUTRAL_SWITCHES`) left out."""
    c = {k: without_neutral_switches(v) for k, v in to_dict(cfg).items() if k in methods.sections(cfg.method)}
    c["dataset"] = Path(c["dataset"]).name
    if "model" in c:  # an LLM method (SASRec reads no model section)
        c["model"] = {k: v for k, v in c["model"].items() if k != "torch_threads"}
    return c


def matches(run: Run, spec: RunSpec, quick: bool = False) -> bool:
    """Whether ``run`` was made with the config ``spec`` asks for."""
    return _comparable(run.cfg) == _comparable(spec.config(quick))


def _folders(spec: RunSpec, quick: bool, runs_root: str, results_root: str) -> tuple[Path, Path]:
    """Where ``spec``'s exported copy and its local run folder are."""
    if quick:  # quick runs of same-named test folders must not meet: the group names the data's hash
        from .pipeline import dataset_hash

        local = resolve(runs_root) / "quick" / f"{spec.group()}-{dataset_hash(resolve(spec.data_dir))[:8]}" / spec.name
    else:
        local = spec.folder(resolve(runs_root))
    return spec.folder(resolve(results_root)), local


def obtain(spec: RunSpec, train: bool = True, quick: bool = False, runs_root: str = RUNS,
           results_root: str = RESULTS, cache_dir=None) -> Run | None:
    """A finished run for ``spec``: exported, local, or trained now (see the module docstring).
    None when it is not there and ``train`` is False (the command that makes it is printed)."""
    from .pipeline import train as train_run
    from .quick import quick_mode
    from .results import export_run

    quick = quick_mode(quick)

    exported, local = _folders(spec, quick, runs_root, results_root)
    return reuse_or_make(
        exported, local, open_folder=lambda f: Run(f) if (Path(f) / CONFIG).exists() else None,
        fits=lambda run: matches(run, spec, quick), make=lambda: train_run(spec.config(quick), local, cache_dir, variant=spec.variant),
        export=lambda run, dest: (export_run(run, dest), run)[1], may_make=train, quick=quick,
        missing=f"missing {spec.name} on {spec.dataset}: {spec.command(runs_root)}")


def obtain_all(specs: list[RunSpec], train: bool = True, quick: bool = False, **kw) -> list[tuple[RunSpec, Run]]:
    """:func:`obtain` for each spec, in order; the (spec, run) pairs that are there (their count is
    printed)."""
    out = []
    for spec in specs:
        run = obtain(spec, train=train, quick=quick, **kw)
        if run is not None:
            out.append((spec, run))
    print(f"{len(out)} of {len(specs)} runs finished")
    return out


# Table 1's methods that the book's verdicts lean on most (SFT, S-DPO, SPRec): their seeds come
# first in the to-do list (:func:`book_specs`), then Table 2, then the sweeps, then the rest.
FIRST_METHODS = ("sft", "sdpo", "sprec")


def book_specs(datasets: list[str], seeds=(0, 1, 2), profile: str = "tiny",
               sweeps: Mapping[str, Sequence[int]] | None = None) -> list[RunSpec]:
    """Every run the book's notebooks read, in the order to run them: Table 1's SFT, S-DPO and SPRec
    (:data:`FIRST_METHODS`) on every dataset folder of ``datasets``, seed by seed; then the ablations
    (Table 2) on every dataset; then the two negative-sample sweeps on the datasets of ``sweeps``
    (name or folder -> seeds; default :data:`sprec_lib.paths.SWEEP_DATASETS`) that are among
    ``datasets``; then Table 1's other methods."""
    from .paths import SWEEP_DATASETS, dataset_folder

    sweeps = SWEEP_DATASETS if sweeps is None else sweeps
    table1 = [s for d in datasets for s in specs(d, table1_methods(), seeds, profile)]
    first = sorted((s for s in table1 if s.method in FIRST_METHODS), key=lambda s: s.seed)  # stable: datasets in order
    out = first + [s for d in datasets for s in specs(d, ["sprec"], seeds, profile, variants=ABLATIONS)]
    by_folder = {dataset_folder(d).resolve(): d for d in datasets}
    for name, sweep_seeds in sweeps.items():
        folder = by_folder.get(dataset_folder(name).resolve())
        if folder is not None:
            out += specs(folder, ["sprec"], sweep_seeds, profile, variants={**ratio_variants(), **n_negative_variants()})
    out += [s for s in table1 if s.method not in FIRST_METHODS]
    return list(dict.fromkeys(out))  # SPRec itself is in Table 1 and in the ablations


def is_done(spec: RunSpec, runs_root: str = RUNS, results_root: str = RESULTS) -> bool:
    """Whether a finished run for ``spec`` exists (committed or local), without printing or training."""
    for folder in _folders(spec, False, runs_root, results_root):
        run = open_run(folder)
        if run is not None and matches(run, spec):
            return True
    return False


# -- the grid to a scheduler (``sprec runs missing --format slurm|json``) ----------------------------

# What one array task asks for, per profile. tiny: one thread (two runs sharing a core pair at two
# threads each collapse), about 2 GB resident at peak (benchmarks/results: 1.5 GB, plus the
# allocator's kept memory); small: SmolLM2-135M with LoRA on CPU; paper: one GPU (Llama-3.2-1B).
SCHEDULER_RESOURCES: dict[str, dict] = {
    "tiny": {"cpus": 1, "mem_gb": 4, "gpus": 0},
    "small": {"cpus": 2, "mem_gb": 8, "gpus": 0},
    "paper": {"cpus": 8, "mem_gb": 48, "gpus": 1},
}
TIME_MARGIN = 2.0  # the array's time limit: the longest run's estimate (sprec_lib.pipeline.plan) x this
MIN_HOURS = 1


def grid(specs: list[RunSpec], runs_root: str = RUNS, estimate: bool = True) -> list[dict]:
    """The runs as plain records for any scheduler: spec fields, the command, the folder and, with
    ``estimate``, the dry run's time estimate in seconds (None without benchmark figures)."""
    from functools import lru_cache

    from .data.sprec_format import read_sprec_folder
    from .pipeline import dataset_hash, plan

    read = lru_cache(maxsize=None)(lambda data_dir: read_sprec_folder(resolve(data_dir)))
    key = lru_cache(maxsize=None)(lambda data_dir: dataset_hash(resolve(data_dir)))
    out = []
    for spec in specs:
        seconds, stages = None, []
        if estimate:
            folder = spec.folder(runs_root)
            stages = plan(spec.config(), folder if (folder / CONFIG).exists() else None,
                          ds=read(spec.data_dir), data_key=key(spec.data_dir))["stages"]
            stages = [{k: s[k] for k in ("stage", "estimate_s", "status", "shared")} for s in stages]
            known = [s["estimate_s"] for s in stages if s["estimate_s"] is not None]
            seconds = sum(known) if known else None
        out.append({"dataset": spec.dataset, "data_dir": spec.data_dir, "method": spec.method, "variant": spec.variant,
                    "label": spec.label, "seed": spec.seed, "profile": spec.profile, "overrides": list(spec.overrides),
                    "folder": spec.folder(runs_root).as_posix(), "command": spec.command(runs_root),
                    "estimate_s": seconds, "stages": stages})
    return out


def lane_hours(records: list[dict]) -> dict:
    """What the runs of ``records`` (:func:`grid`) cost together by the dry run, on one lane:
    ``hours`` (every stage still to run, a shared stage counted once however many runs need it),
    ``shared_hours`` (the shared stages' part), ``runs``, and ``unknown`` (runs with a stage to
    run that has no estimate, left out of the sums)."""
    own, shared, unknown = 0.0, {}, 0
    for record in records:
        todo = [s for s in record["stages"] if s["status"] == "to run"]
        if any(s["estimate_s"] is None for s in todo):
            unknown += 1
            continue
        for stage in todo:
            if stage["shared"] is None:
                own += stage["estimate_s"]
            else:
                shared[stage["shared"]] = stage["estimate_s"]
    return {"runs": len(records), "hours": (own + sum(shared.values())) / 3600,
            "shared_hours": sum(shared.values()) / 3600, "unknown": unknown}


# -- the grid to lanes that must finish in time (``sprec runs plan``) --------------------------------

def pack_lanes(records: list[dict], lanes: int, hours: float, slowdown: float = 1.0) -> dict:
    """Deal the runs of ``records`` (:func:`grid`, in the order to run them) to ``lanes`` queues so
    that each lane's runs finish within ``hours``: for a machine that goes away, with its run
    folders and stage cache, when the session ends (a run killed half-way is then lost, and so is
    the lane-time it took).

    Each run's time is its stages' dry-run estimates x ``slowdown`` (the estimates are for one lane
    alone; two lanes on two cores run slower, and other machines are slower still). A shared stage
    (``stage["shared"]``: the pretraining of a dataset, the SFT of a seed) costs nothing when the
    cache has it, is paid by the first run that needs it, and is free for every later run of any
    lane, which, when it starts before the stage is done, waits for it (as ``sprec train`` does, on
    the stage's lock). Runs are taken in order; each goes to the lane where it would finish first,
    and a run that fits nowhere is deferred, so that a later, shorter one may still fill the time
    left. A run with a stage to train that has no estimate (no benchmark figures for its kind, and
    no committed run's log: :func:`sprec_lib.pipeline.logged_stage_seconds`) is
    not placed: it goes to ``unknown``.

    Returns ``{"lanes": [[{"command", "folder", "label", "start_s", "end_s"}, ...], ...], "deferred":
    [records], "unknown": [records]}`` (times in seconds from the start)."""
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1 (got {lanes})")
    if hours <= 0 or slowdown <= 0:
        raise ValueError(f"hours and slowdown must be positive (got {hours}, {slowdown})")
    budget = hours * 3600
    clocks = [0.0] * lanes
    ready: dict[str, float] = {}  # shared stage -> when it will be done
    placed: list[list[dict]] = [[] for _ in range(lanes)]
    deferred, unknown = [], []

    def finish(record: dict, start: float) -> tuple[float, dict[str, float]]:
        t, paid = start, {}
        for stage in record["stages"]:
            if stage["status"] != "to run":
                continue
            key = stage["shared"]
            if key is not None and key in ready:
                t = max(t, ready[key])  # another run trains it: wait on its lock, then reuse it
                continue
            t += stage["estimate_s"] * slowdown
            if key is not None:
                paid[key] = t
        return t, paid

    for record in records:
        if any(s["estimate_s"] is None and s["status"] == "to run" for s in record["stages"]):
            unknown.append(record)
            continue
        options = [(*finish(record, clocks[i]), i) for i in range(lanes)]  # (end, paid, lane)
        end, paid, lane = min(options, key=lambda o: (o[0], o[2]))
        if end > budget:
            deferred.append(record)
            continue
        label = f"{record['dataset']} {record['label']} seed {record['seed']}"
        placed[lane].append({"command": record["command"], "folder": record["folder"], "label": label,
                             "start_s": clocks[lane], "end_s": end})
        clocks[lane] = end
        ready.update(paid)
    return {"lanes": placed, "deferred": deferred, "unknown": unknown}


def slurm_array(records: list[dict], job_name: str = "sprec-book", parallel: int | None = None) -> str:
    """A SLURM job-array script: one array task per run (``records``: :func:`grid`), the resources
    of the runs' profile (:data:`SCHEDULER_RESOURCES`) and a time limit from the longest estimate.
    Runs resume and shared stages are locked, so a preempted or requeued task restarts safely."""
    import math
    import shlex

    if not records:
        raise ValueError("no runs to schedule")
    profiles = {r["profile"] for r in records}
    if len(profiles) > 1:
        raise ValueError(f"one array per profile (got {sorted(profiles)}): filter with --profile")
    res = SCHEDULER_RESOURCES[profiles.pop()]
    longest = max((r["estimate_s"] or 0) for r in records)
    hours = max(MIN_HOURS, math.ceil(longest * TIME_MARGIN / 3600))
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}",
             f"#SBATCH --array=0-{len(records) - 1}" + (f"%{parallel}" if parallel else ""),
             f"#SBATCH --cpus-per-task={res['cpus']}", f"#SBATCH --mem={res['mem_gb']}G", f"#SBATCH --time={hours}:00:00",
             "#SBATCH --requeue", "#SBATCH --output=logs/%x-%A_%a.out"]
    if res["gpus"]:
        lines.append(f"#SBATCH --gres=gpu:{res['gpus']}")
    lines += ["", "# Generated by `sprec runs missing --format slurm`: one task per run; each resumes where it stopped.",
              f"# Time limit: the longest run's dry-run estimate ({longest / 3600:.1f} h) x {TIME_MARGIN:g}, at least "
              f"{MIN_HOURS} h. Afterwards: `sprec results runs --gather` exports the finished runs to results/runs.",
              "set -euo pipefail", f"export OMP_NUM_THREADS={res['cpus']}", "COMMANDS=("]
    threads = f" --set model.torch_threads={res['cpus']}"
    lines += [f"  {shlex.quote(r['command'] + threads)}" for r in records]
    lines += [")", 'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"', ""]
    return "\n".join(lines)


def gather(root: str | Path, results_root: str = RESULTS) -> list[Path]:
    """Export every finished run under ``root`` (wherever an array wrote them) into
    ``results_root``, named by its own record (dataset, profile, label, seed); returns the exports."""
    from .results import export_run
    from .runs import finished_runs

    out = []
    for run in finished_runs(root):
        spec = RunSpec(run.cfg.dataset, run.method, run.seed, run.cfg.profile, run.variant)
        dest = spec.folder(resolve(results_root))
        if dest.resolve() != run.folder.resolve():
            out.append(export_run(run, dest))
    return out
