"""Runs -> tables: the mean and std over seeds worked out by hand on fake run folders."""

import json

import pytest

from sprec_lib.config import run_config
from sprec_lib.results import finished_runs, format_mean_std, iteration_curves, run_rows, summary_table
from sprec_lib.runs import Run, write_json


def fake_run(root, method, seed, hr5, final, labels):
    run = Run(root / f"{method}-{seed}", run_config("tiny", dataset="/x/ml-1m", method=method, seed=seed))
    for i, label in enumerate(labels):
        stage = final if label == labels[-1] else label
        m = {"valid_ratio": 1.0, "stage": stage, "@1": {"HR": 0.0, "DivRatio": 0.1 * i}, "@5": {"HR": hr5 + i}}
        write_json(m, run.metrics_path(label))
    write_json({"method": method, "final_stage": final}, run.folder / "FINISHED")
    return run


def test_mean_and_std_over_seeds(tmp_path):
    fake_run(tmp_path, "sft", 0, 0.01, "sft", ["sft"])
    fake_run(tmp_path, "sft", 1, 0.03, "sft", ["sft"])
    fake_run(tmp_path, "sprec", 0, 0.02, "it2-dpo", ["sft", "it1", "it2"])
    rows = run_rows(finished_runs(tmp_path))
    # SPRec's headline is its last iteration: HR@5 = 0.02 + 2 (the fake's index offset).
    assert sorted(rows["HR@5"]) == pytest.approx([0.01, 0.03, 2.02])
    table = summary_table(rows, columns=["HR@5"])
    sft = table.loc[("ml-1m", "tiny", "sft")]
    # mean(0.01, 0.03) = 0.02; sample std = sqrt(((0.01)^2 + (0.01)^2) / 1) = 0.014142...
    assert sft["HR@5"] == pytest.approx(0.02) and sft["HR@5 std"] == pytest.approx(0.0141421356) and sft["seeds"] == 2
    assert list(table.index.get_level_values("method")) == ["sft", "sprec"]
    assert format_mean_std(table, ["HR@5"]).loc[("ml-1m", "tiny", "sft"), "HR@5"] == "0.0200 ± 0.0141"


def test_iteration_curves(tmp_path):
    run = fake_run(tmp_path, "sprec", 0, 0.5, "it2-dpo", ["sft", "it1", "it2"])
    curves = iteration_curves(run)
    assert list(curves["iteration"]) == [0, 1, 2] and list(curves["HR@5"]) == pytest.approx([0.5, 1.5, 2.5])
