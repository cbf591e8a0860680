"""Runs -> tables: the mean and std over seeds worked out by hand on fake run folders."""

import json

import pandas as pd
import pytest

from sprec_lib.config import run_config
from sprec_lib.experiments import RunSpec
from sprec_lib.results import (ABLATION_CLAIMS, claim_checks, sweep_rows, trend_checks, negatives_popularity, paper_numbers, verdicts, finished_runs, format_mean_std, genre_gu, hr_noise, iteration_curves,
                               last_iterations_mean, paired_differences, run_rows, summary_table, table_means)
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
    assert format_mean_std(table, ["HR@5"]).loc[("ml-1m", "tiny", "sprec"), "HR@5"] == "2.0200"  # one seed: no spread


def test_iteration_curves(tmp_path):
    run = fake_run(tmp_path, "sprec", 0, 0.5, "it2-dpo", ["sft", "it1", "it2"])
    curves = iteration_curves(run)
    assert list(curves["iteration"]) == [0, 1, 2] and list(curves["HR@5"]) == pytest.approx([0.5, 1.5, 2.5])


def rows_frame(values):
    """A run_rows-shaped frame from {(label, seed): {metric: value}} on one dataset (1000 test rows)."""
    return pd.DataFrame([{"dataset": "d", "profile": "tiny", "method": label.split("-")[0], "label": label,
                          "seed": seed, "rows": 1000, **m} for (label, seed), m in values.items()])


def test_paired_differences_by_seed():
    rows = rows_frame({("sft", 0): {"HR@5": 0.010}, ("sft", 1): {"HR@5": 0.020},
                       ("dpo", 0): {"HR@5": 0.013}, ("dpo", 1): {"HR@5": 0.027},
                       ("sprec", 0): {"HR@5": 0.012}, ("sprec", 1): {"HR@5": 0.018}})
    d = paired_differences(rows, columns=["HR@5"]).set_index("label")
    # dpo - sft per seed: +0.003, +0.007 -> mean 0.005, std sqrt(2 * 0.002^2) = 0.0028284
    assert d.loc["dpo", "mean"] == pytest.approx(0.005) and d.loc["dpo", "std"] == pytest.approx(0.0028284271)
    assert d.loc["dpo", "sign"] == 1 and d.loc["dpo", "seeds"] == 2 and d.loc["dpo", "text"] == "+0.0050 ± 0.0028"
    # sprec - sft: +0.002, -0.002 -> mean 0, mixed signs
    assert d.loc["sprec", "mean"] == pytest.approx(0.0) and d.loc["sprec", "sign"] == 0


def test_hr_noise_is_the_larger_of_seed_std_and_binomial_error():
    one = rows_frame({("sft", 0): {"HR@5": 0.016}})
    assert hr_noise(one) == pytest.approx((0.016 * 0.984 / 1000) ** 0.5)  # 0.003968
    spread = rows_frame({("sft", 0): {"HR@5": 0.0}, ("sft", 1): {"HR@5": 0.04}})
    assert hr_noise(spread) == pytest.approx(0.0282842712)  # std of (0, 0.04) beats sqrt(.02 * .98 / 1000)


def test_claim_checks():
    base = {"ORRatio@1": 0.3, "DivRatio@1": 0.1, "ORRatio@5": 0.1, "DivRatio@5": 0.08, "HR@5": 0.016}
    rows = rows_frame({
        ("sft", 0): base, ("sft", 1): base,
        # DPO: ORRatio@1 up in both seeds, DivRatio@1 down in one seed only
        ("dpo", 0): {**base, "ORRatio@1": 0.35, "DivRatio@1": 0.09}, ("dpo", 1): {**base, "ORRatio@1": 0.31, "DivRatio@1": 0.11},
        # SPRec: diversity up, over-recommendation down, HR@5 down by 0.002 < noise 0.00397
        ("sprec", 0): {**base, "DivRatio@1": 0.2, "ORRatio@1": 0.2, "HR@5": 0.014},
        ("sprec", 1): {**base, "DivRatio@1": 0.3, "ORRatio@1": 0.1, "HR@5": 0.014},
    })
    checks = claim_checks(rows).set_index(["method", "metric"])["holds"]
    assert checks.notna().all()
    assert checks[("dpo", "ORRatio@1")] and not checks[("dpo", "DivRatio@1")]
    assert not checks[("dpo", "ORRatio@5")]  # no change is not "up in every seed"
    assert checks[("sprec", "DivRatio@1")] and checks[("sprec", "ORRatio@1")] and checks[("sprec", "HR@5")]
    rows.loc[rows["label"] == "sprec", "HR@5"] = 0.010  # -0.006: beyond the binomial noise
    assert not claim_checks(rows).set_index(["method", "metric"])["holds"][("sprec", "HR@5")]


def test_last_iterations_mean_and_genre_gu(tmp_path):
    run = Run(tmp_path / "sprec-nosft-seed4", run_config("tiny", dataset="/x/ml-1m", method="sprec", seed=4))
    for it in range(1, 6):
        write_json({"valid_ratio": 1.0 - 0.1 * it, "rows": 100, "stage": f"it{it}-dpo",
                    "@1": {"HR": 0.01 * it, "GU": {"a": 0.1 * it, "b": 0.0}}}, run.metrics_path(f"it{it}"))
    write_json({"method": "sprec", "final_stage": "it5-dpo"}, run.folder / "FINISHED")
    m = last_iterations_mean(run, 3)  # iterations 3, 4, 5
    assert m["valid_ratio"] == pytest.approx(0.6) and m["@1"]["HR"] == pytest.approx(0.04)
    assert m["@1"]["GU"]["a"] == pytest.approx(0.4) and m["rows"] == 100
    with pytest.raises(ValueError, match="5 iterations evaluated, 6 needed"):
        last_iterations_mean(run, 6)
    rows = run_rows([run])
    assert rows.loc[0, "label"] == "sprec-nosft" and rows.loc[0, "HR@1"] == pytest.approx(0.05)
    gu = genre_gu([run])
    assert gu.loc["a", "sprec-nosft"] == pytest.approx(0.5) and gu.loc["b", "sprec-nosft"] == 0.0


def test_summary_table_by_label_keeps_variants_apart():
    rows = rows_frame({("sprec", 0): {"HR@5": 0.1}, ("sprec-rn", 0): {"HR@5": 0.3}, ("sft", 0): {"HR@5": 0.2}})
    table = summary_table(rows, columns=["HR@5"], order=("sft", "sprec"), by="label")
    assert list(table.index.get_level_values("label")) == ["sft", "sprec", "sprec-rn"]
    assert table["HR@5"].tolist() == pytest.approx([0.2, 0.1, 0.3])


def test_verdicts_and_ablation_claims():
    base = {"HR@5": 0.02, "DivRatio@1": 0.3, "ORRatio@1": 0.2}
    rows = rows_frame({("sprec", 0): base,
                       ("sprec-nosft", 0): {**base, "HR@5": 0.01},
                       ("sprec-nodpo", 0): {**base, "DivRatio@1": 0.1, "ORRatio@1": 0.3},
                       ("sprec-rn", 0): {**base, "DivRatio@1": 0.1, "ORRatio@1": 0.1}})
    checks = claim_checks(rows, base="sprec", claims=ABLATION_CLAIMS)
    assert verdicts(checks).tolist() == ["reproduced (1 seed)", "reproduced (1 seed)", "not reproduced (1 seed)"]  # RN: ORRatio fell
    two = pd.concat([rows, rows.assign(seed=1)])
    assert verdicts(claim_checks(two, base="sprec", claims=ABLATION_CLAIMS)).tolist() == ["reproduced", "reproduced", "not reproduced"]
    missing = claim_checks(rows[rows["label"] != "sprec-rn"], base="sprec", claims=ABLATION_CLAIMS)
    assert verdicts(missing).iloc[-1] == "pending"


def test_paper_numbers_file(tmp_path):
    committed = paper_numbers()  # the committed file parses (it may hold no numbers yet)
    assert list(committed.columns) == ["table", "dataset", "method", "metric", "value", "source"]
    f = tmp_path / "t.csv"
    f.write_text("table,dataset,method,metric,value,source\n1,Steam,sprec,HR@5,0.0123,v3 Table 1\n")
    got = paper_numbers(f)
    assert got.loc[0, "value"] == pytest.approx(0.0123) and got.loc[0, "table"] == 1
    f.write_text("table,dataset,method,metric,value,source\n1,Steam,sprec,HR@5,0.1,x\n1,Steam,sprec,HR@7,0.1,x\n")
    with pytest.raises(ValueError, match=r"t.csv, row 3: metric 'HR@7'"):
        paper_numbers(f)
    f.write_text("table,dataset,method,metric,value,source\n2,Steam,sprec,HR@5,n/a,x\n")
    with pytest.raises(ValueError, match=r"row 2: value 'n/a' is not a number"):
        paper_numbers(f)


def test_cli_results_prints_tables_and_verdicts(tmp_path, capsys):
    from sprec_lib.cli import main

    def run(method, seed, div1, or1, hr5):
        r = Run(tmp_path / "ml-1m-tiny" / f"{method}-seed{seed}",
                run_config("tiny", dataset="/x/ml-1m", method=method, seed=seed))
        m = {"valid_ratio": 1.0, "rows": 1000, "stage": method,
             "@1": {"HR": 0.0, "NDCG": 0.0, "DivRatio": div1, "ORRatio": or1, "MGU": 0.01},
             "@5": {"HR": hr5, "NDCG": 0.0, "DivRatio": div1, "ORRatio": or1, "MGU": 0.01}}
        write_json(m, r.metrics_path(method))
        write_json({"method": method, "final_stage": method}, r.folder / "FINISHED")

    for seed in (0, 1):
        run("sft", seed, 0.1, 0.3, 0.015)
        run("sprec", seed, 0.2 + seed / 10, 0.1, 0.016)
    assert main(["results", str(tmp_path), "--group", "ml-1m-tiny"]) == 0
    out = capsys.readouterr().out
    assert "ml-1m, tiny profile" in out and "0.2500 ± 0.0707" in out  # sprec DivRatio@1 over seeds 0.2, 0.3
    assert "reproduced: (b) SPRec" in out and "pending: (a) DPO" in out
    with pytest.raises(SystemExit, match="no finished runs under"):
        main(["results", str(tmp_path / "nothing")])


def test_negatives_popularity_by_brute_force(tmp_path):
    from sprec_lib.data.synthetic import make_synthetic

    ds = make_synthetic(n_items=20, sizes=(200, 10, 10), seed=7)
    counts = {i: sum(s.target == i for s in ds.train) for i in ds.catalogue.id_of.values()}
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    title = {i: t for t, i in ds.catalogue.id_of.items()}
    popular, tail = title[ranked[0]], title[ranked[-1]]
    run = Run(tmp_path / "sprec-seed0", run_config("tiny", dataset="/x/syn", method="sprec"))
    (run.folder / "negatives").mkdir()
    pd.DataFrame({"positive": [popular, tail, tail, tail], "generated": [[popular]] * 4,
                  "negatives": [[popular], [popular], ["not a title"], [tail]],
                  "source": ["self", "self", "self", "random"], "in_catalogue": [[True]] * 4}
                 ).to_parquet(run.negatives_path("it1"))
    table = negatives_popularity(run, ds).set_index("kind")
    assert table.loc["positive", "head_share"] == pytest.approx(0.25)  # 1 of 4 positives in the head
    assert table.loc["self", "titles"] == 2 and table.loc["self", "head_share"] == 1.0  # "not a title" left out
    assert table.loc["self", "distinct"] == 0.5 and table.loc["random", "head_share"] == 0.0


def test_claims_on_no_runs_are_pending():
    checks = claim_checks(pd.DataFrame())
    assert checks["holds"].isna().all() and set(verdicts(checks)) == {"pending"}


def test_table_means():
    rows = rows_frame({("sft", 0): {"HR@5": 0.1}, ("sft", 1): {"HR@5": 0.3}, ("sprec", 0): {"HR@5": 0.5}})
    assert table_means(summary_table(rows, columns=["HR@5"]), columns=["HR@5"]) == {
        "sft": {"HR@5": pytest.approx(0.2)}, "sprec": {"HR@5": 0.5}}


def sweep_frame(points):
    """Rows of a sweep: {(seed, ratio): (DivRatio@1, ORRatio@1)}."""
    return pd.DataFrame([{"seed": seed, "random_ratio": r, "DivRatio@1": div, "ORRatio@1": orr}
                         for (seed, r), (div, orr) in points.items()])


def test_trend_checks_slopes_by_hand():
    # Seed 0: DivRatio = 0.3 - 0.1 r exactly (slope -0.1); ORRatio 0.2, 0.1, 0.3 at r = 0, 0.5, 1:
    # slope = sum((r - 0.5)(y - 0.2)) / sum((r - 0.5)^2) = (-0.5 * 0 + 0 * -0.1 + 0.5 * 0.1) / 0.5 = 0.1.
    one = sweep_frame({(0, 0.0): (0.30, 0.2), (0, 0.5): (0.25, 0.1), (0, 1.0): (0.20, 0.3)})
    checks = trend_checks(one, "random_ratio", [0.0, 0.5, 1.0]).set_index("metric")
    assert set(checks["method"]) == {"slope over random_ratio"} and (checks["seeds"] == 1).all()
    assert checks.loc["DivRatio@1", "difference"] == "-0.1000" and checks.loc["ORRatio@1", "difference"] == "+0.1000"
    assert checks["holds"].tolist() == [True, True]  # not monotone in ORRatio, but its slope is up
    assert verdicts(checks.reset_index()).tolist() == ["reproduced (1 seed)"]
    # A second seed whose DivRatio rises (slope +0.2): the direction no longer holds in every seed.
    two = pd.concat([one, sweep_frame({(1, 0.0): (0.1, 0.2), (1, 0.5): (0.2, 0.25), (1, 1.0): (0.3, 0.3)})])
    checks = trend_checks(two, "random_ratio", [0.0, 0.5, 1.0]).set_index("metric")
    assert checks.loc["DivRatio@1", "difference"] == "+0.0500 ± 0.2121"  # mean(-0.1, 0.2), std 0.3 / sqrt 2
    assert checks["holds"].tolist() == [False, True]
    assert verdicts(checks.reset_index()).tolist() == ["not reproduced"]


def test_trend_checks_pending_until_a_seed_is_complete():
    partial = sweep_frame({(0, 0.0): (0.3, 0.2), (0, 1.0): (0.2, 0.3), (1, 0.5): (0.2, 0.3)})
    checks = trend_checks(partial, "random_ratio", [0.0, 0.5, 1.0])
    assert checks["holds"].isna().all() and verdicts(checks).tolist() == ["pending"]
    assert verdicts(trend_checks(pd.DataFrame(), "n_negatives", [1, 2])).tolist() == ["pending"]
    # Only the complete seed counts; a setting outside the sweep is left out of the slope.
    extra = pd.concat([partial, sweep_frame({(0, 0.5): (0.25, 0.1), (0, 2.0): (9.0, 9.0)})])
    checks = trend_checks(extra, "random_ratio", [0.0, 0.5, 1.0]).set_index("metric")
    assert (checks["seeds"] == 1).all() and checks.loc["DivRatio@1", "difference"] == "-0.1000"


def test_sweep_rows_reads_the_setting_from_the_variant(tmp_path):
    pairs = []
    for variant, hr in [("n1024", 0.1), ("ratio1-n1024", 0.4)]:
        run = Run(tmp_path / f"sprec-{variant}-seed0", run_config("tiny", dataset="/x/ml-1m", method="sprec"))
        for it in range(1, 4):
            write_json({"stage": f"it{it}-dpo", "rows": 10, "valid_ratio": 1.0, "@5": {"HR": hr * it}}, run.metrics_path(f"it{it}"))
        pairs.append((RunSpec("/x/ml-1m", "sprec", variant=variant), run))
    rows = sweep_rows(pairs, "random_ratio", {"n1024": 0.0, "ratio1-n1024": 1.0}, last=2)
    # The mean of iterations 2 and 3: 2.5 * hr.
    assert rows["random_ratio"].tolist() == [0.0, 1.0] and rows["HR@5"].tolist() == pytest.approx([0.25, 1.0])
    assert rows["label"].tolist() == ["sprec-n1024", "sprec-ratio1-n1024"]
