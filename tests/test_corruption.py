"""Corrupted runs and caches heal (or stop with a clear error), and paths stay inside the run.

Each kind of file a run or the shared stage cache keeps is damaged, then the run is resumed: it
completes, and its metrics equal an undamaged run's (on the micro ``tiny`` model of
``tests/test_pipeline.py``). One DPO run (``whole``) is the reference; the damaged runs are copies
of it, or of one run interrupted during its DPO stage with a checkpoint after every step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import trl

from sprec_lib import runs, trainers
from sprec_lib.cli import main
from sprec_lib.config import run_config
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.pipeline import dataset_hash, shared_stage_path, train
from sprec_lib.quick import QUICK_RUN
from sprec_lib.runs import Run

MICRO = QUICK_RUN + ["model.torch_threads=1"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ds") / "synth"
    return write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), folder).resolve()


def config(dataset, method="dpo"):
    return run_config("tiny", MICRO, dataset=str(dataset), method=method, seed=3)


def cli_args(dataset, method="dpo"):
    args = ["--dataset", str(dataset), "--method", method, "--profile", "tiny", "--seed", "3"]
    for s in MICRO:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def whole(dataset, tmp_path_factory):
    """The reference: an uninterrupted, undamaged DPO run and its shared stage cache."""
    root = tmp_path_factory.mktemp("whole")
    run = train(config(dataset), root / "run", cache_dir=root / "cache")
    return SimpleNamespace(run=run, cache=root / "cache", metrics=run.metrics())


@pytest.fixture(scope="module")
def cut(dataset, whole, tmp_path_factory):
    """A run killed at the second step of its DPO stage, ``checkpoint-1`` saved (SFT from the cache)."""
    root = tmp_path_factory.mktemp("cut")
    cache = root / "cache"
    shutil.copytree(whole.cache, cache)
    calls = {"n": 0}
    original = trl.DPOTrainer.training_step
    micro_batches = config(dataset).dpo.grad_accum  # training_step runs once per micro-batch

    def crash_on_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == micro_batches + 1:
            raise KeyboardInterrupt("simulated interruption mid-DPO")
        return original(self, *args, **kwargs)

    trl.DPOTrainer.training_step = crash_on_second_step
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config(dataset), root / "run", cache_dir=cache, checkpoint_minutes=0)
    finally:
        trl.DPOTrainer.training_step = original
    run = Run(root / "run")
    assert run.done("sft") and not run.done("dpo")
    assert [p.name for p in run.stage_dir("dpo").glob("checkpoint-*")] == ["checkpoint-1"]
    return SimpleNamespace(run=run, cache=cache)


def truncate(path: Path) -> None:
    size = path.stat().st_size
    assert size > 8
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def run_data_key(run: Run) -> str:
    return dataset_hash(run.cfg.dataset)


def log_of(run: Run) -> str:
    return (run.folder / "log.txt").read_text()


# -- checkpoints inside a stage ----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                    "trainer_state.json", "fallback"])
def test_a_damaged_checkpoint_is_dropped_and_the_run_ends_as_an_undamaged_one(dataset, whole, cut, tmp_path, damage):
    """Truncate one file of the checkpoint (or break ``trainer_state.json``); the resumed run says
    so in its log, deletes the checkpoint, trains the stage from its start and ends with the
    metrics of the uninterrupted run. ``fallback``: a damaged later checkpoint beside a sound one:
    the stage resumes from the sound one."""
    folder = tmp_path / "run"
    shutil.copytree(cut.run.folder, folder)
    stage = Run(folder).stage_dir("dpo")
    if damage == "trainer_state.json":
        (stage / "checkpoint-1" / damage).write_text('{"global_step": 1, "log_hist')
    elif damage == "fallback":
        shutil.copytree(stage / "checkpoint-1", stage / "checkpoint-2")
        truncate(stage / "checkpoint-2" / "optimizer.pt")
    else:
        truncate(stage / "checkpoint-1" / damage)
    bad = "checkpoint-2" if damage == "fallback" else "checkpoint-1"
    assert trainers.verify_checkpoint(stage / bad) is not None

    run = train(config(dataset), folder, cache_dir=cut.cache, checkpoint_minutes=0)
    assert run.metrics() == whole.metrics
    log = log_of(run)
    fell_back_to = "checkpoint-1" if damage == "fallback" else "the stage's start"
    assert f"stage dpo: {bad} is unusable (" in log and f"deleted it; falling back to {fell_back_to}" in log
    assert ("stage dpo: resuming from checkpoint-1" in log) == (damage == "fallback")
    assert not list(folder.rglob("checkpoint-*"))


def test_verify_checkpoint_accepts_a_sound_one_and_names_what_is_missing(cut, tmp_path):
    sound = cut.run.stage_dir("dpo") / "checkpoint-1"
    assert trainers.verify_checkpoint(sound) is None
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(sound, copy)
    (copy / "scheduler.pt").unlink()
    assert trainers.verify_checkpoint(copy) == "no scheduler.pt"
    (copy / "trainer_state.json").write_text("{}")
    assert trainers.verify_checkpoint(copy) == "trainer_state.json has no global_step"
    (copy / "trainer_state.json").unlink()
    assert "cut short while saving" in trainers.verify_checkpoint(copy)
    # last_checkpoint: the numbers, not the names, order them; an unusable one is deleted, logged.
    (tmp_path / "checkpoint-x").mkdir()
    shutil.copytree(sound, tmp_path / "checkpoint-10")
    said = []
    assert trainers.last_checkpoint(tmp_path, log=said.append).name == "checkpoint-10"
    shutil.copytree(sound, tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-12").mkdir()  # cut short while saving
    assert trainers.last_checkpoint(tmp_path, log=said.append).name == "checkpoint-10"
    assert said == ["checkpoint-12 is unusable (no trainer_state.json (cut short while saving)); "
                    "deleted it; falling back to checkpoint-10"]
    assert not (tmp_path / "checkpoint-12").exists() and (tmp_path / "checkpoint-x").exists()
    assert trainers.last_checkpoint(tmp_path / "missing") is None


# -- finished stages and the shared stage cache -------------------------------------------------------


def test_a_finished_stage_whose_model_does_not_verify_runs_again(dataset, whole, tmp_path):
    """Truncate the saved models of a shared stage (``sft``: restored from the cache) and of a
    run's own stage (``dpo``: trained again), and drop their metrics: the rerun says why in its
    log, and remakes the same weights (bit for bit) and metrics. (The tokenizer files may differ:
    a tokenizer read back from disk saves a longer ``tokenizer_config.json`` than a trained one.)"""
    folder = tmp_path / "run"
    shutil.copytree(whole.run.folder, folder)
    run = Run(folder)
    recorded = {s: runs.read_json(run.stage_dir(s) / runs.DONE)["model_files"] for s in ("sft", "dpo")}
    for stage in ("sft", "dpo"):
        truncate(run.model_dir(stage) / "model.safetensors")
        assert "model.safetensors has " in run.verify(stage)
        run.metrics_path(stage).unlink()
    assert run.done("sft")  # cheap: the marker alone

    train(config(dataset), folder, cache_dir=whole.cache)
    assert run.metrics() == whole.metrics
    log = log_of(run)
    for stage in ("sft", "dpo"):
        assert f"stage {stage}: its saved model does not verify (" in log and "; running it again" in log
        assert run.verify(stage) is None
        remade = runs.read_json(run.stage_dir(stage) / runs.DONE)["model_files"]
        assert remade["model.safetensors"] == recorded[stage]["model.safetensors"]  # the same weights, bit for bit
    assert f"stage sft: reused {shared_stage_path(run.cfg, 'sft', run_data_key(run), whole.cache)}" in log
    assert "stage dpo: starting from sft" in log.split("does not verify")[-1]


def test_a_damaged_shared_cache_is_rebuilt(dataset, whole, tmp_path):
    """One truncated model in the shared stage cache: a new run says so, trains the stage itself,
    ends as the undamaged run, and puts a sound copy back in the cache for the runs after it."""
    cache = tmp_path / "cache"
    shutil.copytree(whole.cache, cache)
    cached = shared_stage_path(config(dataset), "sft", dataset_hash(dataset), cache)
    truncate(cached / "model" / "model.safetensors")
    assert runs.verify_stage(cached) is not None

    run = train(config(dataset, "sft"), tmp_path / "run", cache_dir=cache)
    assert run.metrics() == {"sft": whole.metrics["sft"]}
    assert "stage sft: the shared cache's copy does not verify (" in log_of(run)
    assert "stage pretrain: reused" in log_of(run)
    assert runs.verify_stage(cached) is None
    assert not list((cache / "stages").glob("*.tmp*"))
    assert Run(tmp_path / "run").stages == ["pretrain", "sft"]


def test_a_copy_from_the_cache_that_does_not_verify_is_not_used(dataset, whole, tmp_path, monkeypatch):
    """The cache is sound but the copy into the run comes out damaged (a full disk, say): the run
    says so and trains the stage itself."""
    real = shutil.copytree

    def damaging_copytree(src, dst, *args, **kwargs):
        out = real(src, dst, *args, **kwargs)
        model = Path(dst) / "model" / "model.safetensors"
        if Path(dst).parent == tmp_path / "run" / "stages" and Path(dst).name == "sft" and model.exists():
            truncate(model)
        return out

    monkeypatch.setattr(shutil, "copytree", damaging_copytree)
    cache = tmp_path / "cache"
    real(whole.cache, cache)
    run = train(config(dataset, "sft"), tmp_path / "run", cache_dir=cache)
    assert run.metrics() == {"sft": whole.metrics["sft"]}
    assert "stage sft: the copy from " in log_of(run) and "does not verify" in log_of(run)
    assert run.verify("sft") is None


def test_done_records_and_verifies_the_model_files(tmp_path):
    stage = tmp_path / "stage"
    (stage / "model" / "sub").mkdir(parents=True)
    (stage / "model" / "a.bin").write_bytes(b"abc")
    (stage / "model" / "sub" / "b.json").write_text("{}")
    runs.mark_stage_finished(stage)
    files = runs.read_json(stage / runs.DONE)["model_files"]
    assert sorted(files) == ["a.bin", "sub/b.json"] and files["a.bin"]["size"] == 3
    assert runs.verify_stage(stage) is None
    assert runs.copy_stage(stage, tmp_path / "copy") is None and runs.verify_stage(tmp_path / "copy") is None
    (stage / "model" / "a.bin").write_bytes(b"abd")  # same size, other content
    assert "differs" in runs.verify_stage(stage)
    assert "differs" in runs.copy_stage(stage, tmp_path / "copy2") and not (tmp_path / "copy2").exists()
    (stage / "model" / "a.bin").write_bytes(b"abc")
    (stage / "model" / "sub" / "b.json").unlink()
    assert runs.verify_stage(stage).endswith("b.json is missing")
    # A DONE from before the checksums (the committed runs): trusted as it is.
    runs.write_json({"finished": "2024-01-01 00:00:00"}, stage / runs.DONE)
    assert runs.stage_finished(stage) and runs.verify_stage(stage) is None
    # A DONE that does not parse is no finished stage.
    (stage / runs.DONE).write_text('{"finished": "2024-')
    assert not runs.stage_finished(stage) and "unreadable" in runs.verify_stage(stage)


def test_models_save_uses_a_temporary_folder_of_its_own(tmp_path, monkeypatch):
    from sprec_lib import models

    seen = []

    class Fake:
        def save_pretrained(self, folder):
            seen.append(Path(folder).name)
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"{len(seen)}.txt").write_text("x")

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.txt").write_text("old")
    (tmp_path / "model.tmp").mkdir()  # another process's (or the old fixed name's) folder is left alone
    models.save(Fake(), Fake(), tmp_path / "model")
    assert seen == [f"model.tmp{os.getpid()}"] * 2
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["1.txt", "2.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.tmp"]


# -- paths and the run lock ---------------------------------------------------------------------------


def test_eval_refuses_a_stage_name_that_leaves_the_run(whole, tmp_path, capsys):
    """``sprec eval RUN --stage ../../other/stages/sft``: a finished stage of *another* run, reached
    through the path: refused (exit 2, the run's own stages named), nothing written anywhere."""
    shutil.copytree(whole.run.folder, tmp_path / "other", ignore=shutil.ignore_patterns("predictions", "negatives"))
    shutil.copytree(whole.run.folder, tmp_path / "victim", ignore=shutil.ignore_patterns("predictions", "negatives"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    for stage in ("../../other/stages/sft", "../../x", "../stages/sft", "/etc"):
        assert main(["eval", str(tmp_path / "victim"), "--stage", stage, "--cache-dir", str(whole.cache)]) == 2
        err = capsys.readouterr().err
        assert f"no finished stage {stage!r}" in err and "finished: pretrain, sft, dpo" in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


@pytest.mark.skipif(sys.platform == "win32", reason="no run lock without fcntl")
def test_a_second_train_on_one_out_exits_2_naming_the_holder(dataset, whole, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(whole.run.folder, folder, ignore=shutil.ignore_patterns("predictions", "negatives"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sprec_lib.runs import Run\n"
         "with Run(sys.argv[1]).lock():\n    print('held', flush=True)\n    time.sleep(120)\n", str(folder)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        log = (folder / "log.txt").read_text()
        code = main(["train", *cli_args(dataset), "--out", str(folder), "--cache-dir", str(whole.cache)])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert f"a run is training here (pid {holder.pid} since " in err and "Traceback" not in err
    assert (folder / "log.txt").read_text() == log  # the second one wrote nothing to the run
    # Once the holder is gone, the same command goes through (the run is finished: nothing to train).
    assert main(["train", *cli_args(dataset), "--out", str(folder), "--cache-dir", str(whole.cache)]) == 0
