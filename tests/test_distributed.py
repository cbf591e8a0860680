"""Several processes under ``accelerate launch``, on CPU: two processes train as one does, the main
process alone writes, and a launch killed mid-stage resumes to the uninterrupted result.

Real launches: ``accelerate launch --multi_gpu --num_processes 2`` of ``sprec train --method dpo``
on the micro ``tiny`` model of ``tests/test_pipeline.py`` (fewer steps). Without CUDA the two
processes train over gloo (accelerate's multi-CPU state; ``--cpu --num_processes 2`` would start
one process: accelerate's CPU path needs ``mpirun`` for more). The processes run
:data:`LAUNCHER`, which is ``sprec train`` plus two test hooks: an audit hook that records every
path the non-main process opens for writing, renames or deletes in the run folder and the stage
cache, (for the resume test) a SIGTERM sent to the launcher mid-DPO, and, until
``sprec_lib/trainers.py`` deletes checkpoints on the main process only, a stand-in for that.

Why one and two processes do not agree bit for bit: the two runs see the same rows at every
optimizer step (accelerate deals the per-device batches of one sampler order out in turn, so with
half the per-device batch the global batch is the single process's), and the tiny model has no
dropout (DPO turns it off anyway); but the sums are ordered differently: each process pads its half
batch to its own longest row and sums its own gradient, and gloo adds the two halves, where one
process sums the whole batch at once. The difference is float rounding carried through Adam.
Measured (2 CPU cores, torch 2.13, fp32): the losses of a step differ by at most 1e-6 (1.6e-7 of
the loss), the weights by at most 1.1e-8 (1.5e-7 of a tensor's largest weight), in pretraining, SFT
and DPO; the test asserts 1e-5. The evaluations came out the same.

Not rounding: an epoch's last step when the rows do not fill the global batch. One process trains
on the rows left; with several, accelerate tops up each process's short batch with rows from the
start of the epoch (``even_batches``), so that step sees some rows twice. (Measured: 29 packed
pretraining blocks at 8 a step; step 4 has 5 blocks in one process, 8 in two, and its loss differs
by 9e-4.) The test's sizes fill every batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sprec_lib.config import run_config
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN
from sprec_lib.runs import Run

# The micro model of tests/test_pipeline.py with fewer steps, every step's loss logged, and
# constrained evaluation (no embedding model to load in each launch). Every step a full global batch:
# the dataset packs into 29 pretraining blocks (3 steps of 8), 32 SFT rows (2 steps of 8 x 2 an
# epoch) and 32 DPO pairs (4 steps of 2 x 4); see the module docstring for a partial last batch.
DIST = QUICK_RUN + ["model.torch_threads=1", "pretrain.max_steps=3", "sft.max_steps=6", "dpo.max_steps=4", "eval.rows=8",
                    "eval.mode=constrained", "pretrain.logging_steps=1", "sft.logging_steps=1", "dpo.logging_steps=1"]
# One process: the profile's per-device batches (pretrain 8, SFT 8 x 2 accumulated, DPO 2 x 4).
ONE = DIST
# Two processes: half of each per-device batch, the same global batch.
TWO = DIST + ["pretrain.batch_size=4", "sft.batch_size=4", "dpo.batch_size=1"]
STAGES = ("pretrain", "sft", "dpo")
SEED = 3

LAUNCHER = r'''
"""`sprec train` under accelerate launch, with the test's hooks (tests/test_distributed.py)."""
import os
import signal
import sys
import time

rank = int(os.environ.get("RANK", "0"))
audit, watched = os.environ.get("SPREC_TEST_AUDIT"), os.environ.get("SPREC_TEST_WATCH", "")
if rank != 0 and audit:
    roots = tuple(os.path.realpath(p) + os.sep for p in watched.split(os.pathsep) if p)
    record = open(f"{audit}.rank{rank}", "a", buffering=1)  # opened before the hook

    def where(path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return os.path.realpath(path) if isinstance(path, str) else None

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            paths = [path] if writes else []
        elif event in ("os.rename", "shutil.copyfile", "shutil.copytree", "shutil.move"):
            paths = list(args[:2])
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.utime", "os.symlink", "os.link"):
            paths = [args[0]]
        else:
            return
        for p in paths:
            p = where(p)
            if p is not None and (p + os.sep).startswith(roots):
                record.write(f"{event} {p}\n")

    sys.addaudithook(hook)

stop_at = os.environ.get("SPREC_TEST_SIGTERM_AT")  # "<stage>:<step>": SIGTERM to the launcher there
if rank == 0 and stop_at:
    import trl

    stage, step = stop_at.split(":")
    original = trl.DPOTrainer.training_step

    def training_step(self, *args, **kwargs):
        if os.path.basename(self.args.output_dir) == stage and self.state.global_step == int(step) \
                and not getattr(training_step, "sent", False):
            training_step.sent = True
            os.kill(os.getppid(), signal.SIGTERM)  # the launcher (torchrun's agent) passes it to both processes
            time.sleep(2)  # it arrives during this step: the step ends with a checkpoint, then the stage stops
        return original(self, *args, **kwargs)

    trl.DPOTrainer.training_step = training_step

from sprec_lib.cli import main

sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path_factory.mktemp("ds") / "synth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, dataset: Path, out: Path, cache: Path, *flags: str, env: dict | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` two processes of ``sprec train --method dpo`` (the run's config: :data:`TWO`)."""
    script = tmp / "launch_sprec.py"
    script.write_text(LAUNCHER)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(script),
           "train", "--dataset", str(dataset), "--method", "dpo", "--profile", "tiny", "--seed", str(SEED),
           "--out", str(out), "--cache-dir", str(cache), *flags, "--set", *TWO]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp / "hf"),  # no user accelerate config
                "SPREC_TEST_AUDIT": f"{out}-audit", "SPREC_TEST_WATCH": os.pathsep.join([str(out), str(cache)]),
                **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"launch failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """The same DPO run (pretrain, SFT, evaluation, DPO, evaluation) in one process (per-device
    batches :data:`ONE`) and in two (:data:`TWO`), and the seconds each took."""
    tmp = tmp_path_factory.mktemp("dist")
    t0 = time.perf_counter()
    cfg = run_config("tiny", ONE, dataset=str(dataset), method="dpo", seed=SEED)
    one = train(cfg, tmp / "one", cache_dir=tmp / "cache-one", checkpoint_minutes=None)
    t1 = time.perf_counter()
    result = launch(tmp, dataset, tmp / "two", tmp / "cache-two", "--no-checkpoints")
    _check(result)
    t2 = time.perf_counter()
    return {"one": one, "two": Run(tmp / "two"), "tmp": tmp, "launch": result, "seconds": (t1 - t0, t2 - t1)}


def _losses(run: Run, stage: str) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in run.losses()[stage] if "loss" in e]


def _weights(run: Run, stage: str) -> dict:
    from safetensors.torch import load_file

    return load_file(run.model_dir(stage) / "model.safetensors")


def weight_differences(a: dict, b: dict) -> dict:
    """Max absolute difference, and the largest per-tensor max difference relative to that tensor's max magnitude."""
    assert a.keys() == b.keys()
    abs_max = max(float((a[k] - b[k]).abs().max()) for k in a)
    rel_max = max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in a)
    return {"abs": abs_max, "rel": rel_max}


def test_two_processes_train_as_one(runs):
    """The same global batch in one and two processes: the per-step losses of every stage and the
    final weights agree to float rounding (see the module docstring for why not bit for bit)."""
    one, two = runs["one"], runs["two"]
    report = {}
    for stage in STAGES:
        a, b = _losses(one, stage), _losses(two, stage)
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 3, (stage, a, b)
        loss_diff = max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
        w = weight_differences(_weights(two, stage), _weights(one, stage))
        report[stage] = {"steps": len(a), "loss_abs": loss_diff, "weights_abs": w["abs"], "weights_rel": w["rel"]}
    print(json.dumps(report, indent=1), f"seconds one/two processes: {runs['seconds']}")
    for stage, r in report.items():
        assert r["loss_abs"] <= 1e-5, (stage, r)
        assert r["weights_rel"] <= 1e-5, (stage, r)


def test_only_the_main_process_writes(runs):
    """Generation and evaluation ran once, on the main process; the other process wrote nothing in
    the run folder or the stage cache but the losses ``trainers._train`` writes on every process."""
    two, tmp = runs["two"], runs["tmp"]
    log = (two.folder / "log.txt").read_text().splitlines()
    for what in ("eval sft:", "eval dpo:", "stage pretrain done", "stage sft done", "stage dpo done", "finished:"):
        assert sum(what in line for line in log) == 1, (what, log)
    assert sum("eval sft:" in line for line in runs["launch"].stdout.splitlines()) == 1  # printed once too
    assert sorted(p.stem for p in (two.folder / "metrics").glob("*.json")) == ["dpo", "sft"]
    assert two.is_finished and two.stages == list(STAGES) and two.labels == ["sft", "dpo"]
    for stage in STAGES:
        assert two.verify(stage) is None
    audit = tmp / "two-audit.rank1"  # what the launch's rank 1 wrote (the launcher's audit hook)
    written = audit.read_text().splitlines()  # the file exists: rank 1 ran the hook
    # What trainers._train does on every process, to be made main-only there: it makes the stage's
    # folder (there already) and writes the trainer's losses (the same on every process) into it.
    by_trainers = {f"{event} {two.stage_dir(stage).resolve()}{tail}" for stage in STAGES
                   for event, tail in [("os.mkdir", ""), ("open", os.sep + "log_history.json")]}
    assert set(written) <= by_trainers, sorted(set(written) - by_trainers)
    assert not list(tmp.rglob("*.tmp[0-9]*"))  # no half-written file of either process


def test_a_killed_launch_resumes_to_the_uninterrupted_result(runs, dataset):
    """SIGTERM to ``accelerate launch`` during the third DPO step (checkpoints after every step):
    both processes finish the step, save ``checkpoint-3`` and stop; the same command resumes from
    it and ends with the uninterrupted two-process run's losses, weights and metrics, bit for bit.
    (The shared stage cache of the uninterrupted run supplies pretraining and SFT.)"""
    tmp, whole = runs["tmp"], runs["two"]
    out, cache = tmp / "resumed", tmp / "cache-two"
    killed = launch(tmp, dataset, out, cache, "--checkpoint-minutes", "0", env={"SPREC_TEST_SIGTERM_AT": "dpo:2"})
    assert killed.returncode != 0
    run = Run(out)
    assert run.done("sft") and not run.done("dpo") and not run.is_finished
    assert [p.name for p in run.stage_dir("dpo").glob("checkpoint-*")] == ["checkpoint-3"], killed.stderr[-4000:]
    assert "SIGTERM during training" in killed.stderr
    resumed = launch(tmp, dataset, out, cache, "--checkpoint-minutes", "0")
    _check(resumed)
    assert "stage dpo: resuming from checkpoint-3" in (out / "log.txt").read_text()
    assert not list(out.rglob("checkpoint-*"))
    run = Run(out)
    assert _losses(run, "dpo") == _losses(whole, "dpo")
    assert weight_differences(_weights(run, "dpo"), _weights(whole, "dpo"))["abs"] == 0.0
    assert run.metrics() == whole.metrics()


def test_the_accelerate_config_gives_the_papers_effective_batch():
    """``accelerate/1node_ngpu.yaml``: one node, DDP, bf16, the paper's four GPUs; with the paper
    profile's per-device batches it gives the paper scripts' rows per optimizer step (SFT 64, DPO 32)."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[1] / "accelerate" / "1node_ngpu.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = load_config_from_file(str(path))  # accelerate reads it
    assert str(cfg.distributed_type.value) == "MULTI_GPU" and cfg.mixed_precision == "bf16"
    assert doc["num_machines"] == 1 and doc["num_processes"] == 4 and not doc["use_cpu"]
    paper = run_config("paper")
    for stage, rows in [(paper.sft, 64), (paper.sprec.sft, 64), (paper.dpo, 32), (paper.sdpo, 32), (paper.sprec.dpo, 32)]:
        assert doc["num_processes"] * stage.batch_size * stage.grad_accum == rows


def test_one_process_is_the_main_one_and_waits_for_no_one(monkeypatch, tmp_path):
    """Not launched: rank 0 of 1, no process group, ``on_main`` is a call. A non-main rank's
    :class:`Run` writes nothing (its methods that write return at once)."""
    from sprec_lib import distributed

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.world_size() == 1 and distributed.is_main() and distributed.init() is None
    distributed.barrier()
    assert distributed.on_main(lambda x: x + 1, 1) == 2
    monkeypatch.setenv("RANK", "1")  # as a second process sees it (WORLD_SIZE unset: no group is joined)
    assert not distributed.is_main()
    cfg = run_config("tiny", ONE, dataset=str(tmp_path), method="dpo", seed=SEED)
    run = Run(tmp_path / "run", cfg)
    run.log("x")
    run.record_metrics("sft", {"valid_ratio": 1.0})
    run.mark_done("sft")
    run.finish("sft")
    with run.lock():
        pass
    assert not (tmp_path / "run").exists()


class _Recipe:
    """The part of :class:`sprec_lib.pipeline.Pipeline` SPRec's recipe calls, without training or
    evaluating: the stages it asks for are recorded."""

    checkpoint_minutes = None
    model = tokenizer = None

    def __init__(self, run, ds):
        self.run, self.cfg, self.ds, self.stages = run, run.cfg, ds, []

    def shared_start(self):
        return "sft"

    def load(self, stage):
        pass

    def stage(self, name, start, fn):
        self.stages.append(name)

    def evaluate(self, stage, label=None):
        pass

    def decode_journal(self, decode, stage):
        return None  # the stand-in negatives below do not decode


def _sprec_negatives(rank: int, world: int, port: int, folder: str, dataset: str, out) -> None:
    """One process of :func:`test_self_play_negatives_are_made_once_and_read_by_the_others`."""
    import dataclasses

    import torch
    from accelerate.state import AcceleratorState

    from sprec_lib import distributed, selfplay
    from sprec_lib.data.sprec_format import read_sprec_folder
    from sprec_lib.methods import sprec

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    AcceleratorState._reset_state(True)  # forked from pytest, where a trainer made a one-process state
    distributed._GROUP = None
    calls, pairs = [], []
    negatives_for, preference_rows = selfplay.negatives_for, selfplay.preference_rows

    def generate(rows, ds, cfg, rng, *args, **kwargs):  # random titles stand in for the model's own
        calls.append(len(rows))
        return negatives_for(rows, ds, dataclasses.replace(cfg, negatives="random"), rng)

    def pairs_of(*args, **kwargs):
        made = preference_rows(*args, **kwargs)
        pairs.append(made[0])
        return made

    selfplay.negatives_for, selfplay.preference_rows = generate, pairs_of
    try:
        cfg = run_config("tiny", ONE + ["sprec.iterations=2"], dataset=dataset, method="sprec", seed=SEED)
        recipe = _Recipe(distributed.on_main(Run, folder, cfg), read_sprec_folder(dataset))
        sprec.run(recipe)
        out[rank] = {"calls": calls, "pairs": pairs, "stages": recipe.stages}
    finally:
        torch.distributed.destroy_process_group()


def test_self_play_negatives_are_made_once_and_read_by_the_others(dataset, tmp_path):
    """SPRec's negatives under two processes (forked, over gloo, the recipe without its training):
    the main process generates and saves them; the other generates none, reads the saved ones and
    builds the very same preference pairs, which the data-parallel DPO step needs."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_sprec_negatives, args=(2, _free_port(), str(tmp_path / "run"), str(dataset), out),
                           nprocs=2, join=True, start_method="fork")
        got = dict(out)
    assert [len(got[r]["calls"]) for r in (0, 1)] == [2, 0]
    assert got[0]["pairs"] == got[1]["pairs"] and all(got[0]["pairs"])
    assert got[0]["stages"] == got[1]["stages"] == ["it1-sft", "it1-dpo", "it2-sft", "it2-dpo"]
    run = Run(tmp_path / "run")
    assert run.load_negatives("it1") is not None and run.load_negatives("it2") is not None
    log = (run.folder / "log.txt").read_text()
    assert log.count("it1: ") == 1 and log.count("it2: ") == 1  # logged once
