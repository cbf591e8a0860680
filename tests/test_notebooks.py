"""Every notebook of the book executes in quick mode through papermill, and the values it records
(``sprec_lib.book.record``) are checked; the notebooks are committed without outputs and stay paired
with their jupytext scripts."""

from __future__ import annotations

import math

import nbformat
import papermill as pm
import pytest

from sprec_lib import book, claims, methods
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.quick import NOTEBOOK_SIZES

VERDICT_WORDS = set(claims.VERDICTS)

NOTEBOOKS = [spec.name for spec in book.NOTEBOOKS]
NOTEBOOKS_DIR = book.notebooks_dir()  # before any test moves $SPREC_ROOT


def execute(name: str, out_dir, **parameters) -> dict:
    """Run notebook ``name`` with papermill from ``out_dir`` (not the repository root); its values."""
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(out), parameters=parameters,
                        cwd=str(out_dir), kernel_name="python3", progress_bar=False)
    return book.recorded(out)


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    return write_sprec_folder(make_synthetic(n_items=60, sizes=(256, 32, 64), seed=3), tmp_path_factory.mktemp("data") / "synthetic")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_and_paired(name):
    book.check_pairing(name)  # NAME.ipynb and NAME.py hold the same cells
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: committed with outputs"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_are_typed_literals_with_quick(name):
    params = pm.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
    assert params["quick"]["inferred_type_name"] == "bool" and params["quick"]["default"] == "False"
    for p in params.values():
        assert p["inferred_type_name"] != "None", f"{name}: parameter {p['name']} has no type"


def test_theorem_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("SPREC_QUICK", "1")  # quick mode from the environment (the book test passes quick=True)
    v = execute("01_theorem", tmp_path)
    # Section 4.1: the closed form is the minimiser the numeric optimisation finds.
    assert v["theorem_max_abs_error"] < 1e-3
    assert abs(v["theorem_max_loss_gap"]) < 1e-8
    # DPO's optimum at beta = 0.1 puts more mass on the head than SFT's (= p_D), for every skew.
    for skew, masses in v["head_mass_at_beta"].items():
        assert masses["dpo"] > masses["sft"] and masses["dpo_after_sft"] >= masses["dpo"] - 1e-12, skew
    # Section 4.2: self-play negatives are uniform negatives re-weighted by pi_t / q.
    assert v["reweighting_loss_gap"] < 1e-12 and v["reweighting_grad_gap"] < 1e-12
    # Short DPO steps: self-play lowers the head mass every round (staying above the data's),
    # uniform negatives raise it every round.
    self_play, uniform = v["finite_self_head_mass"], v["finite_uniform_head_mass"]
    assert len(self_play) == NOTEBOOK_SIZES["01_theorem"]["iterations"] + 1
    assert all(b < a for a, b in zip(self_play, self_play[1:]))
    assert all(b > a for a, b in zip(uniform, uniform[1:]))
    assert min(self_play) > v["data_head_mass"]
    # The exact-optimum iteration at beta = 0.1 oscillates between the head and the tail.
    assert v["exact_rate_at_beta"] == -9.0
    exact = v["exact_self_head_mass"]
    assert exact[1] < 0.01 and exact[2] > 0.99


def test_datasets_notebook(tmp_path, monkeypatch, synthetic_folder):
    # A relative data_dir is read from the repository root ($SPREC_ROOT here), not from the cwd.
    monkeypatch.setenv("SPREC_ROOT", str(synthetic_folder.parent))
    v = execute("02_datasets", tmp_path, data_dir="synthetic", quick=True)
    assert v["dataset_name"] == "synthetic"
    assert v["stats_shape"][1] == 4 and v["stats_shape"][0] >= 10  # train, valid, test, all
    assert v["split_sizes"] == {"train": 256, "valid": 32, "test": 64}
    assert v["catalogue_items"] == 60
    top = v["popularity_counts_top"]
    assert top == sorted(top, reverse=True) and top[0] > top[-1] >= 1
    assert 0 < v["top_1pct_target_share"] <= 1
    for shares in (v["genre_history_shares"], v["genre_target_shares"]):
        assert set(shares) == {f"genre{g}" for g in range(4)}
        assert math.isclose(sum(shares.values()), 1.0) and min(shares.values()) > 0
    assert 0 <= v["genre_mgu_of_targets"] < 0.2


TABLE_WIDTH = 2 * 9 + 1  # mean and std of the 9 table metrics, and the seed count


def in_unit_range(means: dict) -> bool:
    return all(0.0 <= v <= 1.0 for m in means.values() for v in m.values())


def test_training_notebook(tmp_path, monkeypatch, synthetic_folder):
    """Quick mode trains every Table-1 method of the registry (a few steps each) under runs/quick and tabulates them."""
    monkeypatch.setenv("SPREC_ROOT", str(synthetic_folder.parent))
    v = execute("03_training", tmp_path, data_dir="synthetic", seeds=[5, 6], train=False, quick=True)
    table1 = list(methods.table1())  # the registry's Table-1 methods, in its table order
    assert v["runs_finished"] == v["runs_asked"] == len(table1)  # one seed in quick mode; quick runs are always made
    assert v["table_shape"] == [len(table1), TABLE_WIDTH]
    assert list(v["table_means"]) == table1 and in_unit_range(v["table_means"])
    assert len(v["differences_vs_sft"]) == (len(table1) - 1) * 9
    assert v["iterations"] == 2 and v["genres"] == 4
    # One SPRec run of T = 2: one chance per metric for its curve to turn (results.alternation).
    assert set(v["turns"]) == {"DivRatio@1", "ORRatio@1", "HR@5", "valid_ratio"}
    assert all(t in ("0/1", "1/1") for t in v["turns"].values()), v["turns"]
    # Quick runs evaluate after each SFT step too: what each step of the 2 iterations changed, 4 metrics.
    assert sorted(v["step_changes"]) == sorted(f"{m} it{t}" for m in ("DivRatio@1", "ORRatio@1", "HR@5", "valid_ratio")
                                               for t in (1, 2))
    assert all(set(c) == {"sft_step", "dpo_step"} and all(-1 <= x <= 1 for x in c.values()) for c in v["step_changes"].values())
    # The paper's MovieLens beside every method it has a row for (not our plain DPO), 8 metrics each.
    assert v["paper_beside_rows"] == 8 * sum(methods.get(m).paper is not None for m in methods.table1())
    assert set(v["negatives_head_share"]) == {"positive", "self"} and in_unit_range({"": v["negatives_head_share"]})
    assert len(list((synthetic_folder.parent / "runs" / "quick").glob("synthetic-tiny-*/sprec-seed5/FINISHED"))) == 1
    assert not (synthetic_folder.parent / "results").exists()  # quick runs are never exported


def test_ablations_and_negative_samples_notebooks(tmp_path, monkeypatch, synthetic_folder):
    monkeypatch.setenv("SPREC_ROOT", str(synthetic_folder.parent))
    v = execute("04_ablations", tmp_path, data_dir="synthetic", quick=True)
    assert v["runs_finished"] == v["runs_asked"] == 5
    assert list(v["table_means"]) == ["sft", "sprec", "sprec-nosft", "sprec-nodpo", "sprec-rn"]
    assert in_unit_range(v["table_means"])
    assert v["curve_labels"] == ["sprec", "sprec-nodpo", "sprec-nosft", "sprec-rn"]
    assert v["paper_beside_rows"] == 5 * 8  # Table 2's four rows and BIGRec, beside ours
    v = execute("05_negative_samples", tmp_path, data_dir="synthetic", quick=True)
    assert v["ratio_points"] == 2 and v["n_points"] == 2
    # Both sweeps are whole (two points, one seed): a verdict on one seed, never "pending".
    claims_ = list(claims.SWEEP_CLAIMS)
    assert list(v["ratio_verdict"]) == claims_[:1] and list(v["n_verdict"]) == claims_[1:]
    verdicts = set(v["ratio_verdict"].values()) | set(v["n_verdict"].values())
    assert verdicts <= VERDICT_WORDS and claims.PENDING not in verdicts


def test_results_and_scorecard_notebooks(tmp_path, monkeypatch, synthetic_folder):
    """The verdicts of every claim on the quick runs (made here if the tests above did not run), on
    the claims page and on the scorecard."""
    monkeypatch.setenv("SPREC_ROOT", str(synthetic_folder.parent))
    v = execute("06_results", tmp_path, datasets=["synthetic", "no-such-folder"], sweeps={"synthetic": [0]}, quick=True)
    assert v["datasets_with_runs"] == ["synthetic"]
    # synthetic is held to the paper's MovieLens: every claim the paper makes there ((a3) is CDs only)
    ids = [c.id for c in claims.ALL_CLAIMS.values() if "MovieLens" in c.datasets]
    assert "a3" not in ids and "b2" in ids
    assert list(v["verdict_grid"]) == ["synthetic"] and list(v["verdict_grid"]["synthetic"]) == ids
    assert set(v["verdict_grid"]["synthetic"].values()) <= VERDICT_WORDS
    assert set(v["verdict_seeds"]["synthetic"].values()) <= {0, 1}  # quick mode runs one seed
    assert v["paper_numbers"] == len(claims.paper_numbers()) == 383
    assert v["runs_missing"] == 0 and v["runs_asked"] > 0  # quick runs are always made
    # The paper passes its own claims on the datasets its text names (or they cannot be checked).
    for claim in claims.ALL_CLAIMS.values():
        passes = v["paper_passes"][claim.id]
        assert passes == "not checkable" or set(passes.split(", ")) >= set(claim.datasets), claim.id
    assert set(v["agreement_counts"]) == set()  # synthetic is none of the paper's datasets
    # SPRec - SFT at T and at T - 1 (the quick run has T = 2), for the three metrics of the stability figure.
    assert set(v["endpoint_effects"]) == {"synthetic HR@5", "synthetic DivRatio@1", "synthetic ORRatio@1"}
    assert all(len(pair) == 2 and all(-1 <= x <= 1 for x in pair) for pair in v["endpoint_effects"].values())
    s = execute("00_scorecard", tmp_path, datasets=["synthetic"], sweeps={"synthetic": [0]}, quick=True)
    assert s["scorecard_shape"] == [len(claims.ALL_CLAIMS), 1]  # a cell for every claim, "not claimed here" too
    cells = s["scorecard"]["synthetic"]
    assert cells["a3"][0] == claims.NOT_CLAIMED
    assert {k: x[0] for k, x in cells.items() if x[0] in claims.VERDICTS} == v["verdict_grid"]["synthetic"]


def tracked_copy(dest):
    """The working tree's files that git tracks or would track (committed, modified or new; not the
    ignored ones: no runs/, no data folders, no virtual environment), copied into ``dest``: a fresh
    clone of the work in progress."""
    import shutil
    import subprocess

    root = book.repo_root()
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_claims_page_on_a_fresh_clone_lists_every_dataset(tmp_path, monkeypatch):
    """Issue 14, section 5: on a clone without ../shared (and without $SPREC_PAPER_DATA) and without
    data/ml-1m, the claims page and the scorecard, run as `sprec book run` would run them (no
    training), read the committed runs of all five datasets; they train nothing."""
    import subprocess
    import sys

    clone = tracked_copy(tmp_path / "clone")
    assert (clone / "results" / "runs").is_dir() and not (clone / "runs").exists()
    monkeypatch.setenv("SPREC_ROOT", str(clone))
    import os

    # The kernels import the clone's sprec_lib (before the editable install's finder).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")])))
    where = subprocess.run([sys.executable, "-c", "import sprec_lib; print(sprec_lib.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(clone)), where
    monkeypatch.setenv("SPREC_PAPER_DATA", str(tmp_path / "no-such-folder"))
    monkeypatch.delenv("SPREC_QUICK", raising=False)
    specs = [s for s in book.NOTEBOOKS if s.name in ("00_scorecard", "06_results")]
    from sprec_lib.book.runner import _jobs

    jobs = _jobs(specs, tmp_path / "executed", list(book.DATASETS), "tiny", [0, 1, 2], quick=False)
    assert [j.spec.name for j in jobs] == ["00_scorecard", "06_results"]
    # The datasets by name although no folder is here: the same parameters (and page hash) as on a
    # machine with the data, so `make book` on this clone finds the committed pages up to date.
    assert all(j.parameters["datasets"] == list(book.DATASETS) and j.parameters["quick"] is False for j in jobs)
    def files():
        return {p.relative_to(clone) for p in clone.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    before = files()
    values = {}
    for job in jobs:
        pm.execute_notebook(str(clone / "notebooks" / job.source.name), str(tmp_path / job.output.name),
                            parameters=job.parameters, cwd=str(clone), kernel_name="python3", progress_bar=False)
        values[job.spec.name] = book.recorded(tmp_path / job.output.name)
    five = ["ml-1m", "MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam"]
    v = values["06_results"]
    assert list(v["verdict_grid"]) == five and v["datasets_with_runs"] == sorted(five)
    for dataset in five:
        assert set(v["verdict_grid"][dataset]) >= {"a1", "a2", "b"}, dataset
        assert set(v["verdict_grid"][dataset].values()) <= VERDICT_WORDS
        assert min(v["verdict_seeds"][dataset][c] for c in ("a1", "a2", "b")) >= 1, dataset  # read, not pending
    assert v["paper_numbers"] == 383 and v["agreement_counts"]["all"]["compared"] > 0
    assert list(values["00_scorecard"]["scorecard"]) == five
    assert values["00_scorecard"]["scorecard_shape"] == [len(claims.ALL_CLAIMS), 5]
    # Nothing was trained, exported or written outside the executed copies.
    assert not (clone / "runs").exists() and files() == before



def test_committed_pages_are_up_to_date_on_a_fresh_clone(tmp_path, monkeypatch):
    """Issue 14, section 5: on a fresh clone (no ../shared, no runs/), every committed executed page
    carries the hash of what it would be made from today, so `make book` re-executes nothing and
    leaves `git status` clean. Fails when a notebook, the library or a committed result changed
    without `sprec book run` and a commit of book/executed/. The dataset pages too, whose folders
    a clone lacks (../shared's paper datasets, the prepared data/ml-1m): by the folder hash each
    recorded when it was made."""
    from sprec_lib.book.runner import stale_pages

    clone = tracked_copy(tmp_path / "clone")
    monkeypatch.setenv("SPREC_ROOT", str(clone))
    # The paper's folders where a clone of the repository would look for them, ../shared beside it:
    # not there (tmp_path holds no shared/), and the pages' data_dir parameters as committed.
    monkeypatch.delenv("SPREC_PAPER_DATA", raising=False)
    assert not (clone.parent / "shared").exists() and not (clone / "data" / "ml-1m").exists()
    monkeypatch.delenv("SPREC_QUICK", raising=False)
    executed = clone / "book" / "executed"
    stale = stale_pages(executed)
    assert not stale, f"run `sprec book run` and commit book/executed/: stale {stale}"
    # every committed page is among those checked
    from sprec_lib.book.runner import _jobs
    checked = {j.output.name for j in _jobs(book.NOTEBOOKS, executed, list(book.DATASETS), "tiny", [0, 1, 2],
                                            quick=False, keep_missing=True)}
    assert checked == {p.name for p in executed.glob("*.ipynb")}


def test_result_files_git_does_not_track_are_named(tmp_path, monkeypatch):
    """A run a lane exported but nobody committed enters the pages' hashes here and is missing from a
    fresh clone (the CI failure of 2026-12-03): `sprec book run` names such files. Here one untracked
    file among tracked ones, then none once it is added."""
    import subprocess

    from sprec_lib.book.runner import untracked_results

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results" / "runs" / "a-tiny" / "sft-seed0").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "a-tiny" / "sft-seed0" / "FINISHED").write_text("")
    (tmp_path / "results" / "cllmr").mkdir()
    (tmp_path / "results" / "cllmr" / "x.json").write_text("{}")
    (tmp_path / "notebooks.txt").write_text("not a result")
    git("add", "results/cllmr/x.json")
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    assert untracked_results() == ["results/runs/a-tiny/sft-seed0/FINISHED"]
    git("add", "results")
    assert untracked_results() == []
