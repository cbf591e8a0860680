"""The book builds strictly from quick notebook runs, loads nothing from other hosts, and renders in a
browser: headless Chromium typesets its math with the book's own MathJax and loads every image.

The browser test drives Debian's ``chromium`` (``apt-get install chromium``) through the Chrome
DevTools protocol with ``websocket-client``; it is skipped when either is missing."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sprec_lib import book, claims
from sprec_lib.book.runner import _content_hash, _jobs, stale_pages
from sprec_lib.cli import build_parser, cmd_book_build, cmd_book_run
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.quick import NOTEBOOK_SIZES

BOOK_SOURCES = book.book_dir()
NOTEBOOK_SOURCES = book.notebooks_dir()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def copy_book_sources(dest: Path) -> Path:
    """The book's sources (not its executed copies, build or MathJax) in ``dest``."""
    shutil.copytree(BOOK_SOURCES, dest, ignore=shutil.ignore_patterns("_build", "executed", ".ipynb_checkpoints"))
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run every notebook in quick mode (the dataset notebook on a synthetic folder) into a copy of
    the book, and build it strictly; the HTML folder and the executed copies. The repository root
    is a temporary folder with a copy of the notebooks (``$SPREC_ROOT``), so that the quick runs
    land there and not in the checkout's ``runs/``."""
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(NOTEBOOK_SOURCES, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = pytest.MonkeyPatch()
    env.setenv("SPREC_ROOT", str(root))
    data = write_sprec_folder(make_synthetic(n_items=50, sizes=(200, 20, 40), seed=2), root / "data" / "synthetic")
    src = copy_book_sources(root / "book")
    warnings_before = os.environ.get("PYTHONWARNINGS", "")
    t0 = time.perf_counter()
    executed = book.run_notebooks(datasets=[str(data)], quick=True, book=src, log_output=False, sweeps={str(data): [0]})
    t1 = time.perf_counter()
    index = book.build_book(strict=True, book=src, output=root / "out")
    t2 = time.perf_counter()
    print(f"notebooks {t1 - t0:.1f} s, book build {t2 - t1:.1f} s")
    yield {"html": index.parent, "executed": executed, "book": src, "data": data, "warnings_before": warnings_before,
           "root": root}
    env.undo()


def test_book_builds_strictly(built):
    html = built["html"]
    names = sorted(p.name for p in built["executed"])
    assert names == ["00_scorecard.ipynb", "01_theorem.ipynb", "02_datasets-synthetic.ipynb", "03_training-synthetic.ipynb",
                     "04_ablations-synthetic.ipynb", "05_negative_samples-synthetic.ipynb", "06_results.ipynb", "07_cllmr-ml-100k.ipynb",
                     "07_cllmr-ml-1m.ipynb", "08_pretrained.ipynb"]
    for page in ["intro", "executed/00_scorecard", "executed/01_theorem", "datasets", "executed/02_datasets-synthetic", "methods",
                 "reproducibility", "howto", "results", "executed/03_training-synthetic", "executed/04_ablations-synthetic",
                 "executed/05_negative_samples-synthetic", "executed/06_results", "executed/07_cllmr-ml-1m", "executed/07_cllmr-ml-100k",
                 "executed/08_pretrained"]:
        assert (html / f"{page}.html").is_file(), page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # Each dataset's page is titled by its dataset.
    assert "<title>synthetic: the data" in (html / "executed" / "02_datasets-synthetic.html").read_text(encoding="utf-8")
    assert "<title>synthetic: Table 2, the ablations" in (html / "executed" / "04_ablations-synthetic.html").read_text(encoding="utf-8")
    # The intro cites the theorem's recorded error with a glue role.
    recorded = book.recorded(built["book"] / "executed" / "01_theorem.ipynb")
    assert f"{recorded['theorem_max_abs_error']:.1e}" in (html / "intro.html").read_text(encoding="utf-8")
    # The training page shows its figures (SPRec per iteration, GU per genre) as images.
    training = (html / "executed" / "03_training-synthetic.html").read_text(encoding="utf-8")
    assert training.count("<img") >= 2 and "<title>synthetic: Table 1" in training


def test_executed_copies_skip_tqdms_ipprogress_warning(built):
    """tqdm's IProgress warning (it names the venv's absolute path) is filtered in the kernels, and
    ``PYTHONWARNINGS`` is put back afterwards. (Other libraries' warnings in cells that train still
    name the venv; the committed pages train nothing.)"""
    assert os.environ.get("PYTHONWARNINGS", "") == built["warnings_before"]
    for path in built["executed"]:
        text = path.read_text()
        assert "IProgress not found" not in text, path.name
        assert json.loads(text)["metadata"]["papermill"]["input_path"].startswith("notebooks/"), path.name


def test_theorem_page_has_no_warning(built):
    """The theorem page trains nothing: not one warning on its stderr (a tensor turned into a float
    while it still required grad used to print one)."""
    theorem = json.loads((built["book"] / "executed" / "01_theorem.ipynb").read_text())
    stderr = ["".join(o["text"]) for c in theorem["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not [t for t in stderr if "Warning" in t], stderr


def test_no_page_loads_from_another_host(built):
    assert book.cdn_references(built["html"]) == []
    page = (built["html"] / "executed" / "01_theorem.html").read_text(encoding="utf-8")
    assert 'src="../_static/mathjax/tex-chtml.js' in page


def test_unchanged_notebooks_are_skipped(built, capsys):
    copies = built["executed"]
    first = copies[[p.name for p in copies].index("01_theorem.ipynb")]
    before = {p: p.stat().st_mtime_ns for p in copies}
    again = book.run_notebooks(datasets=[str(built["data"])], quick=True, book=built["book"], log_output=False,
                               sweeps={str(built["data"]): [0]})
    assert again == copies and {p: p.stat().st_mtime_ns for p in copies} == before
    assert capsys.readouterr().out.count("up to date") == len(copies)
    metadata = json.loads(first.read_text(encoding="utf-8"))["metadata"]
    meta = metadata["sprec_book"]
    assert meta["parameters"] == {"quick": True} and meta["source"] == "notebooks/01_theorem.ipynb"
    # papermill's own record names the notebook from the repository root, not this machine's path.
    assert metadata["papermill"]["input_path"] == "notebooks/01_theorem.ipynb"


def test_a_page_whose_reads_a_later_page_changed_is_run_again(tmp_path, monkeypatch, capsys):
    """Page ``a`` hashes ``results/x``; page ``b``, run after it, writes into ``results/x`` (as the
    CLLMR chapter's ML-100K copy exports runs its ML-1M copy reads). One call must leave both current:
    ``a`` runs twice, ``b`` once, and the second call runs nothing."""
    import jupytext

    from sprec_lib.book.runner import NotebookSpec, run_notebooks

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "results" / "x").mkdir(parents=True)
    sources = {"a": "import pathlib\nprint(len(list(pathlib.Path('results/x').iterdir())))\n",
               "b": "import pathlib\npathlib.Path('results/x/new.txt').write_text('exported')\n"}
    for name, code in sources.items():
        script = tmp_path / "notebooks" / f"{name}.py"
        script.write_text("# %%\n" + code, encoding="utf-8")
        nb = jupytext.read(str(script))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, str(script.with_suffix(".ipynb")))
    specs = [NotebookSpec("a", reads=("results/x",)), NotebookSpec("b")]
    book_dir = tmp_path / "book"
    run_notebooks(notebooks=specs, book=book_dir, quick=True, log_output=False)
    out = capsys.readouterr().out
    assert out.count("running a.ipynb") == 1 and out.count("running b.ipynb") == 1
    assert out.count("again (a page after it changed what it reads): a.ipynb") == 1 and "again" not in out.replace(
        "again (a page after it changed what it reads): a.ipynb", "")
    run_notebooks(notebooks=specs, book=book_dir, quick=True, log_output=False)
    assert capsys.readouterr().out.count("up to date") == 2


def test_changed_dataset_files_change_the_hash(built):
    jobs = _jobs(book.NOTEBOOKS, built["book"] / "executed", [str(built["data"])], "tiny", [0], quick=True)
    theorem, datasets = (next(j for j in jobs if j.spec.name == n) for n in ("01_theorem", "02_datasets"))
    before = [_content_hash(j) for j in (theorem, datasets)]
    train = built["data"] / "train.json"
    original = train.read_bytes()
    try:  # the folder's hash is of its files' contents (not their times): change one
        train.write_bytes(original + b"\n")
        after = [_content_hash(j) for j in (theorem, datasets)]
    finally:
        train.write_bytes(original)
    assert before[0] == after[0] and before[1] != after[1]  # the theorem's copy does not read data


def test_library_code_is_in_the_hash_and_its_prose_is_not(tmp_path):
    from sprec_lib.book.runner import library_fingerprint

    module = tmp_path / "lib" / "m.py"
    module.parent.mkdir()

    def fingerprint(text):
        module.write_text(text)
        return library_fingerprint(tmp_path / "lib")

    base = fingerprint('"""A module."""\n\ndef f(x):\n    """Twice x."""\n    return 2 * x\n')
    # docstrings, comments and layout: the same code
    assert fingerprint('"""Another text."""\n# a comment\ndef f(x):\n    """Two x."""\n\n    return 2*x  # why\n') == base
    assert fingerprint('def f(x):\n    return 2 * x\n') == base
    # what it computes: another fingerprint
    assert fingerprint('def f(x):\n    return 3 * x\n') != base
    (tmp_path / "lib" / "n.py").write_text("y = 1\n")  # a new module too
    assert fingerprint('def f(x):\n    return 2 * x\n') != base  # n.py is part of it now


def test_a_dataset_page_is_checked_without_its_folder(built, capsys):
    """A dataset's copy records the folder's hash, so whether it is up to date can be told where
    the folder is missing (a fresh clone; data/ml-1m not prepared): by that record. A run skips such
    a page, and says so when the page is stale (it once went stale unnoticed this way)."""
    executed, data = built["book"] / "executed", built["data"]
    # The dataset pages only: the claim pages take the datasets whose folders are here (by name for
    # the book's own datasets, so a clone without them hashes the same; this folder has no name).
    per_folder = [s for s in book.NOTEBOOKS if s.per_folder]
    args = dict(datasets=[str(data)], seeds=(0,), sweeps={str(data): [0]}, quick=True, notebooks=per_folder)
    page = executed / "02_datasets-synthetic.ipynb"
    meta = json.loads(page.read_text(encoding="utf-8"))["metadata"]["sprec_book"]
    assert meta["data_hash"] == book.runner.folder_hash(data)
    assert stale_pages(executed, **args) == []
    moved = data.with_name(data.name + "-away")
    original = page.read_text(encoding="utf-8")
    data.rename(moved)
    try:
        assert stale_pages(executed, **args) == []  # by the recorded hash
        nb = json.loads(original)
        nb["metadata"]["sprec_book"]["data_hash"] = "0" * 16  # as if made from other files
        page.write_text(json.dumps(nb), encoding="utf-8")
        assert stale_pages(executed, **args) == ["02_datasets-synthetic.ipynb"]
        capsys.readouterr()
        book.run_notebooks(book=built["book"], log_output=False, **args)
        out = capsys.readouterr().out
        assert "skip 02_datasets on" in out and "warning: 02_datasets-synthetic.ipynb is stale and was not run" in out
        assert "warning: 03_training-synthetic.ipynb" not in out  # skipped too, but up to date
    finally:
        moved.rename(data)
        page.write_text(original, encoding="utf-8")
    assert stale_pages(executed, **args) == []


def test_missing_dataset_is_skipped_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPREC_PAPER_DATA", str(tmp_path / "nowhere"))
    jobs = _jobs(book.NOTEBOOKS, tmp_path, ["Steam"], "tiny", [0], quick=True, sweeps={"Steam": [0, 1, 2]})
    # They read committed results (results/runs, results/cllmr), not a dataset folder.
    assert [j.spec.name for j in jobs] == ["00_scorecard", "01_theorem", "06_results", "07_cllmr", "07_cllmr",
                                           "08_pretrained"]
    # The CLLMR chapter: one copy per dataset, each with its own side information.
    cllmr = [j for j in jobs if j.spec.name == "07_cllmr"]
    assert [j.output.name for j in cllmr] == ["07_cllmr-ml-1m.ipynb", "07_cllmr-ml-100k.ipynb"]
    assert [(j.parameters["dataset"], j.parameters["profiles"]) for j in cllmr] == [("ml-1m", "llm"), ("ml-100k", "title-genres")]
    out = capsys.readouterr().out
    assert "skip 02_datasets on Steam" in out and "skip 03_training on Steam" in out
    assert "skip 04_ablations on Steam" in out and "skip 05_negative_samples on Steam" in out
    # The claim pages get the sweeps of the datasets asked for, by name, whether or not the folder is here.
    assert jobs[0].parameters["sweeps"] == {"Steam": [0, 1, 2]}


def test_paths_quick_mode_and_records(tmp_path, monkeypatch):
    assert book.resolve("data/ml-1m") == book.repo_root() / "data" / "ml-1m"
    assert book.resolve(tmp_path) == tmp_path
    assert book.dataset_folder("ml-1m") == book.repo_root() / "data" / "ml-1m"
    monkeypatch.setenv("SPREC_PAPER_DATA", str(tmp_path))
    assert book.dataset_folder("Goodreads") == tmp_path / "Goodreads"
    monkeypatch.delenv("SPREC_QUICK", raising=False)
    assert book.sizes("01_theorem", False, n_items=30, iterations=8).n_items == 30
    monkeypatch.setenv("SPREC_QUICK", "1")
    assert book.sizes("01_theorem", False, n_items=30, iterations=8).n_items == NOTEBOOK_SIZES["01_theorem"]["n_items"]
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "metadata": {"scrapbook": {"name": "x", "mime_prefix": "application/papermill.record/"}},
         "data": {"application/papermill.record/text/plain": "[1.5, 2]"}}]}]}
    assert book.recorded(nb) == {"x": [1.5, 2]}


def test_cli_book_commands():
    args = build_parser().parse_args(["book", "run", "--quick", "--datasets", "ml-1m", "Steam", "--force"])
    assert args.func is cmd_book_run and args.quick and args.force and args.datasets == ["ml-1m", "Steam"]
    assert build_parser().parse_args(["book", "build"]).func is cmd_book_build


# ----------------------------------------------------------------------------------------------
# the browser


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == event:
                    return e
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client is needed to drive chromium")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def served(built):
    """The built HTML on http://127.0.0.1 (MathJax's web fonts do not load from file:// URLs)."""
    handler = functools.partial(QuietHandler, directory=str(built["html"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_theorem_page_renders_in_chromium(browser, served, tmp_path):
    browser.call("Network.enable")
    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=f"{served}/executed/01_theorem.html")
    browser.wait_for("Page.loadEventFired")
    # MathJax typesets after load: wait for its startup promise, then count what it produced.
    maths = browser.evaluate(
        "window.MathJax.startup.promise.then(() => ({"
        " containers: document.querySelectorAll('mjx-container').length,"
        " errors: document.querySelectorAll('mjx-merror').length,"
        " sources: document.querySelectorAll('.math').length}))"
    )
    assert maths["containers"] >= 10, maths  # the page's $...$ and $$...$$ were typeset
    assert maths["containers"] >= maths["sources"] and maths["errors"] == 0, maths
    # ... in MathJax's own web fonts, served from the book.
    assert browser.evaluate("document.fonts.ready.then(() => [...document.fonts].filter("
                            "f => f.family.startsWith('MJXTEX') && f.status === 'loaded').length)") > 0
    images = browser.evaluate(
        "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
        ".then(() => [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]))"
    )
    assert len(images) >= 4, images  # the notebook's figures
    assert all(width > 0 for _, width in images), images
    requested = {e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"}
    outside = sorted(u for u in requested if not u.startswith((served, "data:", "blob:", "about:")))
    assert outside == [], outside
    # Screenshots for a person to look at: the first displayed equations, and the first figure.
    for name, selector in [("theorem-math.png", "mjx-container[display]"), ("theorem-figure.png", "img")]:
        browser.evaluate(f"document.querySelector('{selector}').scrollIntoView(); true")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        (Path(os.environ.get("SPREC_SCREENSHOT_DIR", tmp_path)) / name).write_bytes(shot)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_scorecard_renders_in_chromium(browser, served, built, tmp_path):
    """The scorecard at the front of the book: a table with one coloured cell per claim x dataset,
    each naming its verdict and linking to a page of the book; code inputs are hidden by default."""
    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=f"{served}/executed/00_scorecard.html")
    browser.wait_for("Page.loadEventFired")
    card = browser.evaluate(
        "(() => { const t = document.querySelector('table#sprec-scorecard'); if (!t) return null;"
        " const cells = [...t.querySelectorAll('td.sprec-verdict')];"
        " return {rows: t.querySelectorAll('tbody tr').length, columns: t.querySelectorAll('thead th').length - 1,"
        " cells: cells.map(c => [c.dataset.claim, c.dataset.dataset, c.dataset.verdict,"
        "   getComputedStyle(c).backgroundColor, c.querySelector('a') ? c.querySelector('a').getAttribute('href') : null]),"
        " visible: t.getBoundingClientRect().width > 0}; })()")
    assert card is not None, "no table#sprec-scorecard on the scorecard page"
    recorded = book.recorded(built["book"] / "executed" / "00_scorecard.ipynb")
    n_claims, n_datasets = recorded["scorecard_shape"]
    assert n_claims == len(claims.ALL_CLAIMS) and card["visible"]
    assert card["rows"] == n_claims and card["columns"] == n_datasets
    assert len(card["cells"]) == n_claims * n_datasets
    assert {(c[0], c[1]) for c in card["cells"]} == {(k, d) for d, v in recorded["scorecard"].items() for k in v}
    words = set(claims.VERDICTS) | {claims.NOT_CLAIMED, claims.NOT_RUN}
    assert {c[2] for c in card["cells"]} <= words
    for claim_id, dataset, verdict, colour, href in card["cells"]:
        assert colour not in ("", "rgba(0, 0, 0, 0)"), (claim_id, dataset)  # coloured
        if verdict in claims.VERDICTS:
            assert href and (built["html"] / "executed" / href).is_file(), (claim_id, dataset, href)
    # Inputs are hidden by default: every code cell of the page is behind a toggle.
    hidden = browser.evaluate("[...document.querySelectorAll('div.cell')].map(c => c.classList.contains('tag_hide-input')"
                              " || c.classList.contains('tag_injected-parameters'))")
    assert hidden and all(hidden), hidden
    browser.evaluate("document.querySelector('table#sprec-scorecard').scrollIntoView(); true")
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    (Path(os.environ.get("SPREC_SCREENSHOT_DIR", tmp_path)) / "scorecard.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_claims_page_tables_are_whole(built):
    """The claims page renders its tables whole (no "..." cut by pandas), inside boxes that scroll."""
    page = (built["html"] / "executed" / "06_results.html").read_text(encoding="utf-8")
    assert "sprec-verdict-grid" in page and page.count('class="sprec-scroll"') >= 4
    assert "...</td>" not in page and "…</td>" not in page


def test_local_only_runs_are_the_unexported_runs_pages_name(tmp_path):
    """Only ``<dataset>-<profile>/<label>-seed<S>`` folders count, and only without an exported copy:
    quick, investigation and CLLMR runs (deeper folders) are never read from runs/ by a page."""
    from sprec_lib.book.runner import local_only_runs
    from sprec_lib.config import run_config
    from sprec_lib.runs import Run

    runs, results = tmp_path / "runs", tmp_path / "results"
    for root, rel in [(runs, "ml-1m-tiny/sft-seed0"), (runs, "ml-1m-tiny/dpo-seed0"), (results, "ml-1m-tiny/dpo-seed0"),
                      (runs, "quick/ml-1m-tiny-abc/sft-seed0"), (runs, "investigations/ml-1m-tiny/sft-x-seed0"),
                      (runs, "cllmr/ml-100k/cllmr-seed0")]:
        Run(root / rel, run_config("tiny", dataset="/x/ml-1m", method=rel.split("/")[-1].split("-")[0])).finish("sft")
    assert local_only_runs(runs, results) == ["ml-1m-tiny/sft-seed0"]
