"""Whole runs of every method on a micro `tiny` model: run folders, resuming, determinism, the CLI."""

import json

import pandas as pd
import pytest
import trl

from sprec_lib.cli import main
from sprec_lib.config import run_config
from sprec_lib.quick import QUICK_RUN
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.pipeline import train
from sprec_lib.runs import Run, RunConfigMismatch

# A micro model that learns the output format in 40 SFT steps (so self-play has real negatives).
MICRO = QUICK_RUN + ["model.torch_threads=1", "sprec.eval_sft_steps=false"]  # the library's quick-mode sizes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path_factory.mktemp("ds") / "synth")


def config(dataset, method="sprec", extra=()):
    return run_config("tiny", MICRO + list(extra), dataset=str(dataset), method=method, seed=3)


def test_sprec_run_folder_and_metrics(dataset, tmp_path):
    run = train(config(dataset), tmp_path / "run", cache_dir=tmp_path / "cache")
    metrics = run.metrics()
    assert list(metrics) == ["sft", "it1", "it2"]
    for m in metrics.values():
        assert 0 <= m["valid_ratio"] <= 1 and 0 <= m["@5"]["HR"] <= 1 and m["rows"] == 12
    saved = json.loads((run.folder / "config.json").read_text())
    assert saved["config"]["method"] == "sprec" and saved["versions"]["trl"] == trl.__version__
    for stage in ("pretrain", "sft", "it1-sft", "it1-dpo", "it2-sft", "it2-dpo"):
        assert run.done(stage) and (run.model_dir(stage) / "config.json").exists()
    assert run.negatives_path("it1").exists() and run.predictions_path("it2").exists()
    # A second call on a finished run trains nothing and changes nothing.
    before = {p: p.stat().st_mtime for p in run.folder.rglob("*") if p.is_file()}
    train(config(dataset), tmp_path / "run", cache_dir=tmp_path / "cache")
    after = {p: p.stat().st_mtime for p in run.folder.rglob("*") if p.is_file() and p.name not in ("log.txt", ".lock")}
    assert all(before[p] == t for p, t in after.items())


def test_sft_step_evaluations_add_metrics_and_change_nothing_else(dataset, tmp_path):
    """sprec.eval_sft_steps (the public script's evaluation after each SFT step): the SFT-step
    models' metrics come on top, labelled it<t>-sft, and every other metric is what the same run
    without them gives (a measurement, not a change: the evaluation sits between two stages that
    start from saved weights). Runs with and without it are one spec (experiments.matches), and a
    run folder made without it resumes when asked with it, keeping its own setting."""
    from sprec_lib import experiments
    from sprec_lib.pipeline import plan

    plain = train(config(dataset), tmp_path / "plain", cache_dir=tmp_path / "cache").metrics()
    asked = config(dataset, extra=["sprec.eval_sft_steps=true"])
    steps = [s["stage"] for s in plan(asked, ds=None)["stages"]]
    assert steps.index("eval it1-sft") == steps.index("it1-sft") + 1 and "eval it2-sft" in steps
    both = train(asked, tmp_path / "both", cache_dir=tmp_path / "cache").metrics()
    assert list(both) == ["sft", "it1-sft", "it1", "it2-sft", "it2"]
    assert {k: both[k] for k in plain} == plain
    assert both["it1-sft"]["stage"] == "it1-sft" and 0 <= both["it1-sft"]["valid_ratio"] <= 1
    spec = experiments.RunSpec(str(dataset), "sprec", seed=3, overrides=tuple(MICRO))
    assert experiments.matches(Run(tmp_path / "both"), spec) and experiments.matches(Run(tmp_path / "plain"), spec)
    assert Run(tmp_path / "plain", asked).cfg.sprec.eval_sft_steps is False


@pytest.mark.parametrize("checkpoint_minutes", [None, 0])
def test_interrupted_run_resumes_to_the_same_metrics(dataset, tmp_path, monkeypatch, checkpoint_minutes):
    """Kill a run at the second training step of its first DPO stage; the resumed run ends exactly
    where an uninterrupted run with the same seed ends (separate caches: nothing is shared between
    them). Without checkpoints the stage starts again; with a checkpoint after every step
    (``checkpoint_minutes=0``) it resumes from ``checkpoint-1``."""
    whole = train(config(dataset), tmp_path / "whole", cache_dir=tmp_path / "cache-a").metrics()

    calls = {"n": 0}
    original = trl.DPOTrainer.training_step
    micro_batches = config(dataset).sprec.dpo.grad_accum  # training_step runs once per micro-batch

    def crash_on_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == micro_batches + 1:
            raise KeyboardInterrupt("simulated interruption mid-DPO")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "training_step", crash_on_second_step)
    with pytest.raises(KeyboardInterrupt):
        train(config(dataset), tmp_path / "resumed", cache_dir=tmp_path / "cache-b", checkpoint_minutes=checkpoint_minutes)
    run = Run(tmp_path / "resumed")
    assert run.done("it1-sft") and not run.done("it1-dpo") and run.stage_dir("it1-dpo").exists()
    checkpoints = [p.name for p in run.stage_dir("it1-dpo").glob("checkpoint-*")]
    assert checkpoints == ([] if checkpoint_minutes is None else ["checkpoint-1"])
    monkeypatch.setattr(trl.DPOTrainer, "training_step", original)
    resumed = train(config(dataset), tmp_path / "resumed", cache_dir=tmp_path / "cache-b",
                    checkpoint_minutes=checkpoint_minutes).metrics()
    assert resumed == whole
    resumed_from = "stage it1-dpo: resuming from checkpoint-1" in (run.folder / "log.txt").read_text()
    assert resumed_from == (checkpoint_minutes == 0)
    assert not list(run.folder.rglob("checkpoint-*"))  # deleted as each stage finished


@pytest.mark.parametrize("decode", ["negatives-it1", "eval-it1"])
def test_a_decode_killed_mid_way_resumes_at_its_unfinished_batches(dataset, tmp_path, monkeypatch, decode):
    """Kill a run after the second finished batch of a decode (the self-play negatives of iteration
    1, or the evaluation after it): the run again reads those two batches back from the run's
    ``partial/`` file, decodes only the rest, ends where an uninterrupted run ends, and leaves no
    partial file behind."""
    from sprec_lib.decoding import DecodeJournal

    extra = ["eval.batch_size=4"]  # 12 test rows: 3 batches
    whole = train(config(dataset, extra=extra), tmp_path / "whole", cache_dir=tmp_path / "cache-a").metrics()
    original = DecodeJournal.add
    added: list[str] = []

    def killed_after_the_second_batch(self, rows, ids):
        original(self, rows, ids)
        added.append(self.path.stem)
        if added.count(decode) == 2:
            raise KeyboardInterrupt(f"simulated kill in the middle of {decode}")

    monkeypatch.setattr(DecodeJournal, "add", killed_after_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        train(config(dataset, extra=extra), tmp_path / "resumed", cache_dir=tmp_path / "cache-b")
    run = Run(tmp_path / "resumed")
    assert len(run.partial_path(decode).read_text().splitlines()) == 3  # its key and two batches
    monkeypatch.setattr(DecodeJournal, "add", original)
    decoded: list[str] = []
    monkeypatch.setattr(DecodeJournal, "add", lambda self, rows, ids: (decoded.append(self.path.stem), original(self, rows, ids)))
    resumed = train(config(dataset, extra=extra), tmp_path / "resumed", cache_dir=tmp_path / "cache-b").metrics()
    assert resumed == whole
    log = (run.folder / "log.txt").read_text()
    assert f"{decode}: resuming the decode: 2 finished batch(es) read back" in log
    batches = added.count(decode) + decoded.count(decode)  # decoded once each, over the two runs
    assert batches == (3 if decode == "eval-it1" else -(-len(run.load_negatives("it1")) // 4))
    assert not (run.folder / "partial").exists()


def test_dpo_and_sdpo_share_the_sft_stage(dataset, tmp_path):
    cache = tmp_path / "cache"
    dpo = train(config(dataset, "dpo"), tmp_path / "dpo", cache_dir=cache)
    stale = tmp_path / "sdpo" / "stages" / "sft" / "checkpoint-7"  # as if its own SFT had been cut short
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    sdpo = train(config(dataset, "sdpo"), tmp_path / "sdpo", cache_dir=cache)
    assert list(dpo.metrics()) == ["sft", "dpo"] and list(sdpo.metrics()) == ["sft", "sdpo"]
    # Same seed and SFT settings: the second run reused the first run's SFT model (not its own checkpoint).
    assert "reused" in (sdpo.folder / "log.txt").read_text() and not stale.exists()
    assert dpo.metrics()["sft"] == sdpo.metrics()["sft"]
    # ... and the first run's evaluation of it: read back, not decoded again (the first run decoded).
    assert "eval sft: reused from the cache" in (sdpo.folder / "log.txt").read_text()
    assert "eval sft: reused" not in (dpo.folder / "log.txt").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(dpo.predictions_path("sft")), pd.read_parquet(sdpo.predictions_path("sft")))


def test_sprec_variants_share_the_first_sft_step(dataset, tmp_path):
    """SPRec's it1-sft is the same model in SPRec and SPRec-RN of one seed: trained in each (two
    caches), the checksums agree, which is what makes sharing it sound. A finished run called again
    with another cache fills it (a run that finished before the cache held its stages), and a third
    run reuses it there; a later iteration's SFT step, shaped by the negatives, stays each run's own."""
    from sprec_lib.runs import read_json

    rn = ["sprec.negatives=random"]
    sprec = train(config(dataset), tmp_path / "sprec", cache_dir=tmp_path / "c1")
    alone = train(config(dataset, extra=rn), tmp_path / "rn-alone", cache_dir=tmp_path / "c2")
    files = lambda run, stage: read_json(run.stage_dir(stage) / "DONE")["model_files"]
    assert files(alone, "it1-sft") == files(sprec, "it1-sft")
    assert files(alone, "it2-sft") != files(sprec, "it2-sft")

    train(config(dataset), tmp_path / "sprec", cache_dir=tmp_path / "c3")  # finished: trains nothing
    assert "stage it1-sft: cached for other runs" in (sprec.folder / "log.txt").read_text()
    shared = train(config(dataset, extra=rn), tmp_path / "rn-shared", cache_dir=tmp_path / "c3")
    log = (shared.folder / "log.txt").read_text()
    assert "stage it1-sft: reused" in log and "stage it2-sft: reused" not in log
    assert "stage it1-sft: starting" not in log and "stage it2-sft: starting" in log
    assert shared.metrics() == alone.metrics()


def test_the_first_sft_step_key_holds_what_trains_it():
    from sprec_lib.pipeline import shared_stage_key

    def key(extra=(), method="sprec", seed=0, stage="it1-sft"):
        return shared_stage_key(run_config("tiny", list(extra), dataset="ml-1m", method=method, seed=seed), stage, "k")

    base = key()
    assert base.startswith("it1-sft-") and base != key(stage="sft")
    for same in (["sprec.negatives=random"], ["sprec.dpo_step=false"], ["sprec.negatives=mix", "sprec.random_ratio=0.5"],
                 ["sprec.n_negatives=2"], ["sprec.iterations=3"], ["sprec.dpo.lr=1e-4"], ["sprec.eval_sft_steps=true"],
                 ["model.torch_threads=1"], ["eval.batch_size=8"]):
        assert key(same) == base, same
    for other in (["sprec.train_rows=1024"], ["sprec.valid_rows=128"], ["sprec.sft.lr=3e-4"], ["sft.lr=3e-4"],
                  ["train_rows=1024"], ["pretrain.lr=5e-4"]):
        assert key(other) != base, other
    assert key(seed=1) != base
    assert key(["sprec.sft_step=false"]) is None and key(method="dpo") is None and key(stage="it2-sft") is None


def test_a_shared_evaluation_is_kept_whole_or_not_at_all(tmp_path):
    """keep_shared_evaluation/read_shared_evaluation: what is kept reads back equal; a folder whose
    metrics do not parse (a broken write) reads as none and is replaced; the run's own stages,
    other eval settings and other weights of the same stage (another DONE record) have other
    places, or none."""
    from sprec_lib.pipeline import keep_shared_evaluation, read_shared_evaluation, shared_evaluation_path
    from sprec_lib.runs import DONE

    stage, retrained = tmp_path / "stage", tmp_path / "retrained"
    for folder, sha in ((stage, "aa"), (retrained, "bb")):
        folder.mkdir()
        (folder / DONE).write_text(json.dumps({"model_files": {"adapter_model.safetensors": {"size": 1, "sha256": sha}}}))
    cfg = config("data")
    here = shared_evaluation_path(cfg, "sft", "datakey", stage, tmp_path)
    assert here.parent == tmp_path / "evaluations" and here.name.startswith("sft-")
    assert shared_evaluation_path(cfg, "sft", "datakey", retrained, tmp_path) != here
    assert shared_evaluation_path(cfg, "sft", "datakey", tmp_path / "unfinished", tmp_path) is None
    assert shared_evaluation_path(cfg, "dpo", "datakey", stage, tmp_path) is None  # a run's own stage
    other = run_config("tiny", MICRO + ["eval.split=valid"], dataset="data", method="sprec", seed=3)
    assert shared_evaluation_path(other, "sft", "datakey", stage, tmp_path) != here
    assert read_shared_evaluation(here) is None
    frame = pd.DataFrame({"row": [0, 1], "topk": [[3, 4], [5, 6]]})
    here.mkdir(parents=True)
    (here / "metrics.json").write_text("{not json")
    assert read_shared_evaluation(here) is None
    keep_shared_evaluation(here, frame, {"@1": {"HR": 0.5}})
    kept_frame, kept_metrics = read_shared_evaluation(here)
    assert kept_metrics == {"@1": {"HR": 0.5}} and kept_frame["topk"].map(list).tolist() == [[3, 4], [5, 6]]
    keep_shared_evaluation(here, frame, {"@1": {"HR": 0.0}})  # a second writer: the first stays
    assert read_shared_evaluation(here)[1] == {"@1": {"HR": 0.5}}
    assert [p.name for p in here.parent.iterdir()] == [here.name]  # no temporary folder left


def test_a_run_folder_refuses_another_config(dataset, tmp_path):
    train(config(dataset, "sft"), tmp_path / "run", cache_dir=tmp_path / "cache")
    with pytest.raises(RunConfigMismatch, match="different config"):
        train(config(dataset, "sft", ["sft.lr=0.5"]), tmp_path / "run", cache_dir=tmp_path / "cache")


def test_a_run_folder_resumes_when_only_a_speed_switch_differs(dataset, tmp_path):
    # A run started before shared_prompt went on by default must resume (not be refused), and go on
    # with the switches it started with; any other field still makes a different config.
    started = config(dataset, "dpo", ["dpo.shared_prompt=false"])
    Run(tmp_path / "run", started)
    resumed = Run(tmp_path / "run", config(dataset, "dpo", ["dpo.shared_prompt=true"]))
    assert resumed.cfg.dpo.shared_prompt is False and resumed.cfg == started
    with pytest.raises(RunConfigMismatch, match="'dpo'"):
        Run(tmp_path / "run", config(dataset, "dpo", ["dpo.shared_prompt=true", "dpo.beta=0.5"]))


def test_cli_train_and_eval(dataset, tmp_path, capsys):
    args = ["train", "--dataset", str(dataset), "--method", "sft", "--profile", "tiny", "--seed", "3",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    for s in MICRO:
        args += ["--set", s]
    assert main(args) == 0
    assert "HR@5" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "run"), "--set", "eval.mode=constrained", "--cache-dir", str(tmp_path / "cache")]) == 0
    m = json.loads((tmp_path / "run" / "metrics" / "sft-constrained-5.json").read_text())
    assert m["valid_ratio"] == 1.0  # constrained decoding only produces catalogue titles
    assert main(["eval", str(tmp_path / "nothing-here")]) == 2


def test_shared_stage_lock_makes_a_second_run_wait(tmp_path):
    """While one holder trains a shared stage, a second one waits (and is told so) until the
    first releases it: the order of events is checked, not timings."""
    import threading

    from sprec_lib.pipeline import shared_stage_lock

    lock, events, inside = tmp_path / "stages" / "sft-x.lock", [], threading.Event()

    def second():
        inside.set()
        with shared_stage_lock(lock, on_wait=lambda: events.append("second waits")):
            events.append("second holds")

    with shared_stage_lock(lock, on_wait=lambda: events.append("first waits")):
        events.append("first holds")
        thread = threading.Thread(target=second)
        thread.start()
        inside.wait()
        while not events[1:]:  # the second is blocked on the lock once it has said it waits
            thread.join(0.01)
        events.append("first releases")
    thread.join()
    assert events == ["first holds", "second waits", "first releases", "second holds"]


@pytest.mark.parametrize("flags, minutes", [([], 10.0), (["--checkpoint-minutes", "2.5"], 2.5), (["--no-checkpoints"], None)])
def test_cli_train_passes_the_checkpoint_interval(dataset, tmp_path, monkeypatch, flags, minutes):
    import sprec_lib.pipeline

    seen = {}

    class NoMetrics:
        label, seed, final_stage, folder = "sft", 0, "sft", tmp_path / "run"

        def metrics(self):
            return {}

    def fake_train(cfg, folder, cache_dir=None, checkpoint_minutes="unset", variant=None):
        seen["minutes"] = checkpoint_minutes
        return NoMetrics()

    monkeypatch.setattr(sprec_lib.pipeline, "train", fake_train)
    main(["train", "--dataset", str(dataset), "--method", "sft", "--out", str(tmp_path / "run"), *flags])
    assert seen["minutes"] == minutes


def test_the_dry_runs_estimate_times_a_stage_as_it_will_train():
    """The benchmark's variant that matches the stage: bf16 SFT takes the shared-prompt bf16 figure
    (the shared prompt does nothing in SFT), a stage with no matching variant the fp32 ``new`` one."""
    from sprec_lib.pipeline import _median_seconds

    entry = {"old": {"seconds_median": 50.0}, "new": {"seconds_median": 40.0},
             "new_shared": {"seconds_median": 30.0}, "new_shared_bf16": {"seconds_median": 20.0}}
    assert _median_seconds(entry) == 40.0
    assert _median_seconds(entry, shared_prompt=True) == 30.0
    assert _median_seconds(entry, "bfloat16") == 20.0 and _median_seconds(entry, "bfloat16", True) == 20.0
    assert _median_seconds({"old": {"seconds_median": 50.0}}, "bfloat16") == 50.0
    assert _median_seconds({"seconds_median": 7.0}, "bfloat16") == 7.0


def test_a_dpo_estimate_is_per_pair_the_benchmark_trained():
    """pipeline._estimate: the benchmark's DPO seconds are for the pairs it trained (3 of its 16
    rows here: the others' negatives equalled their positives), so 4,096 rows of DPO take
    4,096 x 12 / 3 s; S-DPO scales by its extra completions; SFT and the negatives are per
    benchmark row, the evaluation per eval row (worked by hand)."""
    from sprec_lib.config import StageConfig
    from sprec_lib.pipeline import _estimate

    bench = {"rows": 16, "eval_rows": 8, "pairs": 3,
             "stages": {"dpo": {"new_shared": {"seconds_median": 12.0}, "new": {"seconds_median": 12.0}, "tokens": 300,
                                "head_positions": 30},
                        "sft": {"new": {"seconds_median": 32.0}, "tokens": 1600},
                        "negatives": {"seconds_median": 16.0}, "eval": {"seconds_median": 4.0}}}
    dpo = StageConfig(epochs=1, shared_prompt=True)
    assert _estimate("dpo", 4096, None, dpo, bench) == (pytest.approx(4096 * 4.0), 4096 * 100)
    # S-DPO, 1 + 3 completions against DPO's 2: with the prompt run once, only the completions'
    # tenth of the tokens doubles (30 head positions of 300 tokens): x (0.9 + 0.1 x 2); without, all of it.
    assert _estimate("sdpo", 4096, None, StageConfig(epochs=1, n_negatives=3, shared_prompt=True), bench)[0] == \
        pytest.approx(4096 * 4.0 * 1.1)
    assert _estimate("sdpo", 4096, None, StageConfig(epochs=1, n_negatives=3), bench)[0] == pytest.approx(4096 * 4.0 * 2)
    assert _estimate("sft", 4096, None, StageConfig(epochs=2), bench) == (pytest.approx(4096 * 2 * 2.0), 4096 * 2 * 100)
    assert _estimate("negatives", 512, None, None, bench)[0] == pytest.approx(512 * 1.0)
    assert _estimate("eval", 1000, None, None, bench)[0] == pytest.approx(1000 * 0.5)
    del bench["pairs"]  # a benchmark from before it said: per row, as before
    assert _estimate("dpo", 4096, None, dpo, bench)[0] == pytest.approx(4096 * 12.0 / 16)
