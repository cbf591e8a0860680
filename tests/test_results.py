"""Runs -> tables: the mean and std over seeds worked out by hand on fake run folders (the claims'
verdicts and the paper's numbers: ``test_claims.py``)."""

import json

import numpy as np
import pandas as pd
import pytest

from sprec_lib.config import run_config
from sprec_lib.experiments import RunSpec
from sprec_lib.results import (ANSWER_MODES, alternation, answer_modes, answer_modes_table, favourite_answers, alternation_summary, step_changes, step_curves, finished_runs, relabel_run, format_mean_std, genre_gu, iteration_curves, last_iterations_mean,
                               negatives_popularity, paired_differences, run_rows, summary_table, sweep_rows, table_means)
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


def test_alternation_counts_turns_and_the_phases_by_hand():
    # seed 0 swings: 0, 1, 0.5, 2, 1, 3 -> steps +1, -0.5, +1.5, -1, +2: 4 turns of 4;
    # odd iterations 1, 3, 5: (1 + 2 + 3) / 3 = 2; even 2, 4: (0.5 + 1) / 2 = 0.75.
    # seed 1 rises, with one flat step: 0, 1, 1, 2 -> steps +1, 0, +1: no turn (a zero step turns nothing).
    curves = pd.DataFrame({"label": ["sprec"] * 10, "seed": [0] * 6 + [1] * 4,
                           "iteration": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
                           "DivRatio@1": [0, 1, 0.5, 2, 1, 3, 0, 1, 1, 2]})
    t = alternation(curves, ["DivRatio@1", "absent"]).set_index("seed")
    assert list(t["metric"]) == ["DivRatio@1", "DivRatio@1"]
    assert (t.loc[0, "iterations"], t.loc[0, "turns"], t.loc[0, "possible"]) == (5, 4, 4)
    assert t.loc[0, "odd_mean"] == pytest.approx(2.0) and t.loc[0, "even_mean"] == pytest.approx(0.75)
    assert (t.loc[0, "before_last"], t.loc[0, "last"]) == (1, 3)
    assert (t.loc[1, "iterations"], t.loc[1, "turns"], t.loc[1, "possible"]) == (3, 0, 2)
    assert t.loc[1, "odd_mean"] == pytest.approx(1.5) and t.loc[1, "even_mean"] == pytest.approx(1.0)
    # Pooled over the two runs: 4 + 0 turns of 4 + 2 chances; the phase means and last values averaged.
    pooled = alternation_summary(alternation(curves, ["DivRatio@1"])).loc["DivRatio@1"]
    assert (pooled["runs"], pooled["turns"], pooled["possible"]) == (2, 4, 6)
    assert pooled["odd_mean"] == pytest.approx((2.0 + 1.5) / 2) and pooled["even_mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert (pooled["before_last"], pooled["last"]) == (pytest.approx((1 + 1) / 2), pytest.approx((3 + 2) / 2))


def test_step_curves_and_what_each_step_did_by_hand(tmp_path):
    """A run evaluated after each SFT step: DivRatio@1 0.1 (SFT), 0.12 after it1's SFT step, 0.3 at
    it1's end, 0.15 after it2's SFT step, 0.2 at it2's end. So it1: SFT step +0.02, DPO step +0.18;
    it2: SFT step −0.15, DPO step +0.05. A run without SFT-step evaluations is left out."""
    def metrics(div):
        return {"valid_ratio": 1.0, "rows": 10, "@1": {"DivRatio": div}}

    run = Run(tmp_path / "sprec-seed1", run_config("tiny", dataset="/x/syn", method="sprec", seed=1))
    for label, stage, div in [("sft", "sft", 0.1), ("it1-sft", "it1-sft", 0.12), ("it1", "it1-dpo", 0.3),
                              ("it2-sft", "it2-sft", 0.15), ("it2", "it2-dpo", 0.2), ("it2-dpo-constrained-5", "it2-dpo", 0.9)]:
        run.record_metrics(label, {**metrics(div), "stage": stage})
    plain = Run(tmp_path / "sprec-seed2", run_config("tiny", dataset="/x/syn", method="sprec", seed=2))
    plain.record_metrics("sft", {**metrics(0.1), "stage": "sft"})
    plain.record_metrics("it1", {**metrics(0.2), "stage": "it1-dpo"})
    curves = step_curves([run, plain])
    assert list(curves["iteration"]) == [0, 0.5, 1, 1.5, 2] and set(curves["seed"]) == {1}
    assert list(curves["step"]) == ["start", "sft step", "end", "sft step", "end"]
    changes = step_changes(curves, ["DivRatio@1", "absent"]).set_index("iteration")
    assert list(changes["metric"]) == ["DivRatio@1"] * 2
    assert changes.loc[1, "sft_step"] == pytest.approx(0.02) and changes.loc[1, "dpo_step"] == pytest.approx(0.18)
    assert changes.loc[2, "sft_step"] == pytest.approx(-0.15) and changes.loc[2, "dpo_step"] == pytest.approx(0.05)
    assert step_curves([plain]).empty and step_changes(step_curves([plain]), ["DivRatio@1"]).empty


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
    # 2 of the 3 self-play negatives name a catalogue title; every positive and random one does
    assert table.loc["self", "catalogue_share"] == pytest.approx(2 / 3)
    assert table.loc["positive", "catalogue_share"] == table.loc["random", "catalogue_share"] == 1.0


def test_table_means():
    rows = rows_frame({("sft", 0): {"HR@5": 0.1}, ("sft", 1): {"HR@5": 0.3}, ("sprec", 0): {"HR@5": 0.5}})
    assert table_means(summary_table(rows, columns=["HR@5"]), columns=["HR@5"]) == {
        "sft": {"HR@5": pytest.approx(0.2)}, "sprec": {"HR@5": 0.5}}


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


def test_compute_spent_sums_log_intervals_but_not_the_gap_before_a_resume(tmp_path):
    """Minutes by hand: 10:00:00 → 10:30:00 (30), an interruption until 13:00:00 (a resume line: not
    counted), then 13:00:00 → 13:12:30 (12.5): 42.5 minutes in 2 sessions. An undated log that passes
    midnight: 23:50:00 → 00:10:00 is 20 minutes."""
    from types import SimpleNamespace

    from sprec_lib.results import compute_spent, cpus_text

    def run(name, text):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "log.txt").write_text(text)
        cfg = SimpleNamespace(dataset="/x/MovieLens", profile="tiny", seed=1, method="sprec")
        return SimpleNamespace(folder=folder, label="sprec", cfg=cfg)

    a = run("a", "2026-12-01 10:00:00 sprec on MovieLens (tiny profile, seed 1)\n"
                 "2026-12-01 10:30:00 stage pretrain: SIGTERM\n"
                 "2026-12-01 13:00:00 sprec on MovieLens (tiny profile, seed 1)\n"
                 "2026-12-01 13:00:00 stage pretrain: resuming from checkpoint-5\n"
                 "2026-12-01 13:12:30 finished: sprec, final stage it3-dpo\n")
    b = run("b", "23:50:00 sprec on MovieLens (tiny profile, seed 1)\nnot a log line\n00:10:00 finished: sprec\n")
    c = run("c", "10:00:00 sprec on MovieLens (tiny profile, seed 1)\n10:06:00 finished: sprec\n")
    write_json({"config": {"profile": "tiny", "seed": 1}, "machine": {"cpu_capability": "AVX2"}}, a.folder / "config.json")
    write_json({"config": {"profile": "tiny", "seed": 1}, "machine": {"cpu_capability": "AVX512", "cpu_model": "AMD EPYC"}},
               c.folder / "config.json")
    spent = compute_spent([a, b, c])
    assert spent["cpu"].tolist() == ["AVX2", "unrecorded", "AVX512 (AMD EPYC)"]  # b's folder has no config.json
    assert cpus_text(spent) == "1 on AVX2, 1 not recorded, 1 on AVX512 (AMD EPYC)"
    assert (spent["hours"] * 60).tolist() == pytest.approx([42.5, 20.0, 6.0])
    assert (spent["restarts"] + 1).tolist() == [2, 1, 1]  # sessions
    assert spent.loc[0, ["dataset", "profile", "label", "seed"]].tolist() == ["MovieLens", "tiny", "sprec", 1]


def test_relabel_moves_a_run_under_its_new_variant(tmp_path):
    run = Run(tmp_path / "sprec-T5-seed0", run_config("tiny", dataset="/x/ml-1m", method="sprec", seed=0),
              variant="T5")
    write_json({"@5": {"HR": 0.5}, "stage": "it5-dpo"}, run.metrics_path("it5"))
    with pytest.raises(ValueError, match="not finished"):
        relabel_run(run.folder, tmp_path / "out" / "sprec-seed0", "")
    write_json({"method": "sprec", "final_stage": "it5-dpo"}, run.folder / "FINISHED")
    with pytest.raises(ValueError, match="variant 'T3'"):  # the folder name must say the variant
        relabel_run(run.folder, tmp_path / "out" / "sprec-T3-seed0", "")
    moved = relabel_run(run.folder, tmp_path / "out" / "sprec-seed0", "")
    assert not run.folder.exists() and moved.variant == "" and moved.label == "sprec" and moved.cfg == run.cfg
    assert moved.metrics()["it5"]["@5"]["HR"] == 0.5
    assert "relabelled: sprec-T5" in (moved.folder / "log.txt").read_text()
    with pytest.raises(FileExistsError):
        relabel_run(moved.folder, moved.folder, "")
    # A run made before specs were saved (no "spec" in config.json): its folder name says its variant.
    doc = json.loads((moved.folder / "config.json").read_text())
    write_json({k: v for k, v in doc.items() if k != "spec"}, moved.folder / "config.json")
    old = relabel_run(moved.folder, tmp_path / "inv" / "sprec-T3-seed0", "T3")
    assert old.variant == "T3" and old.label == "sprec-T3" and old.cfg == run.cfg


def test_answer_modes_by_hand(tmp_path):
    """Three evaluations of 4 rows each; favourites, shares and the comeback counted by hand."""
    run = Run(tmp_path / "sprec-seed0", run_config("tiny", dataset="/x/syn", method="sprec"))
    (run.folder / "predictions").mkdir()
    answers = {
        "sft": [("A", True), ("A", True), ("B", True), (None, False)],  # favourite A, a title
        "it1": [("C (1999)", False), ("C (1999)", False), ("C (1999)", False), ("B", True)],  # A gone; C not a title
        "it2": [("A", True), ("B", True), ("B", True), ("C (1999)", False)],  # B beats A; A (two back) returns
    }
    for label, rows in answers.items():
        write_json({"stage": label, "rows": 4, "valid_ratio": 0.0}, run.metrics_path(label))
        pd.DataFrame({"title": [t for t, _ in rows], "valid": [v for _, v in rows]}).to_parquet(run.predictions_path(label))
    modes = answer_modes(run, top=1).set_index("iteration")
    assert modes["top1_share"].tolist() == [0.5, 0.75, 0.5]
    assert modes["top1_names_title"].tolist() == [True, False, True]
    assert modes["valid_ratio"].tolist() == [0.75, 0.25, 0.75]
    # top = 1: the favourite's rows against the rest (it1: the one "B" row is the rest, a title)
    assert modes.loc[1, "top_valid"] == 0.0 and modes.loc[1, "rest_valid"] == 1.0
    assert modes.loc[2, "top_valid"] == 1.0 and modes.loc[2, "rest_valid"] == pytest.approx(0.5)
    assert np.isnan(modes.loc[0, "previous_top1_share"]) and np.isnan(modes.loc[1, "earlier_top1_share"])
    assert modes.loc[1, "previous_top1_share"] == 0.0  # A, the SFT favourite, given to no row
    assert modes.loc[2, "previous_top1_share"] == 0.25 and modes.loc[2, "earlier_top1_share"] == 0.25  # C once, A once
    # top = 2 at sft: A and B hold 3 of 4 rows, all titles; the rest is the unparsed row
    wide = answer_modes(run, top=2).set_index("iteration")
    assert wide.loc[0, "top_share"] == 0.75 and wide.loc[0, "top_valid"] == 1.0 and wide.loc[0, "rest_valid"] == 0.0
    # the export keeps the table; read back without the predictions, then averaged over iterations 1..2
    answer_modes(run).to_json(run.folder / ANSWER_MODES, orient="records", indent=1)
    for path in (run.folder / "predictions").glob("*.parquet"):
        path.unlink()
    assert answer_modes(run).empty and answer_modes_table(run)["top1_share"].tolist() == [0.5, 0.75, 0.5]
    means = favourite_answers([(RunSpec("/x/syn", "sprec"), run)]).iloc[0]
    assert means["iterations"] == 2 and means["top1_share"] == pytest.approx(0.625)
    assert means["previous_top1_share"] == pytest.approx(0.125) and means["earlier_top1_share"] == pytest.approx(0.25)
