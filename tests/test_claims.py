"""The paper's claims as data, the noise rule and the paper beside ours, on cases worked out by hand."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sprec_lib import claims, plots  # noqa: E402
from sprec_lib.claims import (ABLATION_CLAIMS, ALL_CLAIMS, CLAIMS, DEGENERATE, INCONCLUSIVE,  # noqa: E402
                              Evidence, NOT_REPRODUCED, PENDING, REPRODUCED, SWEEP_CLAIMS, VERDICTS, NoiseRule, check_claims,
                              check_trends, claim_checks, paper_check, paper_numbers, paper_passes, trend_checks,
                              evidence_checks, verdict_changes, verdict_table, verdicts, with_seeds)
from sprec_lib.config import run_config  # noqa: E402
from sprec_lib.metrics import ranking_metrics  # noqa: E402
from sprec_lib.runs import Run, read_json, write_json  # noqa: E402

Z = 1.959963984540054  # the normal quantile of a 95% interval


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def rows_frame(values, dataset="d"):
    """A run_rows-shaped frame from {(label, seed): {metric: value}} on one dataset, 1,000 test rows,
    ``run`` naming the (label, seed) for the per-row data of the bootstrap tests."""
    return pd.DataFrame([{"dataset": dataset, "profile": "tiny", "method": label.split("-")[0], "label": label,
                          "seed": seed, "rows": 1000, "run": f"{label}-{seed}", **m} for (label, seed), m in values.items()])


def claim(cid):
    return next(c for c in ALL_CLAIMS.values() if c.id == cid)


def one_verdict(rows, cid, **kw):
    """The verdict and seed count of claim ``cid`` on ``rows`` (one dataset)."""
    table = verdict_table(check_claims(rows, [claim(cid)], **kw))
    assert len(table) == 1
    return table.loc[0, "verdict"], table.loc[0, "seeds"]


# -- the claims as data ------------------------------------------------------------------------


FOUR = ("sft", "dpo", "sdpo", "sprec")


@pytest.fixture(autouse=True)
def registry_of_four(monkeypatch):
    """The claims' tests are about the rules, not about which baselines have landed: the registry
    here holds the four methods the book began with (a part of an unregistered method is not ours)."""
    from sprec_lib import methods

    monkeypatch.setattr(methods, "names", lambda: FOUR)


def test_claims_are_data():
    ids = [c.id for c in ALL_CLAIMS.values()]
    assert ids == ["a1", "a2", "a3", "b", "b2", "b3", "c", "d", "e", "f", "g"]
    for c in ALL_CLAIMS.values():
        assert c.title.startswith(f"({c.id}) ") and c.section.startswith("§") and c.test and c.datasets
        assert set(c.datasets) <= set(claims.PAPER_DATASETS)
    assert {c.id: c.base for c in CLAIMS.values() if c.base != "sft"} == {"b2": "sprec"}  # SPRec vs the baselines
    assert {c.base for c in ABLATION_CLAIMS.values()} == {"sprec"}
    assert [c.setting for c in SWEEP_CLAIMS.values()] == ["random_ratio", "n_negatives"]
    # (g) is "stable accuracy": HR@5 is expected to stay, not to rise.
    assert {(p.metric, p.direction) for p in claim("g").parts} >= {("HR@5", "same")}
    with pytest.raises(ValueError, match="direction 'sideways'"):
        claims.Part("sprec", "HR@5", "sideways")


def test_a2_splits_by_dataset_and_our_runs_test_the_registered_methods_only(monkeypatch):
    """Our runs test a part only when its method is in the registry (sprec_lib.methods)."""
    from sprec_lib import methods

    a2 = claim("a2")
    on_ml = {(p.label, p.metric, p.direction) for p in a2.parts_for("MovieLens")}
    assert on_ml == {("sdpo", "DivRatio@1", "same"), ("sdpo", "ORRatio@1", "same")}  # no DMPO in the registry
    monkeypatch.setattr(methods, "names", lambda: FOUR + ("dmpo",))
    assert {(p.label, p.metric, p.direction) for p in a2.parts_for("MovieLens")} == {
        ("sdpo", "DivRatio@1", "same"), ("sdpo", "ORRatio@1", "same"), ("dmpo", "DivRatio@1", "same"),
        ("dmpo", "ORRatio@1", "same")}
    on_steam = {(p.label, p.metric, p.direction) for p in a2.parts_for("Steam", ours=False)}
    assert ("dmpo", "ORRatio@1", "down") in on_steam and ("sdpo", "DivRatio@1", "same") in on_steam


def test_the_paper_passes_its_own_claims_where_its_text_makes_them():
    for c in ALL_CLAIMS.values():
        passes = paper_passes(c)
        if c.table is None:  # theory (a1) and figures (f, g): no numbers to check
            assert passes.empty and paper_check(c).empty
            continue
        assert passes[list(c.datasets)].all(), f"({c.id}) fails on the paper's own numbers: {passes.to_dict()}"
    # (e) is not claimed on Steam, where the paper's SPRec-RN has a lower ORRatio@1 than SPRec.
    e = paper_check(claim("e")).set_index(["dataset", "metric"])
    assert not e.loc[("Steam", "ORRatio@1"), "claimed"] and not e.loc[("Steam", "ORRatio@1"), "passes"]
    assert e.loc[("Steam", "ORRatio@1"), "difference"] == pytest.approx(0.2530 - 0.2560)


def test_paper_check_by_hand():
    a2 = paper_check(claim("a2")).set_index(["dataset", "method", "metric"])
    # MovieLens S-DPO ORRatio@1 0.2449 against BIGRec 0.2561: -0.0112; the band on 1,000 rows is
    # z * sqrt(.2561 * .7439 / 1000 + .2449 * .7551 / 1000) = 1.96 * 0.019376 = 0.037977.
    ml = a2.loc[("MovieLens", "sdpo", "ORRatio@1")]
    assert ml["difference"] == pytest.approx(-0.0112) and ml["passes"]
    assert claims.difference_band("ORRatio@1", 0.2449, 0.2561, 1000) == pytest.approx(0.037977, abs=1e-6)
    # CDs DMPO ORRatio@1 0.1740 against 0.2597: down, a plain sign test.
    assert a2.loc[("CDs_and_Vinyl", "dmpo", "ORRatio@1"), "expected"] == "down"
    assert a2.loc[("CDs_and_Vinyl", "dmpo", "ORRatio@1"), "passes"]
    summary = claims.paper_summary().set_index("id")
    assert summary.loc["e", "paper fails on"] == "Steam" and summary.loc["a1", "paper passes on"] == "not checkable"


def test_paper_numbers_file(tmp_path):
    committed = paper_numbers()
    assert list(committed.columns) == claims.PAPER_COLUMNS and len(committed) == 383
    assert set(committed["method"]) == {"sasrec", "sft", "rw", "d3", "dmpo", "sdpo", "rosepo", "sprec",
                                        "sprec-nosft", "sprec-nodpo", "sprec-rn"}
    left_out = committed[(committed["dataset"] == "CDs_and_Vinyl") & (committed["method"] == "rosepo")]
    assert "DivRatio@5" not in set(left_out["metric"]) and len(left_out) == 7
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


# -- noise ---------------------------------------------------------------------------------------


def test_single_run_bounds_by_hand():
    assert claims.single_run_se("HR@5", 0.016, 1000) == pytest.approx(0.0039679, abs=1e-7)  # sqrt(.016 * .984 / 1000)
    assert claims.single_run_se("DivRatio@1", 0.1, 1000) == pytest.approx(0.01)  # sqrt(.1 / 1000)
    assert claims.single_run_se("ORRatio@5", 0.5, 100) == pytest.approx(0.05)  # sqrt(.25 / 100)
    assert claims.single_run_se("MGU@1", 0.02, 1000) is None
    # HR@5 0.013 against 0.016: z * sqrt(.013 * .987 / 1000 + .016 * .984 / 1000) = 1.96 * 0.0053457
    assert claims.difference_band("HR@5", 0.013, 0.016, 1000) == pytest.approx(Z * 0.0053457, abs=1e-6)
    assert math.isinf(claims.difference_band("MGU@1", 0.01, 0.02, 1000))
    wider = NoiseRule(run_std={"HR@5": 0.002})  # plus z * sqrt(2) * 0.002
    assert claims.difference_band("HR@5", 0.013, 0.016, 1000, wider) == pytest.approx(Z * (0.0053457 + 0.0028284), abs=1e-6)


def row_data(hit_rows, n=1000, top1=None):
    """Per-row data: row i's target is item i; rows in ``hit_rows`` rank it first, the others
    recommend items 10000+ (misses). ``top1``: the first item of each row instead of the target."""
    topk = []
    for i in range(n):
        first = i if i in hit_rows else (top1[i] if top1 is not None else 10000)
        topk.append([first, 20001, 20002, 20003, 20004])
    return {"target": list(range(n)), "topk": topk}


def test_bootstrap_statistic_matches_ranking_metrics():
    data = row_data(set(range(30)), n=200, top1=[i % 7 + 10000 for i in range(200)])
    data["target"][5] = None  # one row without a catalogue target
    ones = np.ones((1, 200))  # every row once: the value itself
    for k in (1, 5):
        expected = ranking_metrics(data["topk"], data["target"], [[]] * 200, {}, [], k)
        for name in ("HR", "NDCG", "DivRatio", "ORRatio"):
            got = claims._statistic(f"{name}@{k}", data)(ones)[0]
            assert got == pytest.approx(expected[name]), f"{name}@{k}"


def test_mgu_statistic_matches_ranking_metrics_and_counts_a_drawn_row_twice():
    from sprec_lib.data.synthetic import make_synthetic

    ds = make_synthetic(n_items=40, sizes=(8, 4, 30), n_genres=4, seed=3)
    rows, genres, item_genres = ds.test, ds.genres, ds.item_genres()
    context = claims.genre_context(ds, "test")
    rng = np.random.default_rng(0)
    topk = [[int(i) for i in rng.choice(40, 5, replace=False)] for _ in rows]
    targets = [s.target for s in rows]
    targets[2] = None  # a row without a catalogue target: its recommendations leave GP, its history stays in GH
    context["valid"][2], context["targets"][2] = 0.0, None
    data = {"target": targets, "topk": topk, "genre_context": context}
    histories = [list(s.history) for s in rows]
    n = len(rows)
    assert claims.has_row_statistic("MGU@1", data) and not claims.has_row_statistic("MGU@1", {"target": targets, "topk": topk})
    for k in (1, 5):
        stat = claims._statistic(f"MGU@{k}", data)
        assert stat(np.ones((1, n)))[0] == pytest.approx(ranking_metrics(topk, targets, histories, item_genres, genres, k)["MGU"])
        # A resample that draws row 0 three times, row 2 twice and leaves out rows 1 and 4 is the
        # metric of that list of rows, written out (brute force).
        w = np.ones(n)
        w[0], w[2], w[1], w[4] = 3, 2, 0, 0
        picked = [i for i in range(n) for _ in range(int(w[i]))]
        expected = ranking_metrics([topk[i] for i in picked], [targets[i] for i in picked],
                                   [histories[i] for i in picked], item_genres, genres, k)["MGU"]
        assert stat(w[None, :])[0] == pytest.approx(expected)
    # Rows that are not the dataset's: a clear error, not a quiet interval.
    other = {**data, "target": [t + 1 if t is not None else None for t in targets]}
    with pytest.raises(ValueError, match="not the first rows"):
        claims.has_row_statistic("MGU@1", other)
    # A dataset without genres: MGU is not applicable, and has no row statistic.
    ds.genres.clear()
    assert claims.genre_context(ds) is None


def test_paired_bootstrap_on_hits():
    # HR@5 0.016 (rows 0-15) against 0.013 (rows 10-22): -0.003, 17 rows differ. The interval
    # contains 0: inconclusive, never "holds".
    base, method = row_data(set(range(16))), row_data(set(range(10, 23)))
    low, high = claims.paired_bootstrap("HR@5", method, base)
    assert low < -0.003 < high and low < 0 < high
    assert claims.paired_bootstrap("HR@5", method, base) == (low, high)  # fixed RNG seed
    # 40 hits against 20 of them: -0.02 on 20 rows; paired SE sqrt(.02 / 1000) = 0.0045: clear.
    low, high = claims.paired_bootstrap("HR@5", row_data(set(range(20))), row_data(set(range(40))))
    assert high < 0 and low == pytest.approx(-0.02 - Z * 0.00443, abs=0.003)
    with pytest.raises(ValueError, match="same test rows"):
        claims.paired_bootstrap("HR@5", row_data(set(), n=10), row_data(set(), n=11))
    # Exports keep a target only where the run hit it (-1 elsewhere, results.row_data_for_export):
    # runs that hit different rows are still on the same rows; a row whose known targets differ is not.
    hit_a = {"target": [5, -1, -1], "topk": [[5, 1], [2, 3], [4, 6]]}
    hit_b = {"target": [-1, 7, -1], "topk": [[1, 2], [7, 3], [4, 6]]}
    low, high = claims.paired_bootstrap("HR@1", hit_a, hit_b)
    assert low <= 0 <= high  # one hit each, on different rows
    with pytest.raises(ValueError, match="same test rows"):
        claims.paired_bootstrap("HR@1", hit_a, {"target": [9, -1, -1], "topk": [[9, 1], [2, 3], [4, 6]]})


def test_mean_paired_bootstrap_shares_the_rows_across_seeds():
    base, method = row_data(set(range(16))), row_data(set(range(10, 23)))
    single = claims.paired_bootstrap("HR@5", method, base)
    # One pair is paired_bootstrap; three copies of it average to itself on every resample.
    assert claims.mean_paired_bootstrap("HR@5", [(method, base)]) == single
    assert claims.mean_paired_bootstrap("HR@5", [(method, base)] * 3) == pytest.approx(single, abs=1e-12)
    with pytest.raises(ValueError, match="same test rows"):
        claims.mean_paired_bootstrap("HR@5", [(method, base), (row_data(set(), n=10), base)])


def test_bootstrap_interval_sits_at_the_observed_divratio():
    # Base: every row's top-1 is item 10000 (DivRatio@1 0.001); method: every row its own item (1.0).
    # Observed difference 0.999. A resample of 1,000 rows with replacement holds about 632 distinct
    # rows, so the resampled difference sits near 0.631, with a std of about
    # sqrt(1000 e^-1 (1 - 2 e^-1)) / 1000 = 0.00986 (distinct draws). The interval: 0.999 +- 1.96 x 0.00986.
    method = row_data(set(range(1000)))
    base = row_data(set(), top1=[10000] * 1000)
    low, high = claims.paired_bootstrap("DivRatio@1", method, base)
    assert low < 0.999 < high
    assert high - low == pytest.approx(2 * Z * 0.00986, abs=0.006)
    assert (low + high) / 2 == pytest.approx(0.999, abs=0.004)


def hr_seeds(lost_gained, base_hits=40):
    """Three seeds of SFT (rows 0..base_hits-1 hit) and SPRec: per seed, SPRec loses rows 0..lost-1
    and gains rows 500..500+gained-1; rows frame, per-row data."""
    values, data = {}, {}
    for seed, (lost, gained) in enumerate(lost_gained):
        sprec = set(range(lost, base_hits)) | set(range(500, 500 + gained))
        values[("sft", seed)] = {"HR@5": base_hits / 1000, "DivRatio@1": 0.1, "ORRatio@1": 0.5}
        values[("sprec", seed)] = {"HR@5": len(sprec) / 1000, "DivRatio@1": 0.3, "ORRatio@1": 0.2}
        data[f"sft-{seed}"], data[f"sprec-{seed}"] = row_data(set(range(base_hits))), row_data(sprec)
    return rows_frame(values, dataset="Goodreads"), data


def test_three_seeds_also_need_the_rows_clear():
    # The blind spot of a seeds-only rule (MovieLens, 2026-12-04): SPRec - SFT HR@5 -0.004, -0.007,
    # -0.002. Every seed lost rows 0-9 and gained 6, 3, 8 of rows 500-507: per row, the mean over
    # seeds is -1 (rows 0-9), +1 (500-502), 2/3 (503-505), 1/3 (506-507), 0 elsewhere; mean
    # -0.004333, its SE over 1,000 rows sqrt((14.556 / 1000 - 0.004333^2) / 1000) = 0.003813, so the
    # rows' interval is about -0.0043 +- 0.0075: it holds 0. The seeds rule alone is clear (every
    # seed down, the mean 0.0043 past the seeds' std 0.0025): "without losing HR@5" would fail.
    rows, data = hr_seeds([(10, 6), (10, 3), (10, 8)])
    part = check_claims(rows, [claim("b")], row_data=data.get).set_index("metric").loc["HR@5"]
    assert part["difference"] == pytest.approx(-0.004333, abs=1e-6) and part["spread"] == pytest.approx(0.0025166, abs=1e-6)
    assert part["rule"] == "seeds+bootstrap" and part["outcome"] == "holds"  # "not down": not refuted
    se = math.sqrt((14.5556 / 1000 - 0.004333 ** 2) / 1000)
    assert part["low"] == pytest.approx(-0.004333 - Z * se, abs=0.0015)
    assert part["high"] == pytest.approx(-0.004333 + Z * se, abs=0.0015)
    assert claims.seeds_evidence(rows[rows.label == "sprec"].set_index("seed")["HR@5"]
                                 - rows[rows.label == "sft"].set_index("seed")["HR@5"])["evidence"] == -1
    # Losing 28, 30 and 32 of the 40 hits (nothing gained): -0.030, clear of the rows too
    # (per row -1 on rows 0-27, -2/3 on 28-29, -1/3 on 30-31: SE about 0.0053).
    rows, data = hr_seeds([(28, 0), (30, 0), (32, 0)])
    part = check_claims(rows, [claim("b")], row_data=data.get).set_index("metric").loc["HR@5"]
    assert part["outcome"] == "contrary" and part["high"] < 0
    se = math.sqrt(((28 + 2 * 4 / 9 + 2 / 9) / 1000 - 0.03 ** 2) / 1000)
    assert part["high"] == pytest.approx(-0.03 + Z * se, abs=0.0015)


def test_minus_0003_hr_on_1000_rows_with_one_seed_is_inconclusive():
    rows = rows_frame({("sprec", 0): {"HR@5": 0.016}, ("sprec-nosft", 0): {"HR@5": 0.013}}, dataset="MovieLens")
    # Without per-row data: the bound, -0.003 +- 0.0105.
    checks = check_claims(rows, [claim("c")], row_data=lambda folder: None)
    assert checks.loc[0, "rule"] == "bound" and checks.loc[0, "outcome"] == "within noise"
    assert checks.loc[0, "low"] == pytest.approx(-0.003 - Z * 0.0053457, abs=1e-6)
    assert one_verdict(rows, "c", row_data=lambda folder: None) == (INCONCLUSIVE, 1)
    # With per-row data: the paired bootstrap, the same verdict.
    data = {"sprec-0": row_data(set(range(16))), "sprec-nosft-0": row_data(set(range(10, 23)))}
    checks = check_claims(rows, [claim("c")], row_data=data.get)
    assert checks.loc[0, "rule"] == "bootstrap" and checks.loc[0, "outcome"] == "within noise"
    assert one_verdict(rows, "c", row_data=data.get) == (INCONCLUSIVE, 1)


# -- verdicts ------------------------------------------------------------------------------------

ABLATION_BASE = {"HR@5": 0.02, "DivRatio@1": 0.3, "ORRatio@1": 0.2}


def ablation_rows(nodpo_by_seed):
    """SPRec and SPRec-noDPO on three seeds; ``nodpo_by_seed``: (DivRatio@1, ORRatio@1) per seed."""
    values = {("sprec", s): ABLATION_BASE for s in range(3)}
    values.update({("sprec-nodpo", s): {**ABLATION_BASE, "DivRatio@1": d, "ORRatio@1": o}
                   for s, (d, o) in enumerate(nodpo_by_seed)})
    return rows_frame(values, dataset="MovieLens")


def test_three_seeds_reproduced_not_reproduced_inconclusive():
    # DivRatio@1 -0.09, -0.10, -0.11 (mean -0.10, std 0.01); ORRatio@1 +0.10, +0.12, +0.14: clear.
    clear = ablation_rows([(0.21, 0.30), (0.20, 0.32), (0.19, 0.34)])
    checks = check_claims(clear, [claim("d")]).set_index("metric")
    assert checks.loc["DivRatio@1", "difference"] == pytest.approx(-0.10)
    assert checks.loc["DivRatio@1", "spread"] == pytest.approx(0.01)
    # No per-row data: the rows' noise of the mean is the bound at the means (0.2 vs 0.3), not
    # widened by the training noise: -0.10 +- 1.96 sqrt(.2 / 1000 + .3 / 1000) = +-0.0438, wider than +-0.01.
    assert checks.loc["DivRatio@1", "rule"] == "seeds+bound"
    assert checks.loc["DivRatio@1", "high"] == pytest.approx(-0.10 + Z * math.sqrt(0.5 / 1000))
    assert one_verdict(clear, "d") == (REPRODUCED, 3)
    # The opposite, as clearly: not reproduced.
    assert one_verdict(ablation_rows([(0.39, 0.1), (0.40, 0.08), (0.41, 0.06)]), "d") == (NOT_REPRODUCED, 3)
    # DivRatio@1 -0.001, -0.002, -0.05: every seed down, but the mean 0.0177 is within the std 0.0280.
    mixed = ablation_rows([(0.299, 0.30), (0.298, 0.32), (0.25, 0.34)])
    part = check_claims(mixed, [claim("d")]).set_index("metric").loc["DivRatio@1"]
    assert part["spread"] == pytest.approx(0.027999, abs=1e-5) and part["outcome"] == "within noise"
    assert one_verdict(mixed, "d") == (INCONCLUSIVE, 3)


def test_seed_spread_by_group_by_hand():
    """Two groups: sft HR@5 0.01, 0.03 (squares about the mean: 2 x 0.0001) and sprec 0.02, 0.02,
    0.08 (0.0004 + 0.0004 + 0.0016 = 0.0024); pooled: sqrt(0.0026 / 3). One seed of dpo: no group."""
    rows = rows_frame({("sft", 0): {"HR@5": 0.01}, ("sft", 1): {"HR@5": 0.03}, ("dpo", 0): {"HR@5": 0.5},
                       ("sprec", 0): {"HR@5": 0.02}, ("sprec", 1): {"HR@5": 0.02}, ("sprec", 2): {"HR@5": 0.08}})
    by = claims.seed_spread_by_group(rows, ["HR@5"]).set_index("label")
    assert list(by.index) == ["sft", "sprec"] and list(by["seeds"]) == [2, 3]
    assert by.loc["sft", "HR@5"] == pytest.approx(math.sqrt(0.0002)) and by.loc["sprec", "HR@5"] == pytest.approx(math.sqrt(0.0012))
    assert by.loc["sft", "HR@5 share"] == pytest.approx(0.0002 / 0.0026)
    assert by.loc["sprec", "HR@5 share"] == pytest.approx(0.0024 / 0.0026)
    assert claims.seed_spread(rows, ["HR@5"])["HR@5"] == pytest.approx(math.sqrt(0.0026 / 3))


def test_verdict_changes_set_seed_0_alone_beside_three_seeds():
    """Claim (d) on MovieLens, rows' noise by the bound (no per-row data). Seed 0 alone: DivRatio@1
    -0.10 and ORRatio@1 +0.12, each clear of its +-0.044 band: reproduced. Three seeds: DivRatio@1
    -0.10, -0.001, 0.00 (mean -0.0337, std 0.0575): within the seeds' spread, inconclusive. Claims
    (c) and (e) have no runs at any seed (pending, 0 seeds both ways): not listed."""
    rows = ablation_rows([(0.20, 0.32), (0.299, 0.30), (0.30, 0.21)])
    ev = Evidence(table1=pd.DataFrame(), ablations=rows, sweeps={}, datasets=["MovieLens"], sweep_datasets=[],
                  profile="tiny", sweep_values={}, asked=[], missing=[])
    checks = evidence_checks(ev, row_data=lambda folder: None)
    changes = verdict_changes(ev, checks, row_data=lambda folder: None)
    assert list(changes["id"]) == ["d"]
    row = changes.iloc[0]
    assert (row["alone"], row["seeds_alone"], row["verdict"], row["seeds"], row["changed"]) == (
        REPRODUCED, 1, INCONCLUSIVE, 3, True)
    assert set(with_seeds(ev, [0]).ablations["seed"]) == {0} and len(with_seeds(ev, [0]).ablations) == 2
    # The clear case keeps its verdict: listed, not changed.
    steady = ablation_rows([(0.21, 0.30), (0.20, 0.32), (0.19, 0.34)])
    ev = Evidence(table1=pd.DataFrame(), ablations=steady, sweeps={}, datasets=["MovieLens"], sweep_datasets=[],
                  profile="tiny", sweep_values={}, asked=[], missing=[])
    changes = verdict_changes(ev, evidence_checks(ev, row_data=lambda folder: None), row_data=lambda folder: None)
    assert changes[["alone", "verdict", "changed"]].values.tolist() == [[REPRODUCED, REPRODUCED, False]]


def test_two_seeds_need_every_interval_clear():
    base = {"DivRatio@1": 0.1, "ORRatio@1": 0.3}
    # Seed 0's ORRatio@1 change (-0.02) is within its band (1.96 * 0.0205 = 0.040); seed 1's is clear.
    rows = rows_frame({("sft", 0): base, ("sft", 1): base, ("sdpo", 0): {**base, "ORRatio@1": 0.28},
                       ("sdpo", 1): {**base, "ORRatio@1": 0.2}}, dataset="Steam")
    part = check_claims(rows, [claim("a2")], row_data=lambda f: None).set_index(["method", "metric"]).loc[("sdpo", "ORRatio@1")]
    assert part["seeds"] == 2 and part["outcome"] == "within noise" and part["high"] > 0


def test_pending_and_degenerate_baseline():
    rows = rows_frame({("sft", 0): {"HR@5": 0.01, "DivRatio@1": 0.1, "ORRatio@1": 0.3}}, dataset="MovieLens")
    assert one_verdict(rows, "b") == (PENDING, 0)
    collapsed = {"HR@5": 0.0, "DivRatio@1": 0.01, "DivRatio@5": 0.01, "ORRatio@1": 0.95, "ORRatio@5": 0.5}
    rows = rows_frame({("sft", 0): collapsed, ("sprec", 0): {**collapsed, "DivRatio@1": 0.2, "ORRatio@1": 0.5}},
                      dataset="CDs_and_Vinyl")
    assert one_verdict(rows, "b") == (DEGENERATE, 1)
    assert one_verdict(rows, "b", rule=NoiseRule(collapsed_or=0.99))[0] != DEGENERATE  # a threshold, a parameter
    empty = claim_checks(pd.DataFrame())
    assert (empty["outcome"] == "missing").all() and set(verdicts(empty)) == {PENDING}


def test_every_verdict_word_is_covered():
    words = set()
    for rows, cid in [(ablation_rows([(0.21, 0.30), (0.20, 0.32), (0.19, 0.34)]), "d"),
                      (ablation_rows([(0.39, 0.1), (0.40, 0.08), (0.41, 0.06)]), "d"),
                      (ablation_rows([(0.299, 0.30), (0.298, 0.32), (0.25, 0.34)]), "d"),
                      (ablation_rows([]), "d"),
                      (rows_frame({("sft", 0): {"HR@5": 0.0, "ORRatio@1": 0.95}}, "Steam"), "a1")]:
        words.add(one_verdict(rows, cid)[0])
    assert words == set(VERDICTS)


def test_not_down_and_same_parts():
    base = {"DivRatio@1": 0.1, "DivRatio@5": 0.1, "ORRatio@1": 0.5, "ORRatio@5": 0.3, "HR@5": 0.016}
    rows = rows_frame({("sft", 0): base, ("sprec", 0): {"DivRatio@1": 0.3, "DivRatio@5": 0.3, "ORRatio@1": 0.2,
                                                        "ORRatio@5": 0.1, "HR@5": 0.013}}, dataset="Goodreads")
    # HR@5 -0.003 is within the noise: "without losing HR@5" is not refuted, (b) is reproduced.
    assert one_verdict(rows, "b", row_data=lambda f: None) == (REPRODUCED, 1)
    rows.loc[rows["label"] == "sprec", "HR@5"] = 0.002  # -0.014: clearly lost
    assert one_verdict(rows, "b", row_data=lambda f: None) == (NOT_REPRODUCED, 1)
    # (a2) on Goodreads: S-DPO's DivRatio@1 +0.1 is a clear move, not "barely".
    rows = rows_frame({("sft", 0): base, ("sdpo", 0): {**base, "DivRatio@1": 0.2}}, dataset="Goodreads")
    assert one_verdict(rows, "a2", row_data=lambda f: None) == (NOT_REPRODUCED, 1)
    rows.loc[rows["label"] == "sdpo", "DivRatio@1"] = 0.11
    assert one_verdict(rows, "a2", row_data=lambda f: None) == (REPRODUCED, 1)


def test_claims_apply_where_the_paper_makes_them():
    rows = rows_frame({("sprec", 0): ABLATION_BASE, ("sprec-rn", 0): ABLATION_BASE}, dataset="Steam")
    assert check_claims(rows, [claim("e")]).empty  # (e) is not claimed on Steam
    ml1m = rows.assign(dataset="ml-1m")  # held to MovieLens's statements
    assert list(check_claims(ml1m, [claim("e")])["metric"]) == ["DivRatio@1", "ORRatio@1", "MGU@1"]


def test_run_std_widens_single_seed_intervals():
    rows = rows_frame({("sprec", 0): {"HR@5": 0.03}, ("sprec-nosft", 0): {"HR@5": 0.01}}, dataset="MovieLens")
    # -0.02 against a band of 1.96 * sqrt(.03 * .97 / 1000 + .01 * .99 / 1000) = 0.0122: clear.
    assert one_verdict(rows, "c", row_data=lambda f: None)[0] == REPRODUCED
    noisy = NoiseRule(run_std={"HR@5": 0.004})  # + 1.96 * 1.414 * 0.004 = 0.0111: 0.0233 > 0.02
    assert one_verdict(rows, "c", rule=noisy, row_data=lambda f: None)[0] == INCONCLUSIVE
    spread = claims.seed_spread(rows_frame({("sft", 0): {"HR@5": 0.01}, ("sft", 1): {"HR@5": 0.03},
                                            ("dpo", 0): {"HR@5": 0.02}, ("dpo", 1): {"HR@5": 0.02}}), ["HR@5"])
    assert spread["HR@5"] == pytest.approx(math.sqrt(0.0002 / 2))  # (0.01^2 + 0.01^2 + 0 + 0) / 2 dof


def test_verdict_table_and_grid():
    rows = pd.concat([ablation_rows([(0.21, 0.30), (0.20, 0.32), (0.19, 0.34)]),
                      ablation_rows([]).assign(dataset="Goodreads")])
    table = verdict_table(check_claims(rows, ABLATION_CLAIMS))
    grid = claims.verdict_grid(table)
    assert list(grid.columns) == ["MovieLens", "Goodreads"] and list(grid.index) == list(ABLATION_CLAIMS)
    assert grid.loc[claim("d").title, "MovieLens"] == REPRODUCED and grid.loc[claim("d").title, "Goodreads"] == PENDING
    assert claims.verdict_grid(table, "seeds").loc[claim("d").title, "MovieLens"] == 3
    several = verdicts(check_claims(rows, ABLATION_CLAIMS))
    assert several.index.names == ["dataset", "claim"]


# -- trends --------------------------------------------------------------------------------------


def sweep_frame(points):
    """Rows of a sweep: {(seed, ratio): (DivRatio@1, ORRatio@1, HR@5)}, 1,000 test rows."""
    return pd.DataFrame([{"seed": seed, "random_ratio": r, "rows": 1000, "DivRatio@1": div, "ORRatio@1": orr, "HR@5": hr}
                         for (seed, r), (div, orr, hr) in points.items()])


def test_trend_with_one_seed_respects_noise():
    # DivRatio 0.30, 0.25, 0.20 over r = 0, 0.5, 1: change -0.10; band at 0.25 is
    # 1.96 * sqrt(2 * .25 / 1000) = 0.0438: clear. ORRatio 0.2, 0.1, 0.3: slope 0.1, change +0.10;
    # band 1.96 * sqrt(2 * .16 / 1000) = 0.0351: clear. HR@5 0.015, 0.015, 0.014: -0.001, within noise.
    one = sweep_frame({(0, 0.0): (0.30, 0.2, 0.015), (0, 0.5): (0.25, 0.1, 0.015), (0, 1.0): (0.20, 0.3, 0.014)})
    checks = check_trends(one, "random_ratio", [0.0, 0.5, 1.0]).set_index("metric")
    assert checks.loc["DivRatio@1", "difference"] == pytest.approx(-0.10)
    assert checks.loc["DivRatio@1", "high"] == pytest.approx(-0.10 + Z * math.sqrt(2 * 0.25 / 1000))
    assert checks.loc["ORRatio@1", "difference"] == pytest.approx(0.10) and checks.loc["ORRatio@1", "outcome"] == "holds"
    assert checks.loc["HR@5", "outcome"] == "within noise"
    assert verdicts(checks.reset_index()).tolist() == [INCONCLUSIVE]  # accuracy's decline is not shown
    # Halve the DivRatio change (-0.04 < 0.0438): within noise too.
    small = sweep_frame({(0, 0.0): (0.27, 0.2, 0.03), (0, 0.5): (0.25, 0.1, 0.02), (0, 1.0): (0.23, 0.3, 0.01)})
    assert check_trends(small, "random_ratio", [0.0, 0.5, 1.0]).set_index("metric").loc["DivRatio@1", "outcome"] == "within noise"


def test_trend_with_three_seeds_and_pending():
    def points(hr_base, hr_scale):
        out = {}
        for seed, change in enumerate([-0.10, -0.12, -0.14]):
            for r in (0.0, 1.0):
                out[(seed, r)] = (0.3 + change * r, 0.2 - change * r, hr_base + change * r * hr_scale)
        return out

    checks = check_trends(sweep_frame(points(0.1, 0.5)), "random_ratio", [0.0, 1.0]).set_index("metric")
    assert (checks["rule"] == "seeds+bound").all() and checks.loc["DivRatio@1", "spread"] == pytest.approx(0.02)
    # HR@5 -0.05, -0.06, -0.07 at a mean level of 0.07: the rows' bound 1.96 sqrt(2 x .07 x .93 / 1000) = 0.0224
    assert checks.loc["HR@5", "low"] == pytest.approx(-0.06 - Z * math.sqrt(2 * 0.07 * 0.93 / 1000))
    assert verdicts(checks.reset_index()).tolist() == [REPRODUCED]
    # HR@5 -0.010, -0.012, -0.014: every seed down and the mean 0.012 past the seeds' std 0.002, but
    # the seeds share the 1,000 test rows, whose bound at 0.024 is 1.96 sqrt(2 x .024 x .976 / 1000)
    # = 0.0134: within the noise.
    checks = check_trends(sweep_frame(points(0.03, 0.1)), "random_ratio", [0.0, 1.0]).set_index("metric")
    assert checks.loc["HR@5", "outcome"] == "within noise" and checks.loc["HR@5", "high"] > 0
    assert checks.loc["HR@5", "high"] == pytest.approx(-0.012 + Z * math.sqrt(2 * 0.024 * 0.976 / 1000))
    assert verdicts(checks.reset_index()).tolist() == [INCONCLUSIVE]
    partial = sweep_frame({(0, 0.0): (0.3, 0.2, 0.01), (1, 1.0): (0.2, 0.3, 0.01)})
    assert verdicts(trend_checks(partial, "random_ratio", [0.0, 1.0])).tolist() == [PENDING]
    assert verdicts(trend_checks(pd.DataFrame(), "n_negatives", [1, 2])).tolist() == [PENDING]


# -- compatibility, CLI, per-row data --------------------------------------------------------------


def test_compatibility_wrappers_for_one_dataset():
    checks = claims.claim_checks(ablation_rows([]), base="sprec", claims=ABLATION_CLAIMS)
    assert list(verdicts(checks)) == [PENDING] * 3 and "dataset" not in checks
    with pytest.raises(ValueError, match="against their own base"):
        claims.claim_checks(ablation_rows([]), base="sft", claims=ABLATION_CLAIMS)


def fake_run(root, label, seed, metrics, final="sft"):
    method = label.split("-")[0]
    run = Run(root / "ml-1m-tiny" / f"{label}-seed{seed}", run_config("tiny", dataset="/x/ml-1m", method=method, seed=seed))
    run.record_metrics(final, {"valid_ratio": 1.0, "rows": 1000, "stage": final, **metrics})
    run.finish(final)
    return run


def test_load_row_data(tmp_path):
    run = fake_run(tmp_path, "sft", 0, {"@5": {"HR": 0.0}})
    assert claims.load_row_data(run.folder) is None and claims.load_row_data(None) is None
    # An export keeps the ranks of the held-out items in our top-K, not the items themselves.
    predictions = pd.DataFrame({"target": [2, None, 7], "topk": [[1, 2], [3, 4], [5, 6]]})
    exported = claims.row_data_for_export(predictions)
    assert exported == {"hit_rank": [1, None, None], "topk": [[1, 2], [3, 4], [5, 6]]}
    write_json(exported, run.folder / "rows" / "sft.json")
    data = claims.load_row_data(str(run.folder))
    assert data == {"target": [2, -1, -1], "topk": [[1, 2], [3, 4], [5, 6]],
                    "eval": {"dataset": "ml-1m", "split": "test", "rows": 3}}  # which rows: for MGU's genres
    # The same metrics as from the true targets: a miss is a miss, whatever the item.
    for k in (1, 2):
        assert ranking_metrics(data["topk"], data["target"], [[]] * 3, {}, [], k)["HR"] == \
            ranking_metrics(predictions["topk"], list(predictions["target"]), [[]] * 3, {}, [], k)["HR"]


def test_an_export_keeps_whether_each_answer_named_a_title(tmp_path):
    from sprec_lib.results import export_run

    run = fake_run(tmp_path, "sft", 0, {"@5": {"HR": 0.0}})
    run.save_predictions("sft", pd.DataFrame({"target": [2, 9], "topk": [[1, 2], [3, 4]], "valid": [True, False],
                                              "title": ["a title", "no title"]}))
    local = claims.load_row_data(run.folder)
    out = export_run(run, tmp_path / "export")  # its dataset folder is not here: no answer kinds
    assert read_json(out / "rows" / "sft.json") == {"hit_rank": [1, None], "topk": [[1, 2], [3, 4]], "valid": [True, False]}
    assert local["valid"] == claims.load_row_data(out)["valid"] == [True, False]
    # With the catalogue, each answer's kind (sprec_lib.evaluation.answer_kinds): the titles stay out.
    from sprec_lib.data import Catalogue

    cat = Catalogue(titles=("Heat (1995)", "Heat (1972)", "Dune"), genres=((),) * 3)
    kept = claims.row_data_for_export(pd.DataFrame({"target": [0, 2, 1], "topk": [[0, 1], [1, 0], [2, 0]],
                                                    "valid": [True, False, False],
                                                    "title": ["Heat (1995)", "Heat (2001)", None]}), cat)
    assert kept["answer"] == ["title", "wrong year", "other"] and "title" not in kept


def test_an_export_keeps_the_row_data_of_its_final_and_its_sft_start(tmp_path):
    from sprec_lib.results import export_run

    dmpo = fake_run(tmp_path, "dmpo", 0, {"@5": {"HR": 0.0}}, final="dmpo")
    dmpo.record_metrics("sft", {"valid_ratio": 1.0, "rows": 2, "stage": "sft", "@5": {"HR": 0.5}})
    dmpo.save_predictions("dmpo", pd.DataFrame({"target": [2, 9], "topk": [[1, 2], [3, 4]]}))
    dmpo.save_predictions("sft", pd.DataFrame({"target": [2, 3], "topk": [[2, 1], [4, 5]]}))
    out = export_run(dmpo, tmp_path / "export")
    assert sorted(p.name for p in (out / "rows").iterdir()) == ["dmpo.json", "sft.json"]
    rows = lambda *label: {k: v for k, v in claims.load_row_data(out, *label).items() if k != "eval"}  # noqa: E731
    assert rows("sft") == {"target": [2, -1], "topk": [[2, 1], [4, 5]]}
    assert rows() == {"target": [2, -1], "topk": [[1, 2], [3, 4]]}


def test_a_method_meets_the_sft_model_it_started_from(tmp_path, monkeypatch):
    """With two SFT models for one seed (the committed ``sft`` run and another that a DMPO run
    reused), DMPO's difference is taken against its own start, with that start's per-row data;
    a run whose start is the ``sft`` run's model (equal metrics) meets that run, as before."""
    from sprec_lib import methods
    from sprec_lib.evaluation import flat_metrics
    from sprec_lib.results import run_rows

    monkeypatch.setattr(methods, "names", lambda: FOUR + ("dmpo",))

    def m(or1):
        return {"@1": {"HR": 0.0, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01},
                "@5": {"HR": 0.01, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01}}

    sft = fake_run(tmp_path, "sft", 0, m(0.60))
    dmpo = fake_run(tmp_path, "dmpo", 0, m(0.75), final="dmpo")
    dmpo.record_metrics("sft", {"valid_ratio": 1.0, "rows": 1000, "stage": "sft", **m(0.67)})  # another SFT model
    sdpo = fake_run(tmp_path, "sdpo", 0, m(0.64), final="sdpo")
    sdpo.record_metrics("sft", sft.metrics_of("sft"))  # the sft run's own model
    rows = run_rows([Run(r.folder) for r in (sft, dmpo, sdpo)])
    by_seed = claims._pairs(rows, "dmpo", "sft", "ORRatio@1", claims.RULE, "seed")
    own = claims._pairs(rows, "dmpo", "sft", "ORRatio@1", claims.RULE)
    assert by_seed.loc[0, "base"] == 0.60 and by_seed.loc[0, "paired"] == "seed"
    assert own.loc[0, "base"] == 0.67 and own.loc[0, "paired"] == "own start"
    assert own.loc[0, "base_run"] == (str(dmpo.folder), "sft")
    same = claims._pairs(rows, "sdpo", "sft", "ORRatio@1", claims.RULE)
    assert same.loc[0, "base"] == 0.60 and same.loc[0, "paired"] == "seed" and same.loc[0, "base_run"] == str(sft.folder)
    with pytest.raises(ValueError, match="pairing"):
        claims._pairs(rows, "dmpo", "sft", "ORRatio@1", claims.RULE, "nearest")
    # The checks carry the pairing, and the own start's row data (rows/sft.json) reach the bootstrap.
    asked = []

    def row_data(folder, label=None):
        asked.append((Path(folder).name, label))
        return None

    a2 = [c for c in CLAIMS.values() if c.id == "a2"]
    checks = check_claims(rows.assign(dataset="MovieLens"), a2, row_data=row_data)
    part = checks[(checks["method"] == "dmpo") & (checks["metric"] == "ORRatio@1")].iloc[0]
    assert part["paired"] == "own start" and math.isclose(part["difference"], 0.75 - 0.67)
    assert ("dmpo-seed0", "sft") in asked and ("dmpo-seed0", None) in asked
    assert checks[checks["method"] == "sdpo"]["paired"].eq("seed").all()
    assert flat_metrics(dmpo.metrics_of("sft"))["ORRatio@1"] == 0.67
    table = claims.starts(rows)
    assert list(table["method"]) == ["dmpo", "sdpo"] and list(table["same model"]) == ["no", "yes"]
    assert list(table["sft ORRatio@1"]) == [0.67, 0.60]
    # Against another method's start: sdpo began from the sft run's model, dmpo did not; so beside
    # dmpo, sdpo's start is another model, and dmpo (the reference) is not listed.
    beside = claims.starts(rows, reference="dmpo")
    assert list(beside["method"]) == ["sdpo"] and list(beside["same model"]) == ["no"]
    sdpo.record_metrics("sft", dmpo.metrics_of("sft"))  # now the same start as dmpo's
    beside = claims.starts(run_rows([Run(r.folder) for r in (sft, dmpo, sdpo)]), reference="dmpo")
    assert list(beside["same model"]) == ["yes"] and list(beside["sft ORRatio@1"]) == [0.67]


def test_cli_results_prints_tables_and_verdicts(tmp_path, capsys):
    from sprec_lib.cli import main

    def run(method, seed, div1, or1, hr5):
        m = {"@1": {"HR": 0.0, "NDCG": 0.0, "DivRatio": div1, "ORRatio": or1, "MGU": 0.01},
             "@5": {"HR": hr5, "NDCG": 0.0, "DivRatio": div1, "ORRatio": or1, "MGU": 0.01}}
        fake_run(tmp_path, method, seed, m, final=method)

    for seed in (0, 1):
        run("sft", seed, 0.1, 0.3, 0.015)
        run("sprec", seed, 0.2 + seed / 10, 0.1, 0.016)
    assert main(["results", str(tmp_path), "--group", "ml-1m-tiny"]) == 0
    out = capsys.readouterr().out
    assert "ml-1m, tiny profile" in out and "0.2500 ± 0.0707" in out  # sprec DivRatio@1 over seeds 0.2, 0.3
    assert "reproduced (2 seeds): (b) SPRec" in out and "pending (0 seeds): (a1) DPO" in out
    assert main(["results", str(tmp_path / "nothing")]) == 2
    assert "no finished runs" in capsys.readouterr().err


# -- the paper beside ours -------------------------------------------------------------------------

PAPER = pd.DataFrame([
    {"table": 1, "dataset": "MovieLens", "method": m, "metric": k, "value": v, "source": "x"}
    for m, k, v in [("sft", "HR@5", 0.04), ("sft", "ORRatio@1", 0.25), ("sprec", "HR@5", 0.05),
                    ("sprec", "ORRatio@1", 0.15), ("sdpo", "HR@5", 0.03), ("sdpo", "ORRatio@1", 0.24)]])


def ours():
    return rows_frame({("sft", 0): {"HR@5": 0.010, "ORRatio@1": 0.60}, ("sft", 1): {"HR@5": 0.014, "ORRatio@1": 0.56},
                       ("sprec", 0): {"HR@5": 0.012, "ORRatio@1": 0.20}, ("sprec", 1): {"HR@5": 0.016, "ORRatio@1": 0.16},
                       ("sdpo", 0): {"HR@5": 0.011, "ORRatio@1": 0.61}, ("dpo", 0): {"HR@5": 0.01, "ORRatio@1": 0.7}},
                      dataset="MovieLens")


def test_paper_beside_ours_by_hand():
    side = claims.paper_beside_ours(ours(), PAPER, metrics=["HR@5", "ORRatio@1"]).set_index(["method", "metric"])
    assert list(dict.fromkeys(side.index.get_level_values("method"))) == ["sft", "dpo", "sdpo", "sprec"]
    sft = side.loc[("sft", "HR@5")]
    # mean(0.010, 0.014) = 0.012, std 0.002828; paper 0.04: ratio 0.3
    assert sft["ours"] == pytest.approx(0.012) and sft["ours_std"] == pytest.approx(0.0028284, abs=1e-6)
    assert sft["seeds"] == 2 and sft["ratio"] == pytest.approx(0.3)
    assert math.isnan(side.loc[("dpo", "HR@5"), "paper"]) and math.isnan(side.loc[("sdpo", "HR@5"), "ours_std"])


def test_paper_beside_page_names_a_stand_in():
    """A page of MovieLens runs sits beside the paper's MovieLens silently; ml-1m's sits beside the
    paper's MovieLens with a sentence saying it is not the paper's dataset."""
    side, note = claims.paper_beside_page(ours(), PAPER)
    assert note is None and side.equals(claims.paper_beside_ours(ours(), PAPER))
    side, note = claims.paper_beside_page(ours().assign(dataset="ml-1m"), PAPER)
    assert "`ml-1m` is not one of the paper's datasets" in note and "MovieLens" in note
    assert set(side["dataset"]) == {"MovieLens"} and side["paper"].notna().sum() == 6


def test_direction_agreement_and_counts():
    agree = claims.direction_agreement(ours(), PAPER, row_data=lambda f: None).set_index(["method", "metric"])
    assert "dpo" not in agree.index.get_level_values("method")  # the paper has no DPO row
    # SPRec HR@5: paper +0.01, ours +0.002 in both seeds (mean +0.002, within noise): agree, not clear.
    s = agree.loc[("sprec", "HR@5")]
    assert s["paper_sign"] == 1 and s["ours_sign"] == 1 and s["agree"] and not s["clear"]
    # SPRec ORRatio@1: paper -0.10, ours -0.40 in both seeds: agree, clear.
    assert agree.loc[("sprec", "ORRatio@1"), "agree"] and agree.loc[("sprec", "ORRatio@1"), "clear"]
    # S-DPO HR@5: paper -0.01, ours +0.001: disagree. ORRatio@1: paper -0.01, ours +0.01: disagree.
    assert not agree.loc[("sdpo", "HR@5"), "agree"] and not agree.loc[("sdpo", "ORRatio@1"), "agree"]
    counts = claims.agreement_counts(agree.reset_index())
    assert counts.loc["all"].tolist() == [4, 2, 1, 1] and counts.loc["sdpo", "agree"] == 0


def test_scale_gap_by_hand():
    gap = claims.scale_gap(ours(), PAPER).iloc[0]
    # HR@5 ratios: sft 0.012 / 0.04 = 0.3, sdpo 0.011 / 0.03 = 0.367, sprec 0.014 / 0.05 = 0.28
    assert gap["HR@5 ours/paper, lowest"] == pytest.approx(0.28) and gap["HR@5 ours/paper, highest"] == pytest.approx(0.011 / 0.03)
    assert gap["SFT ORRatio@1 ours"] == pytest.approx(0.58) and gap["SFT ORRatio@1 paper"] == 0.25


def test_figures():
    fig = plots.plot_paper_beside_ours(claims.paper_beside_ours(ours(), PAPER, metrics=["HR@5", "ORRatio@1"]), "MovieLens")
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() and ax.patches for ax in axes)
    fig = plots.plot_table_bars(ours(), ["sft", "dpo", "sdpo", "sprec"], ["HR@5", "ORRatio@1"], title="Table 1")
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() and ax.patches for ax in axes)
    assert any(line.get_ydata()[0] != line.get_ydata()[-1] for line in axes[0].lines)  # a seed range is drawn


# -- the book's pages: setup, scorecard, scale gap in words ------------------------------------


def test_setup_differences_by_hand():
    table = claims.setup_differences(run_config("tiny", method="sprec")).set_index("setting")
    assert list(table.columns) == ["ours", "paper", "differs"]
    # T: the paper's 5 (Appendix C), as tiny runs it; on ml-1m tiny keeps 3 (config.DATASET_OVERRIDES).
    assert table.loc["SPRec iterations T"].tolist() == ["5", "5", False]
    ml1m = claims.setup_differences(run_config("tiny", method="sprec", dataset="data/ml-1m")).set_index("setting")
    assert ml1m.loc["SPRec iterations T"].tolist() == ["3", "5", True]
    assert table.loc["profile"].tolist() == ["tiny", "paper", True]
    assert table.loc["domain pretraining"].tolist() == ["400 steps", "none", True]
    # Learning rates: SFT 1e-3 against 3e-4, SPRec's DPO step 2e-6 against 2e-5.
    assert table.loc["SFT (BIGRec) learning rate"].tolist() == ["0.001", "0.0003", True]
    assert table.loc["SPRec's DPO step learning rate"].tolist() == ["2e-06", "2e-05", True]
    # Batches: 8 x 2 and 4 x 4 are the same 16 rows per optimiser step; DPO's 2 x 4 is the paper's.
    assert table.loc["SFT (BIGRec) batch (per step x accumulation)"].tolist() == ["8 x 2 = 16", "4 x 4 = 16", False]
    assert table.loc["DPO batch (per step x accumulation)"].tolist() == ["2 x 4 = 8", "2 x 4 = 8", False]
    assert table.loc["SFT (BIGRec) epochs"].tolist() == ["2", "4", True]
    # Rows: 4,096 training rows, 2,048 per SPRec iteration, the whole test split: as the paper.
    assert table.loc["training rows"].tolist() == ["4,096", "4,096", False]
    assert table.loc["SPRec rows per iteration"].tolist() == ["2,048", "2,048", False]
    assert table.loc["test rows evaluated"].tolist() == ["the whole split", "the whole split", False]
    assert "from scratch" in table.loc["model", "ours"] and "Llama-3.2-1B" in table.loc["model", "paper"]
    # Precision: tiny and small train in fp32 on a CPU; the paper's scripts in bf16 (bf16=True).
    assert table.loc["training precision"].tolist() == ["fp32 (on a CPU)", "bf16 (on a GPU)", True]
    small = claims.setup_differences(run_config("small", method="sprec")).set_index("setting")
    assert small.loc["training precision"].tolist() == ["fp32 (on a CPU)", "bf16 (on a GPU)", True]
    bf16 = claims.setup_differences(run_config("small", ["model.dtype=bfloat16"], method="sprec")).set_index("setting")
    assert bf16.loc["training precision"].tolist() == ["bf16 autocast (on a CPU)", "bf16 (on a GPU)", False]
    assert not claims.setup_differences(run_config("paper"))["differs"].any()  # the paper against itself


def test_scorecard_cells_and_pages():
    metrics = ["HR@5", "ORRatio@1", "ORRatio@5", "DivRatio@1", "DivRatio@5"]
    rows = rows_frame({("sft", 0): dict(zip(metrics, [0.02, 0.5, 0.3, 0.1, 0.1])),
                       ("sprec", 0): dict(zip(metrics, [0.02, 0.2, 0.15, 0.3, 0.3]))}, dataset="Steam")
    checks = check_claims(rows, CLAIMS)
    cells = claims.scorecard(checks, ["Steam"]).set_index("id")
    assert list(cells.index) == ["a1", "a2", "a3", "b", "b2", "b3", "c", "d", "e", "f", "g"]  # every claim x dataset
    assert cells.loc["a1", "verdict"] == PENDING and cells.loc["a1", "seeds"] == 0  # no DPO run
    # SPRec: DivRatio +0.2, ORRatio -0.3 and -0.15 on 1,000 rows, HR@5 unchanged: clear of the bounds.
    assert cells.loc["b", "verdict"] == REPRODUCED and cells.loc["b", "seeds"] == 1
    assert cells.loc["b", "page"] == "03_training-Steam.html"
    # (a3) is made on CDs only; (b2) lacks every baseline run here.
    assert cells.loc["a3", "verdict"] == claims.NOT_CLAIMED and cells.loc["b2", "verdict"] == PENDING
    # The paper's text makes (c), (e), (f), (g) on other datasets than Steam; (d) on Steam too, and
    # these checks have no ablation parts: not run.
    assert [cells.loc[c, "verdict"] for c in "cefg"] == [claims.NOT_CLAIMED] * 4
    assert cells.loc["d", "verdict"] == claims.NOT_RUN and cells.loc["d", "page"] == "04_ablations-Steam.html"
    assert cells.loc["f", "page"] == "05_negative_samples-Steam.html"
    html = plots.scorecard_html(claims.scorecard(checks, ["Steam", "ml-1m"]))
    assert html.count('class="sprec-verdict"') == 11 * 2 and 'id="sprec-scorecard"' in html
    assert 'href="03_training-Steam.html"' in html and html._repr_html_() == str(html)


def test_scale_gap_in_words():
    text = claims.scale_gap_text(claims.scale_gap(ours(), PAPER))
    # HR@5 ratios 0.28 to 0.37 (test_scale_gap_by_hand); SFT ORRatio@1 0.58 against 0.25.
    assert "our HR@5 is 0.28× to 0.37× the paper's" in text
    assert "0.58 of its top-1 slots" in text and "the paper's BIGRec: 0.25" in text
    assert "more popularity-collapsed than the paper's BIGRec (higher ORRatio@1) on 1 of 1 datasets" in text
    assert claims.scale_gap_text(pd.DataFrame()) == ""


def test_paper_beside_wide_and_whole_tables():
    side = claims.paper_beside_ours(ours(), PAPER, metrics=["HR@5", "ORRatio@1"])
    wide = claims.paper_beside_wide(side, digits=3).set_index("method")
    assert wide.loc["sft", "HR@5"] == "0.012 ± 0.003 / 0.040" and wide.loc["sft", "seeds"] == 2
    assert wide.loc["dpo", "HR@5"] == "0.010 / —"  # the paper has no DPO row; one seed, no spread
    long_text = "x" * 300
    html = plots.html_table(pd.DataFrame({"note": [long_text], "v": [0.123456]}))
    assert long_text in html and "0.1235" in html and "overflow-x:auto" in html  # whole, and scrolls


def test_missing_runs_is_one_collapsed_line():
    from sprec_lib.runs import RunSpec

    asked = [RunSpec("x/Steam", m, s) for m in ("sft", "sprec") for s in (0, 1)]
    html = plots.missing_runs(asked, asked[1:3])
    assert html.startswith("<details") and "2 of 4 runs missing" in html and "Steam: sft-seed1, sprec-seed0" in html
    assert "sprec train" not in html  # no commands: `sprec runs missing` prints them
    assert plots.missing_runs(asked, []) == "<p>All 4 runs this page reads were found.</p>"


def test_quorum_verdict_most_of_the_parts():
    """A "most" claim (quorum 0.5 of 10 parts): reproduced with 6 holding; not reproduced once even
    every open part holding would leave 5 or fewer; pending while a majority is still possible and a
    part is missing; inconclusive when the open parts are all within the noise."""
    from sprec_lib.claims import CONTRARY, HOLDS, MISSING, WITHIN, _verdict

    def parts(**n):
        outcomes = [o for o, k in ((HOLDS, n.get("h", 0)), (CONTRARY, n.get("c", 0)), (WITHIN, n.get("w", 0)),
                                   (MISSING, n.get("m", 0))) for _ in range(k)]
        return pd.DataFrame({"outcome": outcomes, "collapsed": False})

    assert _verdict(parts(h=6, c=4), 0.5) == "reproduced"
    assert _verdict(parts(h=5, c=5), 0.5) == "not reproduced"  # 5 of 10 is not "most"
    assert _verdict(parts(h=3, c=5, w=2), 0.5) == "not reproduced"  # at best 5 of 10
    assert _verdict(parts(h=4, c=3, m=3), 0.5) == "pending"  # 7 of 10 still possible
    assert _verdict(parts(h=4, c=3, w=3), 0.5) == "inconclusive (within noise)"
    assert _verdict(parts(h=6, c=4), None) == "not reproduced"  # without a quorum every part must hold
    b2 = claim("b2")
    assert b2.quorum == 0.5 and len(b2.parts) == 10
    assert claims.paper_passes(b2).all()  # the paper's SPRec is first on both metrics everywhere
    assert dict(claims.paper_passes(claim("a3")))["CDs_and_Vinyl"]  # RosePO on CDs, in the paper's numbers


def test_a_custom_claim_keeps_its_quorum_in_the_verdict_table():
    """A claim outside ALL_CLAIMS (id "zz", quorum 0.5): its parts carry the quorum, so 6 of 10
    holding is reproduced; a table without the column falls back to ALL_CLAIMS, where "zz" has none,
    and every part must hold."""
    from sprec_lib.claims import CONTRARY, HOLDS, verdict_table

    checks = pd.DataFrame({"dataset": "Steam", "profile": "tiny", "claim": "custom", "id": "zz",
                           "outcome": [HOLDS] * 6 + [CONTRARY] * 4, "collapsed": False, "seeds": 1, "quorum": 0.5})
    assert verdict_table(checks)["verdict"].tolist() == ["reproduced"]
    assert verdict_table(checks.drop(columns="quorum"))["verdict"].tolist() == ["not reproduced"]
    assert verdict_table(checks.assign(quorum=None))["verdict"].tolist() == ["not reproduced"]


def test_stability_effect_spread_and_noise_by_hand():
    """SPRec − SFT DivRatio@1 over three seeds: 0.30-0.10, 0.25-0.10, 0.35-0.15 = 0.20, 0.15, 0.20;
    mean 0.18333, sample std sqrt(((1/60)^2*2 + (1/30)^2)/2) = 0.028868. One-run noise: sqrt(2) x 0.01."""
    rows = rows_frame({("sft", 0): {"DivRatio@1": 0.10}, ("sprec", 0): {"DivRatio@1": 0.30},
                       ("sft", 1): {"DivRatio@1": 0.10}, ("sprec", 1): {"DivRatio@1": 0.25},
                       ("sft", 2): {"DivRatio@1": 0.15}, ("sprec", 2): {"DivRatio@1": 0.35}}, dataset="Steam")
    rule = claims.NoiseRule(run_std={"DivRatio@1": 0.01})
    s = claims.stability(rows, metrics=["DivRatio@1", "HR@5"], rule=rule)
    assert len(s) == 1  # no HR@5 values: no row
    r = s.iloc[0]
    assert (r["dataset"], r["metric"], r["seeds"]) == ("Steam", "DivRatio@1", 3)
    assert r["effect"] == pytest.approx(0.55 / 3) and r["seed_spread"] == pytest.approx(0.028868, abs=1e-6)
    assert r["run_noise"] == pytest.approx(0.01 * 2 ** 0.5)
    one = claims.stability(rows[rows["seed"] == 0], metrics=["DivRatio@1"], rule=rule).iloc[0]
    assert one["seeds"] == 1 and np.isnan(one["seed_spread"]) and one["effect"] == pytest.approx(0.2)
    fig = plots.plot_stability(s)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 1
    # The test rows' interval of the effect, without per-row data: the bound at the means (SPRec
    # 0.30, SFT 0.116667), not widened by the training noise: z sqrt(.30 / 1000 + .116667 / 1000).
    r = claims.stability(rows, metrics=["DivRatio@1"], rule=rule, row_data=lambda *a: None).iloc[0]
    band = Z * math.sqrt((0.30 + 0.35 / 3) / 1000)
    assert r["rows_rule"] == "bound" and r["rows_low"] == pytest.approx(0.55 / 3 - band)
    assert r["rows_high"] == pytest.approx(0.55 / 3 + band)
    fig = plots.plot_stability(claims.stability(rows, metrics=["DivRatio@1"], rule=rule, row_data=lambda *a: None))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["seeds' spread (±1 std)", "test rows' 95% interval"]


def test_endpoint_stability_reads_the_iteration_before_the_last_by_hand(tmp_path):
    """Two seeds of SPRec (T = 2) whose DivRatio@1 swings: SFT 0.10, it1 0.40 / 0.30, it2 0.12 / 0.14.
    At T: differences 0.02, 0.04 -> mean 0.03, std 0.014142; at T - 1: 0.30, 0.20 -> 0.25, 0.070711."""
    from sprec_lib.results import finished_runs, run_rows

    def run(method, seed, values, final):
        r = Run(tmp_path / f"{method}-{seed}", run_config("tiny", dataset="/x/Steam", method=method, seed=seed))
        for label, v in values.items():
            write_json({"valid_ratio": 1.0, "stage": final if label == list(values)[-1] else label,
                        "@1": {"DivRatio": v}, "@5": {"HR": 0.01}}, r.metrics_path(label))
        write_json({"method": method, "final_stage": final}, r.folder / "FINISHED")

    for seed, (it1, it2) in enumerate([(0.40, 0.12), (0.30, 0.14)]):
        run("sft", seed, {"sft": 0.10}, "sft")
        run("sprec", seed, {"sft": 0.10, "it1": it1, "it2": it2}, "it2-dpo")
    rows = run_rows(finished_runs(tmp_path))
    rule = NoiseRule(run_std={"DivRatio@1": 0.01})
    e = claims.endpoint_stability(rows, rule, metrics=["DivRatio@1"])
    assert len(e) == 1
    r = e.iloc[0]
    assert (r["dataset"], r["seeds"], r["iterations"]) == ("Steam", 2, 2)
    assert r["effect"] == pytest.approx(0.03) and r["seed_spread"] == pytest.approx(0.0141421356)
    assert r["effect_before"] == pytest.approx(0.25) and r["seed_spread_before"] == pytest.approx(0.0707106781)
    assert r["run_noise"] == pytest.approx(0.01 * 2 ** 0.5)
    fig = plots.plot_stability(e)  # two bars for the one dataset: at T and at T - 1
    assert [round(p.get_height(), 6) for p in fig.axes[0].patches] == [0.03, 0.25]
    # Runs of one iteration have no T - 1: nothing to show.
    assert claims.endpoint_stability(rows[rows["label"] == "sft"], rule).empty


# -- several profiles beside each other (the pretrained-LLM chapter) ------------------------------


def two_profiles():
    """ours() as the tiny profile, and a small profile with SFT on two seeds and SPRec on one."""
    small = rows_frame({("sft", 0): {"HR@5": 0.020, "ORRatio@1": 0.30}, ("sft", 1): {"HR@5": 0.024, "ORRatio@1": 0.34},
                        ("sprec", 0): {"HR@5": 0.030, "ORRatio@1": 0.10}}, dataset="MovieLens").assign(profile="small")
    return pd.concat([small, ours()], ignore_index=True)


def test_profiles_beside_paper_by_hand():
    side = claims.profiles_beside_paper(two_profiles(), ["small", "tiny"], ["sft", "dpo", "sprec", "sprec-rn"],
                                        datasets=["MovieLens", "ml-1m"], paper=PAPER, metrics=["HR@5", "ORRatio@1"])
    assert list(side.columns) == ["dataset", "method", "metric", "small", "tiny", "seeds small", "seeds tiny", "paper",
                                  "paper's dataset"]
    assert len(side) == 2 * 4 * 2  # every dataset, method and metric asked for, runs or not
    s = side.set_index(["dataset", "method", "metric"])
    # SFT ORRatio@1: small mean(0.30, 0.34) = 0.32 on 2 seeds, tiny mean(0.60, 0.56) = 0.58, the paper 0.25.
    assert s.loc[("MovieLens", "sft", "ORRatio@1")][["small", "tiny", "paper"]].tolist() == pytest.approx([0.32, 0.58, 0.25])
    assert s.loc[("MovieLens", "sft", "ORRatio@1")][["seeds small", "seeds tiny"]].tolist() == [2, 2]
    # DPO: tiny has a run, small none, the paper no row; SPRec-RN: nothing at all.
    dpo = s.loc[("MovieLens", "dpo", "HR@5")]
    assert math.isnan(dpo["small"]) and dpo["tiny"] == 0.01 and dpo["seeds small"] == 0 and math.isnan(dpo["paper"])
    assert s.loc[("MovieLens", "sprec-rn", "HR@5")][["seeds small", "seeds tiny"]].tolist() == [0, 0]
    # ml-1m has no runs here and sits beside the paper's MovieLens.
    ml1m = s.loc[("ml-1m", "sprec", "HR@5")]
    assert math.isnan(ml1m["small"]) and ml1m["paper"] == 0.05 and ml1m["paper's dataset"] == "MovieLens"
    wide = claims.profiles_beside_wide(side, ["small", "tiny"], digits=3).set_index(["dataset", "method"])
    assert wide.loc[("MovieLens", "sft"), "ORRatio@1"] == "0.320 / 0.580 / 0.250"
    assert wide.loc[("MovieLens", "dpo"), "HR@5"] == "— / 0.010 / —"
    assert wide.loc[("MovieLens", "sft"), "seeds small"] == 2 and wide.loc[("ml-1m", "sft"), "seeds tiny"] == 0
    empty = claims.profiles_beside_paper(pd.DataFrame(), ["small"], ["sft"], datasets=["Goodreads"], paper=PAPER,
                                         metrics=["HR@5"])
    assert len(empty) == 1 and math.isnan(empty.loc[0, "small"]) and empty.loc[0, "seeds small"] == 0


def test_profile_difference_by_hand():
    rows = two_profiles()
    diff = claims.profile_difference(rows, "sft", "ORRatio@1", "small", "tiny", row_data=lambda f: None).iloc[0]
    # Paired by seed: 0.30 - 0.60 and 0.34 - 0.56, mean -0.26; two seeds: each needs its bound clear.
    assert diff["value"] == pytest.approx(0.32) and diff["base"] == pytest.approx(0.58)
    assert diff["difference"] == pytest.approx(-0.26) and diff["seeds"] == 2 and diff["rule"] == "bound"
    # seed 1's band: z sqrt(0.34 x 0.66 / 1000 + 0.56 x 0.44 / 1000); its high end is the widest
    band1 = Z * math.hypot(math.sqrt(0.34 * 0.66 / 1000), math.sqrt(0.56 * 0.44 / 1000))
    assert diff["high"] == pytest.approx(-0.22 + band1) and diff["evidence"] == -1
    # HR@5: 0.020 - 0.010 = +0.010 and +0.010: within the bounds (about ±0.011 each).
    hr = claims.profile_difference(rows, "sft", "HR@5", "small", "tiny", row_data=lambda f: None).iloc[0]
    assert hr["difference"] == pytest.approx(0.010) and hr["evidence"] == 0
    # A method one profile lacks gives no row.
    assert claims.profile_difference(rows, "dpo", "HR@5", "small", "tiny").empty
    assert claims.profile_difference(pd.DataFrame(), "sft", "HR@5", "small", "tiny").empty


def test_setups_beside_by_hand():
    table = claims.setups_beside({"small": run_config("small", method="sprec"),
                                  "tiny": run_config("tiny", method="sprec")}).set_index("setting")
    assert list(table.columns) == ["small", "tiny", "paper", "differs from the paper"]
    # The small profile: SmolLM2 from its Q4_1 GGUF with the paper's LoRA; tiny from scratch.
    assert "SmolLM2-135M-Instruct" in table.loc["model", "small"] and "Q4_1" in table.loc["model", "small"]
    assert "LoRA r=16, alpha=32" in table.loc["model", "small"] and "from scratch" in table.loc["model", "tiny"]
    assert table.loc["LoRA", "small"] == table.loc["LoRA", "paper"] and table.loc["LoRA", "tiny"] == "none (full-parameter)"
    # SFT 2 epochs (4 in the paper), each epoch's model kept; SPRec 512 rows per iteration at T = 5.
    assert table.loc["SFT (BIGRec) epochs"].tolist() == ["2", "2", "4", "small, tiny"]
    assert table.loc["SFT (BIGRec) end-of-epoch models kept"].tolist() == ["yes", "no", "no", "small"]
    assert table.loc["SPRec rows per iteration"].tolist() == ["512", "2,048", "2,048", "small"]
    assert table.loc["SPRec iterations T"].tolist() == ["5", "5", "5", ""]
    # Precision: small and tiny train in fp32 on a CPU, the paper's scripts in bf16.
    assert table.loc["training precision"].tolist() == ["fp32 (on a CPU)", "fp32 (on a CPU)", "bf16 (on a GPU)", "small, tiny"]
    # DPO: the paper's lr and beta on small; tiny's lr is scaled down.
    assert table.loc["DPO learning rate"].tolist() == ["2e-05", "5e-06", "2e-05", "tiny"]
    assert table.loc["DPO beta"].tolist() == ["0.1", "0.1", "0.1", ""]
    assert table.loc["S-DPO beta", "small"] == "1" and table.loc["SPRec's DPO step beta", "small"] == "0.1"


def test_an_ablation_meets_sprec_by_the_change_from_its_own_start(tmp_path):
    """An ablation that began from another SFT model than SPRec of its seed is moved onto SPRec's
    start (final − own start + SPRec's start), so that its difference with SPRec is the difference
    of their changes; with the same start it is the plain seed pairing. Worked by hand, and the
    per-row bootstrap of the moved value is the signed sum of the three evaluations' statistics."""
    from sprec_lib.results import run_rows

    def m(or1, hr5=0.01):
        return {"@1": {"HR": 0.0, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01},
                "@5": {"HR": hr5, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01}}

    sprec = fake_run(tmp_path, "sprec", 0, m(0.40), final="it5")
    sprec.record_metrics("sft", {"valid_ratio": 1.0, "rows": 1000, "stage": "sft", **m(0.60)})
    rn = fake_run(tmp_path, "sprec-rn", 0, m(0.55), final="it5")
    rn.record_metrics("sft", {"valid_ratio": 1.0, "rows": 1000, "stage": "sft", **m(0.70)})  # another SFT model
    nodpo = fake_run(tmp_path, "sprec-nodpo", 0, m(0.58), final="it5")
    nodpo.record_metrics("sft", sprec.metrics_of("sft"))  # SPRec's own start
    rows = run_rows([Run(r.folder) for r in (sprec, rn, nodpo)])
    own = claims._pairs(rows, "sprec-rn", "sprec", "ORRatio@1", claims.RULE)
    assert math.isclose(own.loc[0, "value"], 0.55 - 0.70 + 0.60) and own.loc[0, "base"] == 0.40
    assert own.loc[0, "paired"] == "own start"
    assert own.loc[0, "run"] == claims.Moved(str(rn.folder), (str(rn.folder), "sft"), (str(sprec.folder), "sft"))
    by_seed = claims._pairs(rows, "sprec-rn", "sprec", "ORRatio@1", claims.RULE, "seed")
    assert by_seed.loc[0, "value"] == 0.55 and by_seed.loc[0, "paired"] == "seed"
    same = claims._pairs(rows, "sprec-nodpo", "sprec", "ORRatio@1", claims.RULE)
    assert same.loc[0, "value"] == 0.58 and same.loc[0, "paired"] == "seed"
    checks = check_claims(rows.assign(dataset="MovieLens"), ABLATION_CLAIMS.values(), row_data=lambda *a: None)
    e = checks[(checks["method"] == "sprec-rn") & (checks["metric"] == "ORRatio@1")].iloc[0]
    assert math.isclose(e["difference"], (0.55 - 0.70) - (0.40 - 0.60)) and e["paired"] == "own start"
    # Its bound is wider than a seed pairing's (the two starts' noise): sqrt(2) x, by hand.
    band = claims.difference_band("ORRatio@1", 0.45, 0.40, 1000)
    assert math.isclose(e["high"] - e["low"], 2 * band * math.sqrt(2))

    # Per-row data: four test rows, top-1 lists; ORRatio@1 = the share of the valid rows' top-1
    # slots taken by the 3 most frequent items (k = 1 here).
    def rows_of(items):
        return {"target": [None if i is None else 99 for i in items], "topk": [[i] for i in items],
                "eval": {"dataset": "ml-1m", "split": "test", "rows": 4}}

    data = {str(rn.folder): rows_of([1, 1, 2, 3]), (str(rn.folder), "sft"): rows_of([1, 1, 1, 1]),
            (str(sprec.folder), "sft"): rows_of([1, 2, 3, 4]), str(sprec.folder): rows_of([5, 6, 7, 8])}
    side = claims._side(data.get, own.loc[0, "run"])
    assert isinstance(side, claims.Signed) and claims.has_row_statistic("DivRatio@1", side)
    # DivRatio@1: distinct top-1 items / valid slots: 3/4 − 1/4 + 4/4 = 1.5
    assert math.isclose(claims._statistic("DivRatio@1", side)(np.ones((1, 4)))[0], 3 / 4 - 1 / 4 + 1)
    # Where the two starts' rows are the same, they cancel in every resample: the moved side's
    # interval is the plain paired bootstrap of the run against SPRec (a sign error would shift it).
    same_starts = {**data, (str(sprec.folder), "sft"): data[(str(rn.folder), "sft")]}
    cancelled = claims._side(same_starts.get, own.loc[0, "run"])
    plain = claims.paired_bootstrap("DivRatio@1", data[str(rn.folder)], data[str(sprec.folder)])
    assert np.allclose(claims.paired_bootstrap("DivRatio@1", cancelled, data[str(sprec.folder)]), plain)
    low, high = claims.paired_bootstrap("DivRatio@1", side, data[str(sprec.folder)])
    assert not np.allclose((low, high), plain)  # with different starts, it is not
    assert claims._side(lambda key: None, own.loc[0, "run"]) is None


def test_a_sweep_whose_points_began_from_different_sft_models_is_fitted_on_their_changes(tmp_path):
    """Two points of one seed's sweep, from two SFT models: the slope is fitted on each point's
    change from its own start (by hand: (0.40 − 0.40) − (0.50 − 0.60) = +0.10 over the sweep,
    where the raw values fall by 0.10); with one start for both, on the values as they are."""
    from sprec_lib.results import run_rows

    def m(or1):
        return {"@1": {"HR": 0.0, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01},
                "@5": {"HR": 0.01, "NDCG": 0.0, "DivRatio": 0.05, "ORRatio": or1, "MGU": 0.01}}

    def point(label, value, start):
        run = fake_run(tmp_path, label, 0, m(value), final="it5")
        run.record_metrics("sft", {"valid_ratio": 1.0, "rows": 1000, "stage": "sft", **m(start)})
        return run

    def sweep(*runs):
        rows = run_rows([Run(r.folder) for r in runs]).assign(dataset="MovieLens")
        return rows.assign(random_ratio=[0.0, 1.0])

    f = [c for c in SWEEP_CLAIMS.values() if c.id == "f"]
    part = lambda checks: checks[checks["metric"] == "ORRatio@1"].iloc[0]  # noqa: E731
    moved = part(claims.check_trends(sweep(point("sprec-a", 0.50, 0.60), point("sprec-b", 0.40, 0.40)),
                                     "random_ratio", [0.0, 1.0], f))
    assert math.isclose(moved["difference"], 0.10) and moved["paired"] == "own start"
    plain = part(claims.check_trends(sweep(point("sprec-c", 0.50, 0.60), point("sprec-d", 0.40, 0.60)),
                                     "random_ratio", [0.0, 1.0], f))
    assert math.isclose(plain["difference"], -0.10) and plain["paired"] == ""
