"""Compute spent, read from the run logs (``sprec_lib.results.run_compute``): the seconds of hand-built
logs worked out by hand, the errors a log that is not what the reader expects gets, and invariants
the committed runs (``results/runs``) must keep, whatever their numbers."""

import json
from pathlib import Path

import pandas as pd
import pytest

from sprec_lib.cli import main
from sprec_lib.config import run_config
from sprec_lib.results import LogFormatError, compute_spent, compute_table, run_compute
from sprec_lib.runs import Run, write_json

RESULTS = Path(__file__).resolve().parents[1] / "results" / "runs"


def log_run(root: Path, dataset: str, label: str, method: str, log: str, seed: int = 0, profile: str = "tiny") -> Path:
    """A finished run folder ``<dataset>-<profile>/<label>-seed<S>`` (config.json, FINISHED) with ``log``."""
    run = Run(root / f"{dataset}-{profile}" / f"{label}-seed{seed}",
              run_config(profile, dataset=f"/x/{dataset}", method=method, seed=seed))
    (run.folder / "log.txt").write_text(log)
    write_json({"method": method, "final_stage": method}, run.folder / "FINISHED")
    return run.folder


# Killed 10 minutes into DPO (its last line at 10:11:00), resumed at 13:00:00. Segments: 10:00:00 →
# 10:11:00 (660 s) and 13:00:00 → 13:31:05 (1865 s): 2525 s; the gap until the resume is not counted.
# DPO: 10:01:00 → 10:11:00 (600 s) before the kill, 13:00:05 → 13:30:05 (1800 s) after: 2400 s.
# At most: the killed segment ran until 13:00:00 (10800 s), plus 1865 s: 12665 s.
RESUMED = """\
2026-12-01 10:00:00 dpo on MovieLens (tiny profile, seed 0; training dtype float32)
2026-12-01 10:00:00 stage pretrain: reused /cache/stages/pretrain-1
2026-12-01 10:00:01 stage sft: reused /cache/stages/sft-1
2026-12-01 10:01:00 eval sft: valid_ratio 0.968, HR@5 0.0100
2026-12-01 10:01:00 stage dpo: starting from sft (seed 841988499)
2026-12-01 10:11:00 stage dpo: checkpoint-30 does not load; deleted
2026-12-01 13:00:00 dpo on MovieLens (tiny profile, seed 0; training dtype float32)
2026-12-01 13:00:05 stage dpo: starting from sft (seed 841988499)
2026-12-01 13:00:05 stage dpo: resuming from checkpoint-20 (its trainer state, optimizer and RNG)
2026-12-01 13:30:05 stage dpo done
2026-12-01 13:31:05 eval dpo: valid_ratio 0.962, HR@5 0.0100
2026-12-01 13:31:05 finished: dpo, final stage dpo
"""

# An undated log (before the date was added; "done " with a trailing space) that passes midnight:
# 23:50:00 → 00:41:00 is 3060 s; pretrain 23:50:01 → 00:20:01 (1800 s), sft 00:20:01 → 00:40:01 (1200 s).
MIDNIGHT = """\
23:50:00 sft on Steam (tiny profile, seed 1)
23:50:01 stage pretrain: starting from the base model (seed 0)
00:20:01 stage pretrain done 
00:20:01 stage sft: starting from pretrain (seed 884881051)
00:40:01 stage sft done 
00:41:00 eval sft: valid_ratio 1.000, HR@5 0.0100
00:41:00 finished: sft, final stage sft
"""

# What a run's log gets after it finished: a `sprec eval` line (its start is not logged: not counted),
# a blank line and a note by hand, then a re-evaluation that starts the run again (counted), with a
# message that runs over two lines. 16:00:00 → 16:11:00 (660 s) + 19:30:10 → 19:32:10 (120 s) = 780 s.
AFTER_FINISH = """\
2026-12-02 16:00:00 sft on CDs_and_Vinyl (tiny profile, seed 0; training dtype float32)
2026-12-02 16:00:00 stage sft: starting from pretrain (seed 883881048)
2026-12-02 16:10:00 stage sft done
2026-12-02 16:11:00 finished: sft, final stage sft
2026-12-02 19:00:00 eval sft-grounded-5-valid: valid_ratio 0.904, HR@5 0.0020

re-evaluated on the test split: 19:30:00 config eval.split=test
2026-12-02 19:30:10 sft on CDs_and_Vinyl (tiny profile, seed 0; training dtype float32)
2026-12-02 19:32:10 eval sft: valid_ratio 0.9,
 HR@5 0.0100 (a message with a newline in it)
2026-12-02 19:32:10 finished: sft, final stage sft
"""


def test_a_resumed_run_counts_its_segments_not_the_gap(tmp_path):
    c = run_compute(log_run(tmp_path, "MovieLens", "dpo", "dpo", RESUMED))
    assert c["seconds"] == 2525 and c["at_most_seconds"] == 12665
    assert c["stage_seconds"] == {"pretrain": 0, "sft": 0, "dpo": 2400}
    assert c["restarts"] == 1 and c["interrupted"] == ["dpo"] and c["after_finish"] == 0


def test_a_reused_stage_costs_nothing_here(tmp_path):
    c = run_compute(log_run(tmp_path, "MovieLens", "dpo", "dpo", RESUMED))
    assert c["reused"] == ["pretrain", "sft"] and c["stage_seconds"]["pretrain"] == c["stage_seconds"]["sft"] == 0


def test_an_undated_log_passes_midnight(tmp_path):
    c = run_compute(log_run(tmp_path, "Steam", "sft", "sft", MIDNIGHT, seed=1))
    assert c["seconds"] == 3060 and c["at_most_seconds"] == 3060
    assert c["stage_seconds"] == {"pretrain": 1800, "sft": 1200}
    assert (c["restarts"], c["reused"], c["interrupted"]) == (0, [], [])


def test_lines_after_finished_are_not_counted_and_notes_without_a_stamp_are_skipped(tmp_path):
    c = run_compute(log_run(tmp_path, "CDs_and_Vinyl", "sft", "sft", AFTER_FINISH))
    assert c["seconds"] == 780 and c["stage_seconds"] == {"sft": 600}
    assert c["restarts"] == 1 and c["after_finish"] == 1


def test_training_a_finished_run_again_closes_its_segment(tmp_path):
    """``sprec train`` on a finished folder (to fill the stage cache) logs a start line; its
    ``finished:`` line closes that segment, so a later start does not stretch the upper bound:
    780 s (AFTER_FINISH) + the re-invocation's second or so + 60 s at 2027-01-01, not a month."""
    folder = log_run(tmp_path, "CDs_and_Vinyl", "sft", "sft", AFTER_FINISH)
    run = Run(folder)
    run.log("sft on CDs_and_Vinyl (tiny profile, seed 0; training dtype float32)")
    run.finish("another-stage")
    assert run.final_stage == "sft"  # the mark stays as it was
    last = (folder / "log.txt").read_text().splitlines()[-1]
    assert last.endswith("finished: sft, final stage sft (had finished; nothing trained)")
    with open(folder / "log.txt", "a") as f:
        f.write("2027-01-01 00:00:00 sft on CDs_and_Vinyl (tiny profile, seed 0; training dtype float32)\n"
                "2027-01-01 00:01:00 finished: sft, final stage sft\n")
    c = run_compute(folder)
    assert c["restarts"] == 3 and c["after_finish"] == 1
    assert 840 <= c["seconds"] <= c["at_most_seconds"] <= 845


@pytest.mark.parametrize("log, line, expected", [
    # a stamp cut short (the process killed while writing)
    (RESUMED.replace("2026-12-01 13:30:05 stage dpo done", "2026-12-01 13:3"), 10, "expected 'YYYY-MM-DD HH:MM:SS"),
    (MIDNIGHT.replace("00:20:01 stage sft:", "0:20:01 stage sft:"), 4, "expected 'YYYY-MM-DD HH:MM:SS"),
    (MIDNIGHT.replace("00:40:01", "24:40:01"), 5, "expected a valid date and time"),
    # no start line first (a log cut at its head, or not a run's log)
    ("\n".join(MIDNIGHT.splitlines()[1:]), 1, "expected the run's start line"),
    ("a note before anything\n" + MIDNIGHT, 1, "expected a timestamped line"),
    # another run's log (seed 3 in a seed-1 folder)
    (MIDNIGHT.replace("seed 1)", "seed 3)"), 1, "expected the start line of this run"),
    # a dated clock that goes back
    (RESUMED.replace("2026-12-01 13:31:05 eval", "2026-12-01 12:31:05 eval"), 11, "expected a time no earlier"),
    # a dated line inside an undated process
    (MIDNIGHT.replace("00:41:00 eval", "2026-12-03 00:41:00 eval"), 6, "expected undated lines"),
])
def test_a_line_that_does_not_parse_names_the_file_and_line(tmp_path, log, line, expected):
    folder = log_run(tmp_path, "Steam", "sft", "sft", log, seed=1)
    with pytest.raises(LogFormatError) as e:
        run_compute(folder)
    assert f"{folder / 'log.txt'}, line {line}:" in str(e.value) and expected in str(e.value)


def test_compute_spent_and_table_by_hand(tmp_path):
    """Rows per run; the table sums over seeds per (dataset, profile) and label, with totals:
    MovieLens dpo 2525 s, Steam sft 3060 s (seed 1) + 780 s (seed 0, the after-finish log)."""
    log_run(tmp_path, "MovieLens", "dpo", "dpo", RESUMED)
    log_run(tmp_path, "Steam", "sft", "sft", MIDNIGHT, seed=1)
    log_run(tmp_path, "Steam", "sft", "sft", AFTER_FINISH.replace("CDs_and_Vinyl", "Steam"), seed=0)
    spent = compute_spent(tmp_path)
    assert spent[["dataset", "label", "method", "seed", "restarts"]].values.tolist() == [
        ["MovieLens", "dpo", "dpo", 0, 1], ["Steam", "sft", "sft", 0, 1], ["Steam", "sft", "sft", 1, 0]]
    assert spent["hours"].tolist() == pytest.approx([2525 / 3600, 780 / 3600, 3060 / 3600])
    assert spent["reused"].tolist() == ["pretrain, sft", "", ""]
    assert spent["stage dpo"].tolist()[0] == pytest.approx(2400 / 3600)
    assert spent["stage dpo"].isna().tolist() == [False, True, True]  # empty: no such stage
    table = compute_table(spent)
    assert table.loc[("MovieLens", "tiny"), "dpo"] == pytest.approx(2525 / 3600)
    assert pd.isna(table.loc[("MovieLens", "tiny"), "sft"])
    assert table.loc[("Steam", "tiny"), "sft"] == pytest.approx(3840 / 3600)
    assert table.loc[("total", ""), "total"] == pytest.approx(6365 / 3600)
    assert list(table.columns) == ["sft", "dpo", "total"]  # the registry's order


def test_cli_prints_the_table_writes_json_and_reports_a_bad_log(tmp_path, capsys):
    log_run(tmp_path / "ok", "MovieLens", "dpo", "dpo", RESUMED)
    out = tmp_path / "cost.json"
    assert main(["runs", "cost", "--results", str(tmp_path / "ok"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.70" in printed and "MovieLens-tiny/dpo-seed0: 1 restart(s), 0.70 .. 3.52 h, cut: dpo" in printed
    written = json.loads(out.read_text())
    assert written["runs"][0]["hours"] == pytest.approx(2525 / 3600) and written["table"][-1]["dataset"] == "total"
    bad = log_run(tmp_path / "bad", "Steam", "sft", "sft", MIDNIGHT.replace("00:20:01 stage sft:", "0:20 stage sft:"),
                  seed=1)
    assert main(["runs", "cost", "--results", str(tmp_path / "bad")]) == 2
    assert f"{bad / 'log.txt'}, line 4:" in capsys.readouterr().err


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no committed results/runs")
def test_the_committed_runs_keep_the_invariants():
    """No numbers of the real runs: what must hold whatever they are."""
    spent = compute_spent(RESULTS)
    finished = sorted(p.parent for p in RESULTS.glob("*/*/FINISHED"))
    assert sorted(Path(r) for r in spent["run"]) == finished
    assert {f"{r.dataset}-{r.profile}" for r in spent.itertuples()} == {p.name for p in RESULTS.iterdir() if p.is_dir()}
    stages = spent[[c for c in spent.columns if c.startswith("stage ")]]
    assert (stages.fillna(0) >= 0).all().all() and (spent["hours"] > 0).all()
    assert (spent["hours"] >= stages.sum(axis=1) - 1e-9).all()
    assert (spent["hours_at_most"] >= spent["hours"] - 1e-9).all()
    assert (spent["restarts"] >= 0).all()
    for r in spent.itertuples():  # a reused stage costs nothing here
        for stage in filter(None, r.reused.split(", ")):
            assert spent.loc[r.Index, f"stage {stage}"] == 0
    for by in ("label", "method"):
        table = compute_table(spent, by=by)
        assert table.loc[("total", ""), "total"] == pytest.approx(spent["hours"].sum())
        body = table.drop(index=("total", ""))
        assert body["total"].tolist() == pytest.approx(body.drop(columns="total").sum(axis=1).tolist())


def test_a_stage_without_benchmark_figures_is_estimated_from_the_logs(tmp_path):
    """pipeline.logged_stage_seconds: the median of the stage's logged seconds over the committed
    runs of the profile, on the dataset when any ran it there, else on any dataset; a stage reused
    from the cache (0 s here) does not count. MovieLens's SFT stages: 1200 s and 600 s (the
    after-finish log, 16:00:00 -> 16:10:00), median 900 s; Goodreads has none: every dataset's."""
    from sprec_lib.pipeline import logged_stage_seconds

    log_run(tmp_path, "MovieLens", "sft", "sft", MIDNIGHT.replace("Steam", "MovieLens"), seed=1)
    log_run(tmp_path, "MovieLens", "sft", "sft", AFTER_FINISH.replace("CDs_and_Vinyl", "MovieLens"), seed=0)
    log_run(tmp_path, "Steam", "dpo", "dpo", RESUMED.replace("MovieLens", "Steam"))  # sft reused: not counted
    log_run(tmp_path, "Steam", "sft", "sft", AFTER_FINISH.replace("CDs_and_Vinyl", "Steam")
            .replace("16:10:00", "16:40:00").replace("16:11:00", "16:41:00"))
    assert logged_stage_seconds("tiny", "MovieLens", "sft", tmp_path) == (pytest.approx(900), 2)
    assert logged_stage_seconds("tiny", "Steam", "sft", tmp_path) == (pytest.approx(2400), 1)
    assert logged_stage_seconds("tiny", "Goodreads", "sft", tmp_path) == (pytest.approx(1200), 3)  # 600, 1200, 2400
    assert logged_stage_seconds("tiny", "Goodreads", "rosepo", tmp_path) == (None, 0)
    assert logged_stage_seconds("small", "MovieLens", "sft", tmp_path) == (None, 0)


# Pretraining killed after 5 minutes and resumed: its logged time (299 s + 60 s) is a part of a
# stage, not what 400 steps take.
PRETRAIN_RESUMED = """\
2026-12-01 10:00:00 sft on Steam (tiny profile, seed 2; training dtype float32)
2026-12-01 10:00:01 stage pretrain: starting from the base model (seed 0)
2026-12-01 10:05:00 stage pretrain: checkpoint-50 saved
2026-12-01 13:00:00 sft on Steam (tiny profile, seed 2; training dtype float32)
2026-12-01 13:00:01 stage pretrain: starting from the base model (seed 0)
2026-12-01 13:00:01 stage pretrain: resuming from checkpoint-50 (its trainer state, optimizer and RNG)
2026-12-01 13:01:01 stage pretrain done
2026-12-01 13:01:01 stage sft: starting from pretrain (seed 884881051)
2026-12-01 13:11:01 stage sft done
2026-12-01 13:12:00 finished: sft, final stage sft
"""


def test_the_dry_run_times_pretraining_per_step_from_the_logs_of_the_same_dataset(tmp_path):
    """pipeline.logged_pretrain_seconds: seconds a step, the median over the committed runs that
    pretrained on the dataset in one go, times the steps asked for. Steam: 1800 s for 400 steps
    (4.5 s a step; MIDNIGHT) and 3600 s for 1200 steps (3.0 s a step), median 3.75 s, so 400 steps
    take 1500 s. The resumed pretraining (359 s logged, 0.9 s a step) is left out: with it the
    median would be 3.0 s. Goodreads has no such run, and no other dataset's stands in for it."""
    from sprec_lib.pipeline import logged_pretrain_seconds

    log_run(tmp_path, "Steam", "sft", "sft", MIDNIGHT, seed=1)
    longer = Run(tmp_path / "Steam-tiny" / "sft-seed0",
                 run_config("tiny", ["pretrain.max_steps=1200"], dataset="/x/Steam", method="sft", seed=0))
    (longer.folder / "log.txt").write_text(MIDNIGHT.replace("seed 1", "seed 0").replace("00:20:01", "00:50:00")
                                           .replace("00:40:01", "01:10:00").replace("00:41:00", "01:11:00"))
    write_json({"method": "sft", "final_stage": "sft"}, longer.folder / "FINISHED")
    log_run(tmp_path, "Steam", "sft", "sft", PRETRAIN_RESUMED, seed=2)
    assert run_compute(longer.folder)["stage_seconds"]["pretrain"] == 3599  # 23:50:01 -> 00:50:00
    seconds, runs = logged_pretrain_seconds("Steam", 400, tmp_path)
    assert runs == 2 and seconds == pytest.approx((4.5 + 3599 / 1200) / 2 * 400)
    assert logged_pretrain_seconds("Steam", 1200, tmp_path)[0] == pytest.approx(3 * seconds)
    assert logged_pretrain_seconds("Goodreads", 400, tmp_path) == (None, 0)
