"""Epoch snapshots (``StageConfig.save_epochs``, issue 17): a 2-epoch SFT keeps its epoch-1 model,
verified as a stage's; it survives an interruption and is made after one; ``sprec eval --epoch``
evaluates it under its own label; and the shared stage cache's keys stay what they were."""

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch
import trl
from safetensors.torch import load_file

from sprec_lib.cli import main
from sprec_lib.config import RunConfig, from_dict, run_config, to_dict
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.pipeline import (
    KEY_NEUTRAL,
    Pipeline,
    evaluate_run,
    shared_stage_key,
    train,
)
from sprec_lib.quick import QUICK_RUN
from sprec_lib.runs import (
    Run,
    copy_stage,
    read_json,
    snapshot_name,
    split_snapshot,
    stage_snapshots,
    verify_stage,
)
from sprec_lib.trainers import EpochSnapshots

# The quick-mode micro model, its SFT run by epochs: 32 rows, batch 8 x grad-accum 2, so 2 optimizer
# steps (4 micro-batches) an epoch and 4 steps in all; about 10 s a run at one thread.
MICRO = QUICK_RUN + ["model.torch_threads=1", "sft.max_steps=-1", "sft.epochs=2", "sft.save_epochs=true"]
MICRO_BATCHES = 2  # training_step calls per optimizer step (sft.grad_accum of the tiny profile)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path_factory.mktemp("ds") / "synth")


def config(dataset, extra=()):
    return run_config("tiny", MICRO + list(extra), dataset=str(dataset), method="sft", seed=3)


@pytest.fixture(scope="module")
def whole(dataset, tmp_path_factory):
    """An uninterrupted 2-epoch SFT run with its snapshots (and its own stage cache)."""
    root = tmp_path_factory.mktemp("whole")
    return train(config(dataset), root / "run", cache_dir=root / "cache")


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_two_epoch_sft_keeps_its_epoch1_model(whole):
    stage = whole.stage_dir("sft")
    assert whole.snapshots("sft") == [1] and (stage / "epoch1" / "model" / "model.safetensors").is_file()
    assert not (stage / "epoch2").exists()  # the last epoch's model is the stage's own
    assert not list(stage.glob("checkpoint-*"))
    assert verify_stage(whole.snapshot_dir("sft", 1)) is None
    record = read_json(whole.snapshot_dir("sft", 1) / "DONE")
    assert (record["epoch"], record["global_step"], record["max_steps"]) == (1, 2, 4)
    assert "model.safetensors" in record["model_files"]
    assert not same_weights(weights(whole.snapshot_dir("sft", 1) / "model"), weights(whole.model_dir("sft")))
    assert whole.snapshots("pretrain") == []  # one epoch (and save_epochs off there): nothing to keep


def test_snapshots_travel_with_the_stage_through_the_cache(whole, tmp_path):
    cached = list((whole.folder.parent / "cache" / "stages").glob("sft-*/epoch1/DONE"))
    assert len(cached) == 1 and verify_stage(cached[0].parent) is None
    assert copy_stage(whole.stage_dir("sft"), tmp_path / "copy") is None
    assert verify_stage(tmp_path / "copy" / "epoch1") is None
    # A copy whose snapshot does not verify is no copy.
    bad = tmp_path / "bad"
    assert copy_stage(whole.stage_dir("sft"), bad) is None
    (bad / "epoch1" / "model" / "config.json").write_text("{}")
    problem = copy_stage(bad, tmp_path / "copy2")
    assert problem and "epoch1" in problem and not (tmp_path / "copy2").exists()


def interrupted_then_resumed(dataset, root, monkeypatch, crash_at_call: int, between=lambda run: None) -> Run:
    """A run killed at the ``crash_at_call``-th SFT micro-batch (a checkpoint after every step), then
    ``between(run)``, then resumed."""
    calls = {"n": 0}
    original = trl.SFTTrainer.training_step

    def crash(self, *args, **kwargs):
        if self.args.output_dir.endswith("sft"):
            calls["n"] += 1
            if calls["n"] == crash_at_call:
                raise KeyboardInterrupt("simulated interruption mid-SFT")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "training_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(config(dataset), root / "run", cache_dir=root / "cache", checkpoint_minutes=0)
    monkeypatch.setattr(trl.SFTTrainer, "training_step", original)
    run = Run(root / "run")
    assert not run.done("sft")
    between(run)
    train(config(dataset), root / "run", cache_dir=root / "cache", checkpoint_minutes=0)
    return run


def test_a_snapshot_saved_before_an_interruption_is_kept(dataset, whole, tmp_path, monkeypatch):
    seen = {}

    def between(run):  # killed in epoch 2's first step: epoch 1's snapshot is there, and its checkpoint
        seen["record"] = (run.snapshot_dir("sft", 1) / "DONE").read_text()
        seen["checkpoints"] = sorted(p.name for p in run.stage_dir("sft").glob("checkpoint-*"))

    run = interrupted_then_resumed(dataset, tmp_path, monkeypatch, 2 * MICRO_BATCHES + 1, between)
    assert seen["checkpoints"] == ["checkpoint-2"]
    assert (run.snapshot_dir("sft", 1) / "DONE").read_text() == seen["record"]  # kept, not saved again
    assert "resuming from checkpoint-2" in (run.folder / "log.txt").read_text()
    assert run.snapshots("sft") == [1] and verify_stage(run.snapshot_dir("sft", 1)) is None
    assert same_weights(weights(run.snapshot_dir("sft", 1) / "model"), weights(whole.snapshot_dir("sft", 1) / "model"))
    assert same_weights(weights(run.model_dir("sft")), weights(whole.model_dir("sft")))


def test_a_snapshot_due_after_an_interruption_is_saved_on_resuming(dataset, whole, tmp_path, monkeypatch):
    # Killed in epoch 1's last step (resumed from checkpoint-1): the resumed stage saves the snapshot.
    run = interrupted_then_resumed(dataset, tmp_path / "a", monkeypatch, MICRO_BATCHES + 1,
                                   lambda run: None if not run.snapshots("sft") else pytest.fail("saved too early"))
    assert same_weights(weights(run.snapshot_dir("sft", 1) / "model"), weights(whole.snapshot_dir("sft", 1) / "model"))
    # Killed after the checkpoint at epoch 1's end but before its snapshot was recorded (DONE removed
    # to say so): the stage resumes at that epoch's end, clears the unrecorded snapshot and saves it.
    run = interrupted_then_resumed(dataset, tmp_path / "b", monkeypatch, 2 * MICRO_BATCHES + 1,
                                   lambda run: (run.snapshot_dir("sft", 1) / "DONE").unlink())
    assert run.snapshots("sft") == [1] and verify_stage(run.snapshot_dir("sft", 1)) is None
    assert same_weights(weights(run.snapshot_dir("sft", 1) / "model"), weights(whole.snapshot_dir("sft", 1) / "model"))


def test_evaluating_a_snapshot(whole, capsys):
    cache = whole.folder.parent / "cache"
    evaluate_run(whole.folder, "sft", ["eval.split=valid"], cache_dir=cache, epoch=1)
    m = whole.metrics_of("sft-epoch1-grounded-5-valid")
    assert m["stage"] == "sft@epoch1" and m["rows"] == 12 and 0 <= m["@5"]["HR"] <= 1
    assert "sft-epoch1-grounded-5-valid" in whole.labels
    # The CLI's --epoch: the same label (read back), and clear errors.
    assert main(["eval", str(whole.folder), "--stage", "sft", "--epoch", "1", "--set", "eval.split=valid",
                 "--cache-dir", str(cache)]) == 0
    assert "sft-epoch1-grounded-5-valid" in capsys.readouterr().out
    assert main(["eval", str(whole.folder), "--stage", "sft", "--epoch", "2", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert str(whole.stage_dir("sft") / "epoch2") in err and "epochs with a snapshot: 1" in err
    with pytest.raises(FileNotFoundError, match=r"pretrain.epoch1.*no snapshot.*none"):
        evaluate_run(whole.folder, "pretrain", epoch=1, cache_dir=cache)
    with pytest.raises(SystemExit):
        main(["eval", str(whole.folder), "--epoch", "0"])


def test_a_snapshot_that_does_not_verify_is_refused(whole, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(whole.folder, copy, ignore=shutil.ignore_patterns("checkpoint-*", ".lock"))
    (copy / "stages" / "sft" / "epoch1" / "model" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"epoch1.*does not verify"):
        evaluate_run(copy, "sft", ["eval.split=valid"], epoch=1)


def test_pipeline_loads_a_snapshot_by_name(whole, dataset):
    from sprec_lib.data.sprec_format import read_sprec_folder

    assert snapshot_name("sft", 1) == "sft@epoch1" and split_snapshot("sft@epoch1") == ("sft", 1)
    assert split_snapshot("it1-sft") == ("it1-sft", None)
    p = Pipeline(whole, read_sprec_folder(dataset), whole.folder.parent / "cache")
    p.load("sft@epoch1")
    loaded = {k: v for k, v in p.model.state_dict().items()}
    saved = weights(whole.snapshot_dir("sft", 1) / "model")
    assert all(torch.equal(loaded[k], saved[k]) for k in saved) and p.at == "sft@epoch1"


def test_epoch_end_is_every_epoch_but_the_last():
    def state(epoch, step, max_steps=4):
        return SimpleNamespace(epoch=epoch, global_step=step, max_steps=max_steps)

    assert EpochSnapshots.epoch_end(state(1.0, 2)) == 1
    assert EpochSnapshots.epoch_end(state(2.0, 4)) is None  # the stage's end: its own model
    assert EpochSnapshots.epoch_end(state(1.5, 3)) is None  # a stop mid-epoch (SIGTERM)
    assert EpochSnapshots.epoch_end(state(1.0, 2, max_steps=3)) == 1  # epochs=1.5: a partial last epoch
    assert EpochSnapshots.epoch_end(state(0.0, 0)) is None


def test_clear_keeps_finished_snapshots_only(tmp_path, dataset):
    run = Run(tmp_path / "run", config(dataset))
    stage = run.stage_dir("sft")
    for name in ("checkpoint-3", "epoch1/model", "epoch1/model.tmp123", "epoch2/model", "model"):
        (stage / name).mkdir(parents=True)
    (stage / "epoch1" / "DONE").write_text(json.dumps({"model_files": {}}))  # epoch2: no record, cut short
    (stage / "log_history.json").write_text("[]")
    run.clear("sft")
    assert sorted(p.name for p in stage.iterdir()) == ["checkpoint-3", "epoch1"]
    assert sorted(p.name for p in (stage / "epoch1").iterdir()) == ["DONE", "model"]
    assert list(stage_snapshots(stage)) == [1]


# -- the shared stage cache's key ------------------------------------------------------------------


def old_key(cfg, stage: str, data_key: str) -> str:
    """``shared_stage_key`` as it was before ``save_epochs`` existed: the same parts, the field gone."""
    c = to_dict(cfg)
    for section in ("pretrain", "sft"):
        del c[section]["save_epochs"]
    if stage == "pretrain":
        parts = {"data": data_key, "model": c["model"], "pretrain": c["pretrain"]}
    else:
        parts = {"data": data_key, "model": c["model"], "pretrain": c["pretrain"], "sft": c["sft"],
                 "train_rows": c["train_rows"], "seed": c["seed"]}
    return stage + "-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


DATA_KEY = "0123456789abcdef"


def test_save_epochs_off_keeps_the_cache_keys():
    assert KEY_NEUTRAL == {"save_epochs": False}
    cfg = run_config("tiny", dataset="ml-1m", method="sft", seed=0)
    for stage in ("pretrain", "sft"):
        assert shared_stage_key(cfg, stage, DATA_KEY) == old_key(cfg, stage, DATA_KEY)
    # The keys the code gave before the field existed (computed then): the cached stages stay reusable.
    assert shared_stage_key(cfg, "sft", DATA_KEY) == "sft-d6b1a2dbc40ad94f"
    assert shared_stage_key(cfg, "pretrain", DATA_KEY) == "pretrain-51910ef95ec4de49"
    # the small profile as it was then (before it took 2 epochs with snapshots, and bf16 training)
    small = run_config("small", dataset="ml-1m", method="sft", seed=0,
                       assignments=["sft.epochs=4", "sft.save_epochs=false", "model.dtype=float32"])
    assert shared_stage_key(small, "sft", DATA_KEY) == "sft-087066240ef45cd9"


def test_save_epochs_on_makes_a_key_of_its_own():
    base = run_config("tiny", dataset="ml-1m", method="sft", seed=0)
    on = run_config("tiny", ["sft.save_epochs=true"], dataset="ml-1m", method="sft", seed=0)
    assert shared_stage_key(on, "sft", DATA_KEY) != shared_stage_key(base, "sft", DATA_KEY)
    assert shared_stage_key(on, "pretrain", DATA_KEY) == shared_stage_key(base, "pretrain", DATA_KEY)
    pre = run_config("tiny", ["pretrain.save_epochs=true"], dataset="ml-1m", method="sft", seed=0)
    for stage in ("pretrain", "sft"):
        assert shared_stage_key(pre, stage, DATA_KEY) != shared_stage_key(base, stage, DATA_KEY)


def test_a_config_saved_before_the_field_existed_still_loads(tmp_path, dataset):
    cfg = config(dataset, ["sft.save_epochs=false"])
    old = to_dict(cfg)

    def drop(section):
        if isinstance(section, dict):
            section.pop("save_epochs", None)
            for v in section.values():
                drop(v)

    drop(old)
    assert "save_epochs" not in json.dumps(old)
    assert from_dict(RunConfig, old) == cfg
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": old, "spec": None}))
    assert Run(tmp_path / "run").cfg == cfg
    assert Run(tmp_path / "run", cfg).cfg == cfg  # resumes: no "different config"


# -- the preference stages, on a LoRA model (trainer level) ----------------------------------------


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", ["dpo", "sdpo"])
def test_preference_stages_keep_their_adapters_by_epoch(ds, tok, tmp_path, kind):
    """A 3-epoch DPO / S-DPO stage of a LoRA model keeps epochs 1 and 2: the trained adapter alone
    (not trl's frozen ``ref`` adapter), verified, each unlike the next."""
    from sprec_lib import models, prompts, trainers
    from sprec_lib.config import ModelConfig, StageConfig

    tiny = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       vocab_size=512, max_positions=256, lora_targets=("q_proj", "v_proj"))
    model = models.add_lora(models.build_tiny_model(tiny, tok, 0), tiny)
    rows = [{"prompt": prompts.prompt(s, ds.catalogue, ds.wording),
             "chosen": prompts.target_completion(s, ds.catalogue, ds.wording),
             "rejected": [prompts.completion(ds.catalogue.titles[3 + (i + j) % 7], ds.wording) for j in range(2)]}
            for i, s in enumerate(ds.train[:4])]
    if kind == "dpo":
        rows = [dict(r, rejected=r["rejected"][0]) for r in rows]
    cfg = StageConfig(epochs=3, lr=3e-3, batch_size=2, grad_accum=1, warmup_steps=0, max_length=256, save_epochs=True)
    trained = getattr(trainers, kind)(model, tok, rows, cfg, tmp_path / kind, 0, checkpoint_minutes=None)
    assert list(stage_snapshots(tmp_path / kind)) == [1, 2]
    saved = []
    for n in (1, 2):
        folder = tmp_path / kind / f"epoch{n}"
        assert verify_stage(folder) is None and read_json(folder / "DONE")["global_step"] == 2 * n
        assert sorted(p.name for p in (folder / "model").iterdir() if p.is_dir()) == []  # no ref/ adapter
        saved.append(load_file(str(folder / "model" / "adapter_model.safetensors")))
    trained.save_pretrained(tmp_path / "final")
    saved.append(load_file(str(tmp_path / "final" / "adapter_model.safetensors")))
    assert not same_weights(saved[0], saved[1]) and not same_weights(saved[1], saved[2])


def test_threads_and_speed_switches_share_the_cached_stages():
    """How a stage is computed does not make a key of its own: the thread count and each speed
    switch, off their defaults, give the same keys as the defaults (which are the keys computed
    before this rule, pinned above), while a setting that changes the stage still changes them."""
    base = run_config("tiny", dataset="ml-1m", method="sft", seed=0)
    changes = ["model.torch_threads=1", "model.torch_threads=2", "pretrain.fast_head=false",
               "sft.fast_head=false", "sft.head_kernel=chunked", "sft.shared_prompt=true",
               "sft.token_metrics=every_step"]
    for change in changes:
        other = run_config("tiny", [change], dataset="ml-1m", method="sft", seed=0)
        for stage in ("pretrain", "sft"):
            assert shared_stage_key(other, stage, DATA_KEY) == shared_stage_key(base, stage, DATA_KEY), change
    assert shared_stage_key(base, "pretrain", DATA_KEY) == "pretrain-51910ef95ec4de49"
    for change in ["model.hidden_size=128", "pretrain.lr=5e-4", "model.dtype=bfloat16"]:
        other = run_config("tiny", [change], dataset="ml-1m", method="sft", seed=0)
        assert shared_stage_key(other, "pretrain", DATA_KEY) != shared_stage_key(base, "pretrain", DATA_KEY), change
