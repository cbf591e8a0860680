"""The pretrained-LLM chapter (``notebooks/08_pretrained``, ``sprec_lib.pretrained``): which runs it
asks for, which claims they can test, and, under papermill in its default reading mode, a table,
verdicts and answers from hand-made exported runs, computed here by hand; it trains nothing and
lists each missing run with its command."""

from __future__ import annotations

import math

import pandas as pd
import papermill as pm
import pytest

from sprec_lib import book, claims, pretrained
from sprec_lib.runs import Run, write_json

NOTEBOOK = book.notebooks_dir() / "08_pretrained.ipynb"  # before any test moves $SPREC_ROOT
Z = 1.959963984540054


def test_the_chapters_runs_and_claims():
    specs = pretrained.specs(["x/MovieLens", "x/Goodreads"], "small", [0])
    assert [s.label for s in specs] == ["sft", "dpo", "sdpo", "sprec", "sprec-rn"] * 2
    rn = specs[4]
    assert rn.overrides == ("sprec.negatives=random",) and rn.folder("results/runs").as_posix() == \
        "results/runs/MovieLens-small/sprec-rn-seed0"
    assert "--profile small" in rn.command() and "--variant rn --set sprec.negatives=random" in rn.command()
    # (a1) DPO, (b), (b3) SPRec and (e) SPRec-RN; (a2) needs DMPO, (b2) the other baselines, (c), (d) other ablations.
    assert [c.id for c in pretrained.testable_claims()] == ["a1", "b", "b3", "e"]
    assert [c.id for c in pretrained.testable_claims(["sft", "sprec"])] == ["b", "b3"]


def test_placeholders_make_pending_verdicts_in_order():
    rows = pd.DataFrame([{"dataset": "Goodreads", "profile": "tiny", "label": "sft", "seed": 0, "run": None,
                          "rows": 1000, "HR@5": 0.01}])
    both = pretrained.placeholders(rows, ["MovieLens", "Goodreads"], ["small", "tiny"])
    assert list(zip(both["dataset"], both["profile"])) == [("MovieLens", "small"), ("MovieLens", "tiny"),
                                                           ("Goodreads", "small"), ("Goodreads", "tiny")]
    table = claims.verdict_table(claims.check_claims(both, pretrained.testable_claims()))
    assert set(table["verdict"]) == {claims.PENDING} and len(table) == 4 * 4


def test_answers_are_pending_without_runs():
    frame = pretrained.answers(pd.DataFrame(), pd.DataFrame(), ["MovieLens"], "small", "tiny")
    assert list(frame["question"]) == list(pretrained.QUESTIONS) and set(frame["answer"]) == {claims.PENDING}
    # The paper's BIGRec ORRatio@1 on MovieLens is read from its table, not written here.
    bigrec = claims.paper_numbers().query("dataset == 'MovieLens' and method == 'sft' and metric == 'ORRatio@1'")
    assert f"the paper's BIGRec: {bigrec['value'].iloc[0]:.3f}" in frame.loc[0, "text"]


def test_orratio_splits_by_whether_the_answer_named_a_title():
    """orratio_by_answer: each kind's own three favourite items over its own rows, counted by hand:
    named [1, 1, 2, 3, 4] -> (2 + 1 + 1) / 5; grounded [7, 7, 7, 8] -> 4 / 4."""
    data = {"topk": [[1, 9], [1, 9], [2, 9], [3, 9], [4, 9], [7, 9], [7, 9], [7, 9], [8, 9]],
            "valid": [True] * 5 + [False] * 4}
    assert pretrained.orratio_by_answer(data) == {"named": {"rows": 5, "ORRatio@1": 0.8}, "grounded": {"rows": 4, "ORRatio@1": 1.0}}
    # at 2: named 10 slots, item 9 five times, then 1 twice, then one of 2/3/4 -> 8 / 10
    assert pretrained.orratio_by_answer(data, k=2)["named"] == {"rows": 5, "ORRatio@2": 0.8}
    assert pretrained.orratio_by_answer({"topk": [[1]], "valid": [True]})["grounded"]["rows"] == 0
    assert math.isnan(pretrained.orratio_by_answer({"topk": [[1]], "valid": [True]})["grounded"]["ORRatio@1"])
    assert pretrained.orratio_by_answer({"topk": [[1]]}) is None and pretrained.orratio_by_answer(None) is None

    # In the DPO answer's note: the first seed's run and its own SFT start (label "sft" of that run).
    rows = pd.DataFrame([{"dataset": "MovieLens", "profile": "small", "label": label, "seed": 0, "run": f"r-{label}",
                          "valid_ratio": ratio} for label, ratio in (("sft", 0.9), ("dpo", 5 / 9))])
    start = {"topk": [[1]] * 8 + [[2]], "valid": [True] * 8 + [False]}
    asked = []

    def row_data(run, label=None):
        asked.append((run, label))
        return start if label == "sft" else data

    note = pretrained._format_note(rows, "MovieLens", "small", "dpo", row_data=row_data)
    assert asked == [("r-dpo", None), ("r-dpo", "sft")]
    assert ("Split by answer (seed 0), ORRatio@1 is 0.800 (5 rows; its SFT start's: 1.000, 8 rows) among the answers "
            "that name a title, and 1.000 (4 rows; its SFT start's: 1.000, 1 rows) among the grounded ones.") in note
    assert "Split" not in pretrained._format_note(rows, "MovieLens", "small", "dpo", row_data=lambda run, label=None: None)
    # With each answer's kind (an export's "answer"): what the grounded ones were, counted by hand.
    data["answer"] = ["title"] * 5 + ["wrong year", "wrong year", "wrong year, grounded elsewhere", "other"]
    start["answer"] = ["title"] * 8 + ["wrong year"]
    assert pretrained.orratio_by_answer(data)["kinds"] == {"title": 5, "wrong year": 2, "wrong year, grounded elsewhere": 1,
                                                           "other": 1}
    note = pretrained._format_note(rows, "MovieLens", "small", "dpo", row_data=row_data)
    assert ("Of those 4 (seed 0), 3 (75.0%) are a catalogue title's name with a wrong year (its SFT start: 1 of 1, "
            "100.0%), and grounding sends 66.7% of them to the title of that name.") in note


# -- the page under papermill ------------------------------------------------------------------------


def metrics(hr5, or1, or5, div1, div5, stage, mgu1=0.05):
    """A metrics file of the shape the evaluation writes (1,000 test rows)."""
    return {"valid_ratio": 1.0, "rows": 1000, "mode": "grounded", "split": "test", "stage": stage,
            "@1": {"HR": hr5 / 2, "NDCG": hr5 / 2, "DivRatio": div1, "ORRatio": or1, "MGU": mgu1},
            "@5": {"HR": hr5, "NDCG": hr5 / 2, "DivRatio": div5, "ORRatio": or5, "MGU": mgu1}}


def fake_export(spec, root, evaluations: dict, final: str) -> Run:
    """An exported run folder of ``spec`` with hand-made evaluations (label -> metrics)."""
    run = Run(spec.folder(root), spec.config(), spec.variant)
    for label, m in evaluations.items():
        run.record_metrics(label, m)
    run.finish(final)
    return run


SFT = {"hr5": 0.030, "or1": 0.30, "or5": 0.10, "div1": 0.20, "div5": 0.15}
NEGATIVES = [{"iteration": 1, "kind": "positive", "titles": 512, "head_share": 0.40, "top3_share": 0.01, "distinct": 0.6},
             {"iteration": 1, "kind": "self", "titles": 500, "head_share": 0.90, "top3_share": 0.30, "distinct": 0.1,
              "catalogue_share": 0.976},
             {"iteration": 2, "kind": "positive", "titles": 512, "head_share": 0.42, "top3_share": 0.01, "distinct": 0.6},
             {"iteration": 2, "kind": "self", "titles": 500, "head_share": 0.70, "top3_share": 0.20, "distinct": 0.2,
              "catalogue_share": 0.3}]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A repository root with hand-made exports: MovieLens small SFT, DPO and SPRec (two iterations),
    and tiny's SFT; nothing on Goodreads; no dataset folder."""
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    monkeypatch.setenv("SPREC_PAPER_DATA", str(tmp_path / "no-such-folder"))
    monkeypatch.delenv("SPREC_QUICK", raising=False)
    results = tmp_path / "results" / "runs"
    data = pretrained.folders(["MovieLens", "Goodreads"])
    small = {s.label: s for s in pretrained.specs([data["MovieLens"]], "small", [0])}
    tiny = {s.label: s for s in pretrained.specs([data["MovieLens"]], "tiny", [0])}
    sft = metrics(**SFT, stage="sft")
    fake_export(small["sft"], results, {"sft": sft}, "sft")
    # DPO: ORRatio up (+0.15 at 1, +0.10 at 5), DivRatio down: every part of (a1) clear of its bound.
    # Its answers name a catalogue title in 60% of the rows (SFT: 100%).
    fake_export(small["dpo"], results, {"sft": sft, "dpo": {**metrics(0.028, 0.45, 0.20, 0.12, 0.10, "dpo"),
                                                            "valid_ratio": 0.6}}, "dpo")
    # SPRec: HR@5 0.028 against 0.030 (within the bound: kept), DivRatio up, ORRatio down.
    it1 = metrics(0.029, 0.20, 0.07, 0.30, 0.22, "it1-dpo")
    it2 = metrics(0.028, 0.12, 0.05, 0.40, 0.30, "it2-dpo")
    run = fake_export(small["sprec"], results, {"sft": sft, "it1": it1, "it2": it2}, "it2-dpo")
    write_json(NEGATIVES, run.folder / "negatives_popularity.json")
    fake_export(tiny["sft"], results, {"sft": metrics(0.010, 0.60, 0.30, 0.06, 0.05, "sft")}, "sft")
    return {"root": tmp_path, "small": small, "tiny": tiny, "data": data}


def test_reading_mode_tabulates_judges_and_lists_the_missing(root, tmp_path):
    out = tmp_path / "08_pretrained.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={}, cwd=str(tmp_path), kernel_name="python3",
                        progress_bar=False)
    v = book.recorded(out)
    assert v["runs_asked"] == {"small": 10, "tiny": 10} and v["runs_found"] == {"small": 3, "tiny": 1}
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert v["missing_lane_hours"] is None  # the fake dataset folders cannot be read: no estimate, and no crash
    # Every missing run with the command that makes it: small's S-DPO and SPRec-RN on MovieLens and
    # all of Goodreads, tiny's all but SFT.
    data = root["data"]
    missing = [s for s in pretrained.specs(data.values(), "small", [0]) + pretrained.specs(data.values(), "tiny", [0])
               if not (s.dataset == "MovieLens" and (s.profile, s.label) in
                       {("small", "sft"), ("small", "dpo"), ("small", "sprec"), ("tiny", "sft")})]
    assert v["missing_commands"] == [s.command() for s in missing] and len(missing) == 16
    # The table: small beside tiny beside the paper's.
    paper = claims.paper_numbers().set_index(["dataset", "method", "metric"])["value"]
    sft = v["table"]["MovieLens"]["sft"]["ORRatio@1"]
    assert sft == {"small": 0.30, "tiny": 0.60, "paper": paper[("MovieLens", "sft", "ORRatio@1")]}
    assert v["table"]["MovieLens"]["sprec"]["HR@5"]["small"] == 0.028  # SPRec's last iteration
    assert v["table"]["MovieLens"]["dpo"]["DivRatio@1"] == {"small": 0.12, "tiny": None, "paper": None}
    assert v["table"]["Goodreads"]["sprec-rn"]["MGU@1"]["small"] is None
    assert v["curve_iterations"] == {"MovieLens": 2}
    # SPRec's hand-made curves are monotone (HR@5 0.030, 0.029, 0.028; ORRatio@1 0.30, 0.20, 0.12;
    # DivRatio@1 0.20, 0.30, 0.40): none turns at its one chance.
    assert {k: v["turns"]["MovieLens"][k] for k in ("sprec HR@5", "sprec ORRatio@1", "sprec DivRatio@1")} == \
        {"sprec HR@5": "0/1", "sprec ORRatio@1": "0/1", "sprec DivRatio@1": "0/1"}
    assert v["negatives_head_share"] == {"small": {"MovieLens": {"positive": 0.41, "self": 0.8}}}
    assert v["negatives_catalogue_share"] == {"MovieLens/small/sprec": {"1": 0.976, "2": 0.3}}
    # The verdicts, by the single-seed bounds (no per-row data, no seed spread among these runs):
    # e.g. (a1)'s ORRatio@1 part, +0.15 against z x sqrt(0.45 x 0.55 / 1000 + 0.30 x 0.70 / 1000).
    band = Z * math.hypot(math.sqrt(0.45 * 0.55 / 1000), math.sqrt(0.30 * 0.70 / 1000))
    assert 0.15 > band
    # (b3)'s MGU@1 has no bound from its value alone (no per-row data here): never clear.
    assert v["verdicts"]["small"] == {"MovieLens": {"a1": "reproduced", "b": "reproduced",
                                                    "b3": "inconclusive (within noise)", "e": "pending"},
                                      "Goodreads": {"a1": "pending", "b": "pending", "b3": "pending", "e": "pending"}}
    assert set(v["verdicts"]["tiny"]["MovieLens"].values()) == {"pending"}
    # The three questions: small's SFT (0.30) is clearly less collapsed than tiny's (0.60); its DPO
    # raises ORRatio; its SPRec keeps HR@5. Goodreads has no runs.
    assert v["answers"] == {"sft_collapse": {"MovieLens": "yes", "Goodreads": "pending"},
                            "dpo_orratio": {"MovieLens": "yes", "Goodreads": "pending"},
                            "sprec_hr": {"MovieLens": "yes", "Goodreads": "pending"}}
    texts = v["answer_texts"]
    assert "catalogue title in 60.0% of the test rows (valid_ratio; its SFT start: 100.0%)" in texts["dpo_orratio"]["MovieLens"]
    assert "catalogue title in 100.0% of the test rows (valid_ratio; its SFT start: 100.0%)" in texts["sprec_hr"]["MovieLens"]
    assert "valid_ratio" not in texts["dpo_orratio"]["Goodreads"]  # pending: nothing to say
    assert v["setup"]["SPRec rows per iteration"] == {"small": "512", "tiny": "2,048", "paper": "2,048"}


def test_the_book_hashes_the_committed_runs_it_reads(tmp_path, monkeypatch):
    """The page takes `runs` and `train`, not the run-level profile, seeds or datasets: its parameters
    are its own on every machine, and a committed run changes its hash."""
    from sprec_lib.book.runner import _content_hash, _jobs

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "08_pretrained.ipynb").write_bytes(NOTEBOOK.read_bytes())
    specs = [s for s in book.NOTEBOOKS if s.name == "08_pretrained"]
    job, = _jobs(specs, tmp_path / "executed", ["ml-1m", "Steam"], "paper", [0, 1, 2], quick=False)
    assert job.parameters == {"quick": False, "train": False} and job.output.name == "08_pretrained.ipynb"
    before = _content_hash(job)
    write_json({"x": 1}, tmp_path / "results" / "runs" / "MovieLens-small" / "sft-seed0" / "FINISHED")
    assert _content_hash(job) != before


def test_quick_mode_runs_a_tiny_model_on_a_synthetic_folder(tmp_path, monkeypatch):
    """Quick mode needs no dataset and never loads the pretrained model: quick runs of the tiny
    profile on quick mode's synthetic folder, under runs/quick, never exported."""
    from sprec_lib.quick import QUICK_DATA

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "08_pretrained.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={"quick": True}, cwd=str(tmp_path), kernel_name="python3",
                        progress_bar=False)
    v = book.recorded(out)
    assert (tmp_path / QUICK_DATA / "train.json").is_file() and not (tmp_path / "results").exists()
    assert v["runs_asked"] == v["runs_found"] == {"tiny": len(pretrained.LABELS)} and v["missing_commands"] == []
    assert list(v["table"]) == ["synthetic"] and list(v["table"]["synthetic"]) == list(pretrained.LABELS)
    assert v["setup"]["profile"] == {"tiny": "tiny", "paper": "paper"}
    assert set(v["verdicts"]["tiny"]["synthetic"]) == {"a1", "b", "b3", "e"}
    assert set(v["verdicts"]["tiny"]["synthetic"].values()) <= set(claims.VERDICTS) - {claims.PENDING}
    assert set(v["answers"]) == set(pretrained.QUESTIONS) and v["curve_iterations"] == {"synthetic": 2}
    assert set(v["negatives_head_share"]["tiny"]["synthetic"]) == {"positive", "self", "random"}
    shares = v["negatives_catalogue_share"]  # computed from the quick runs' negatives (SPRec's own only)
    assert set(shares) == {"synthetic/tiny/sprec"} and all(0 <= x <= 1 for x in shares["synthetic/tiny/sprec"].values())
