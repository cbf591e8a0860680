"""The `sprec` command: it says what it will do before it does it, and refuses what it cannot do."""

import math

import pytest

from sprec_lib import methods
from sprec_lib.cli import main
from sprec_lib.config import PROFILE_NAMES, run_config
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.pipeline import plan


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path_factory.mktemp("ds") / "synth")


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("method", methods.names())
def test_dry_run_writes_nothing_and_lists_every_stage(dataset, tmp_path, capsys, method, profile):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "--method", method, "--profile", profile, "--out", str(out),
                 "--dry-run", "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert "dry run: nothing was written" in text and f"({method})" in text
    p = plan(run_config(profile, dataset=str(dataset), method=method), out, tmp_path / "cache")
    names = [s["stage"] for s in p["stages"]]
    if methods.get(method).llm:  # the shared start first; SASRec has a model of its own
        assert names[:2] == (["pretrain", "sft"] if profile == "tiny" else ["sft", "eval sft"])
    else:
        assert "sft" not in names and "pretrain" not in names
    for name in names:
        assert name in text
    if method == "sprec":
        iterations = run_config(profile).sprec.iterations
        assert sum(n.endswith("-dpo") for n in names) == iterations


def test_dry_run_counts_by_hand(dataset, tmp_path):
    """The synthetic folder has 64 training rows: the tiny profile's SFT (2 epochs, batch 8 x 2)
    takes ceil(64 x 2 / 16) = 8 steps; its DPO (1 epoch, batch 2 x 4) ceil(64 / 8) = 8; SPRec's
    iterations train on min(2,048, 64) = 64 rows; evaluation reads the 16 test rows."""
    cfg = run_config("tiny", ["sprec.iterations=2"], dataset=str(dataset), method="sprec")
    stages = {s["stage"]: s for s in plan(cfg)["stages"]}
    assert stages["sft"]["rows"] == 64 and stages["sft"]["steps"] == 8
    assert stages["pretrain"]["steps"] == 400 and stages["pretrain"]["tokens"] == 400 * 8 * 512
    assert stages["it1-dpo"]["rows"] == 64 and stages["it1-dpo"]["steps"] == math.ceil(64 * 1 / (2 * 4))
    assert stages["eval it2"]["rows"] == 16 and stages["it2-negatives"]["rows"] == 64
    assert all(s["status"] == "to run" for s in stages.values())
    dpo = {s["stage"]: s for s in plan(run_config("tiny", dataset=str(dataset), method="dpo"))["stages"]}
    assert dpo["dpo"]["steps"] == 8 and list(dpo) == ["pretrain", "sft", "eval sft", "dpo", "eval dpo"]


def test_dry_run_shows_what_a_run_folder_already_has(dataset, tmp_path, capsys):
    from sprec_lib.quick import QUICK_RUN

    args = ["train", "--dataset", str(dataset), "--method", "sft", "--out", str(tmp_path / "run"), "--quick",
            "--cache-dir", str(tmp_path / "cache"), "--set", "model.torch_threads=1"]
    assert main(args) == 0
    assert "done: sft seed 0, final stage sft" in capsys.readouterr().out
    assert main(args + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "resumes" in text and text.count("done in the run folder") == 3  # pretrain, sft, its evaluation
    # Another seed's run would reuse the cached pretraining stage.
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(dataset), method="sft", seed=1)
    stages = {s["stage"]: s["status"] for s in plan(cfg, tmp_path / "other", tmp_path / "cache")["stages"]}
    assert stages == {"pretrain": "reused from the cache", "sft": "to run", "eval sft": "to run"}
    # Another method's run on the same seed would reuse the SFT model and its evaluation too.
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(dataset), method="dpo", seed=0)
    stages = {s["stage"]: s["status"] for s in plan(cfg, tmp_path / "dpo", tmp_path / "cache")["stages"]}
    assert stages == {"pretrain": "reused from the cache", "sft": "reused from the cache",
                      "eval sft": "reused from the cache", "dpo": "to run", "eval dpo": "to run"}


@pytest.mark.parametrize("args, message", [
    (["--set", "method=dpo"], "use --method"),
    (["--set", "dataset=/elsewhere"], "use --dataset"),
    (["--set", "sprec=3"], "sprec is a section"),
    (["--set", "eval.mode=beam"], "eval.mode"),
    (["--set", "sprec.negatives=best"], "sprec.negatives"),
    (["--set", "lr=nan"], "lr"),
    (["--seed", "-1"], "seed"),
])
def test_bad_settings_fail_before_anything_is_written(dataset, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", str(dataset), "--method", "sprec", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and message in err and "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file_or_unknown_asset(dataset, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--dataset", str(dataset), "--method", "sft", "--out", str(tmp_path / "file")]) == 2
    assert "a file is there" in capsys.readouterr().err
    assert main(["assets", "fetch", "no-such-asset"]) == 2
    assert "no-such-asset" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sprec ")
