"""The book: execute the notebooks with papermill, then build the Jupyter Book from the executed copies.

Two steps, both also on the command line::

    sprec book run [--datasets ml-1m MovieLens ...] [--quick] [--force]   # run_notebooks
    sprec book build                                                    # build_book

:func:`run_notebooks` executes every notebook of :data:`NOTEBOOKS` (once, or once per dataset)
into ``book/executed/NAME[-DATASET].ipynb``, with the working directory at the repository root.
A copy is skipped when it was made from the same notebook with the same parameters (and, for a
dataset's copy, the same files in the dataset folder): a hash of them is kept in the copy's
metadata (``metadata.sprec_book``); ``force=True`` runs it anyway. The library is not hashed:
after changing ``sprec_lib``, run with ``--force``.

:func:`build_book` runs ``jupyter-book build book/`` in strict mode (``-W -n --keep-going``). The
book does not execute notebooks itself (``execute_notebooks: "off"`` in ``book/_config.yml``).
Math is typeset by MathJax 3 served from the book (:func:`ensure_mathjax`: the npm package,
fetched once with ``npm pack``, sha256-checked and cached); :func:`cdn_references` checks that no
built page loads a script, stylesheet or font from another host.

Notebooks record the values that tests and the book's prose read with :func:`record`
(``myst_nb.glue``: the value is stored as an output of the executed notebook, and the book can
cite it with ``{glue:text}`name```); :func:`recorded` reads them back from an executed copy.

Conventions every notebook follows (helpers here):

* paths in parameters are relative to the repository root (:func:`resolve`), so they work with
  papermill's working directory, JupyterLab's (``notebooks/``) or any other;
* ``quick=True`` or ``SPREC_QUICK=1`` (:func:`quick_mode`) shrinks every size to :data:`QUICK`
  (:func:`sizes`), so that a notebook runs in about a minute.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = [
    "repo_root",
    "resolve",
    "quick_mode",
    "sizes",
    "record",
    "recorded",
    "summary",
    "DATASETS",
    "dataset_folder",
    "portable_path",
    "NotebookSpec",
    "NOTEBOOKS",
    "run_notebooks",
    "ensure_mathjax",
    "build_book",
    "cdn_references",
]


# ----------------------------------------------------------------------------------------------
# where things are


def repo_root() -> Path:
    """The repository root: ``$SPREC_ROOT``, else the folder above this package when it holds
    ``pyproject.toml`` (an editable install or a checkout), else the current directory."""
    env = os.environ.get("SPREC_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd().resolve()


def resolve(path: str | os.PathLike) -> Path:
    """``path`` as is when absolute, else relative to :func:`repo_root` (``~`` expanded)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def book_dir() -> Path:
    return repo_root() / "book"


# ----------------------------------------------------------------------------------------------
# quick mode


# The sizes each notebook uses in quick mode; every other parameter keeps its value.
QUICK: dict[str, dict[str, int]] = {
    "01_theorem": {"n_items": 20, "optimiser_steps": 100, "n_betas": 7, "iterations": 4},
    # Reading a dataset takes about a second: quick mode runs notebook 02 at full size.
    "02_datasets": {},
}


def quick_mode(quick: bool = False) -> bool:
    """``quick``, or the environment variable ``SPREC_QUICK`` set to 1 / true / yes."""
    return bool(quick) or os.environ.get("SPREC_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


def sizes(notebook: str, quick: bool, **full: int) -> SimpleNamespace:
    """The notebook's sizes: ``full`` as given, or, in quick mode, replaced by ``QUICK[notebook]``."""
    shrunk = QUICK.get(notebook, {}) if quick_mode(quick) else {}
    return SimpleNamespace(**{k: shrunk.get(k, v) for k, v in full.items()})


# ----------------------------------------------------------------------------------------------
# values a notebook records


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, tuples and mappings -> plain Python (literal_eval round-trips it)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) or isinstance(value, int | bool | str) or value is None:
        return value
    raise TypeError(f"record: {type(value).__name__} is not a number, string, list or dict")


_RECORDED: dict[str, Any] = {}  # what record() stored in this process (a notebook's kernel)


def record(name: str, value: Any, display: bool = False) -> Any:
    """Store ``value`` (a number, string, list or dict of them) under ``name`` in the executed notebook.

    Uses ``myst_nb.glue``: the value becomes an output of the cell, tagged with its name, so the
    book can cite it (``{glue:text}`name```) and :func:`recorded` can read it back. Returns the
    plain value.
    """
    from myst_nb import glue

    plain = _plain(value)
    glue(name, plain, display=display)
    _RECORDED[name] = plain
    return plain


def recorded_here() -> dict[str, Any]:
    """The values :func:`record` stored so far in this process, by name."""
    return dict(_RECORDED)


def summary():
    """A table of the values recorded so far in this process (a notebook's last cell): one row per
    name, numbers with 4 significant digits, so that 3.7e-09 does not read as 0."""
    import pandas as pd

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    return pd.DataFrame({"value": {k: fmt(v) for k, v in _RECORDED.items()}}).rename_axis("recorded as")


def recorded(notebook: str | os.PathLike | dict) -> dict[str, Any]:
    """The values an executed notebook stored with :func:`record`, by name."""
    import nbformat

    nb = notebook if isinstance(notebook, dict) else nbformat.read(str(notebook), as_version=4)
    values = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            text = out.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
            text = "".join(text) if isinstance(text, list) else text
            try:
                values[meta["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[meta["name"]] = text
    return values


# ----------------------------------------------------------------------------------------------
# datasets


def paper_data_dir() -> Path:
    """Where the paper's four folders lie: ``$SPREC_PAPER_DATA``, else ``../shared/data/sprec``
    relative to the repository root."""
    return resolve(os.environ.get("SPREC_PAPER_DATA", "../shared/data/sprec"))


PAPER_DATASETS = ("MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam")
PAPER = "$SPREC_PAPER_DATA"  # stands for paper_data_dir() in DATASETS
# Dataset names -> folders, relative to the repository root.
DATASETS: dict[str, str] = {"ml-1m": "data/ml-1m", **{name: f"{PAPER}/{name}" for name in PAPER_DATASETS}}


def dataset_folder(name: str) -> Path:
    """The folder of dataset ``name`` (a key of :data:`DATASETS`), or ``name`` read as a path."""
    path = DATASETS.get(name, name)
    if path.startswith(PAPER + "/"):
        return paper_data_dir() / path[len(PAPER) + 1:]
    return resolve(path)


def _fingerprint(folder: Path) -> str:
    """Name, size and modification time of every file under ``folder`` (re-preparing a dataset
    changes it, so its executed copies are made again)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(
        [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    ).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# which notebooks the book runs


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook of ``notebooks/`` and the run-level parameters it takes.

    ``takes``: which of ``data_dir`` (one executed copy per dataset), ``study_dir`` (one copy, on
    the study dataset: the ablations and negative-sample studies run on MovieLens), ``datasets``
    (one copy, given every dataset folder there is), ``profile`` (the notebook reads runs: the
    committed results and the names of the finished local runs are part of its hash),
    ``seeds`` and ``train`` :func:`run_notebooks` passes to it (every notebook gets ``quick``).
    ``params``: fixed extra parameters. ``title``: the executed copy's page title (its first ``# ``
    heading), with ``{dataset}`` filled in, so that the book's per-dataset pages have distinct titles.
    """

    name: str
    takes: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    title: str | None = None

    @property
    def per_dataset(self) -> bool:
        return "data_dir" in self.takes


# The book's notebooks, in reading order. Add a row for a new notebook.
NOTEBOOKS: list[NotebookSpec] = [
    NotebookSpec("01_theorem"),
    NotebookSpec("02_datasets", takes=("data_dir",), title="{dataset}: the data as the models see it"),
    NotebookSpec("03_training", takes=("data_dir", "profile", "seeds", "train"), title="{dataset}: Table 1"),
    NotebookSpec("04_ablations", takes=("study_dir", "profile", "seeds", "train")),
    NotebookSpec("05_negative_samples", takes=("study_dir", "profile", "train")),
    NotebookSpec("06_results", takes=("datasets", "study_dir", "profile", "seeds")),
]
# The dataset of the ablations and the negative-sample studies (the paper runs them on MovieLens):
# ML-1M prepared with the paper's preprocessing, the one MovieLens source here with the full logs
# that the tiny profile's domain pretraining reads.
STUDY_DATASET = "ml-1m"
RESULTS = "results/runs"  # the committed run results (sprec_lib.experiments)


@dataclass(frozen=True)
class Job:
    spec: NotebookSpec
    source: Path
    output: Path
    parameters: dict
    dataset: str | None = None
    data: Path | None = None


def _jobs(notebooks: list[NotebookSpec], out_dir: Path, datasets, profile: str, seeds, quick: bool,
          train: bool = False, study: str = STUDY_DATASET) -> list[Job]:
    jobs = []
    for spec in notebooks:
        base = {"quick": bool(quick), **dict(spec.params)}
        if "profile" in spec.takes:
            base["profile"] = profile
        if "seeds" in spec.takes:
            base["seeds"] = [int(s) for s in seeds]
        if "train" in spec.takes:
            base["train"] = bool(train)
        source = notebooks_dir() / f"{spec.name}.ipynb"
        if "datasets" in spec.takes:  # one copy over all the datasets there are
            base["datasets"] = [portable_path(dataset_folder(n)) for n in datasets if dataset_folder(n).is_dir()]
        if "study_dir" in spec.takes:
            folder = dataset_folder(study)
            if "datasets" in spec.takes:
                base["study_dir"] = portable_path(folder)
            elif not folder.is_dir():
                print(f"skip {spec.name}: no folder {folder} for the study dataset {study}")
                continue
            else:
                jobs.append(Job(spec, source, out_dir / f"{spec.name}.ipynb", {**base, "data_dir": portable_path(folder)},
                                study, folder))
                continue
        if not spec.per_dataset:
            jobs.append(Job(spec, source, out_dir / f"{spec.name}.ipynb", base))
            continue
        for name in datasets:
            folder = dataset_folder(name)
            if not folder.is_dir():
                hint = " (set SPREC_PAPER_DATA to the folder that holds it)" if name in PAPER_DATASETS else ""
                print(f"skip {spec.name} on {name}: no folder {folder}{hint}")
                continue
            label = name if name in DATASETS else folder.name
            params = {**base, "data_dir": portable_path(folder)}
            jobs.append(Job(spec, source, out_dir / f"{spec.name}-{label}.ipynb", params, label, folder))
    return jobs


def portable_path(folder: Path) -> str:
    """``folder`` relative to the repository root when it lies in it or beside it (as the paper's
    folders do), so that executed copies name no machine's absolute paths; else absolute."""
    folder, root = folder.resolve(), repo_root()
    for base, prefix in ((root, ""), (root.parent, "../")):
        if folder.is_relative_to(base):
            return prefix + folder.relative_to(base).as_posix()
    return str(folder)


def _content_fingerprint(folder: Path) -> str | None:
    """sha256 over the names and contents of the (small) files under ``folder``; None if absent.
    Contents, not times: a fresh clone of the same results has the same fingerprint."""
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _content_hash(job: Job) -> str:
    """sha256 of the notebook's cells (type, source, tags), the parameters, the page title and
    the dataset folder's fingerprint."""
    import nbformat

    nb = nbformat.read(str(job.source), as_version=4)
    cells = [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]
    data = _fingerprint(job.data) if job.data is not None else None
    runs = None
    if "profile" in job.spec.takes:  # the committed results, and which local runs have finished
        local = sorted(p.parent.relative_to(resolve("runs")).as_posix() for p in resolve("runs").glob("*/*/FINISHED"))
        runs = [_content_fingerprint(resolve(RESULTS)), local]
    blob = json.dumps({"cells": cells, "parameters": job.parameters, "title": job.spec.title, "data": data,
                       "results": runs}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _stored_hash(output: Path) -> str | None:
    if not output.is_file():
        return None
    try:
        meta = json.loads(output.read_text(encoding="utf-8"))["metadata"].get("sprec_book", {})
    except (OSError, ValueError, KeyError):
        return None
    return meta.get("hash")


def check_pairing(name: str) -> None:
    """Raise if ``notebooks/NAME.ipynb`` and its paired ``notebooks/NAME.py`` hold different cells."""
    import jupytext
    import nbformat

    ipynb, script = notebooks_dir() / f"{name}.ipynb", notebooks_dir() / f"{name}.py"
    a = nbformat.read(str(ipynb), as_version=4)
    b = jupytext.read(str(script))
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    if cells(a) != cells(b):
        raise RuntimeError(f"{ipynb} and {script} differ: run `jupytext --sync {script}` (or edit the one you meant)")


def run_notebooks(
    profile: str = "tiny",
    datasets: list[str] | tuple[str, ...] = tuple(DATASETS),
    seeds: list[int] | tuple[int, ...] = (0,),
    quick: bool = False,
    force: bool = False,
    book: str | os.PathLike | None = None,
    notebooks: list[NotebookSpec] | None = None,
    log_output: bool = True,
    train: bool = False,
    study: str = STUDY_DATASET,
) -> list[Path]:
    """Execute the book's notebooks with papermill into ``<book>/executed/``; returns the copies.

    ``datasets``: names of :data:`DATASETS` or dataset folders; a dataset whose folder is missing is
    skipped with a message. ``quick`` is passed to every notebook. A copy whose notebook and
    parameters are unchanged since it was made is skipped unless ``force``. ``train``: the
    notebooks that need runs train the missing ones (hours on a CPU); by default they use the runs
    that exist (committed under ``results/runs`` or local under ``runs/``) and list the missing.
    ``study``: the dataset (a name of :data:`DATASETS` or a folder) of the ablations and the
    negative-sample studies.
    """
    import papermill as pm
    from tqdm.auto import tqdm

    out_dir = Path(book) if book is not None else book_dir()
    out_dir = out_dir / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = NOTEBOOKS if notebooks is None else notebooks
    for spec in specs:
        check_pairing(spec.name)
    jobs = _jobs(specs, out_dir, datasets, profile, seeds, quick, train, study)
    done = []
    for job in tqdm(jobs, desc="notebooks", unit="nb"):
        digest = _content_hash(job)
        rel = job.output.relative_to(out_dir.parent) if out_dir.parent in job.output.parents else job.output
        if not force and _stored_hash(job.output) == digest:
            tqdm.write(f"up to date: {rel}")
            done.append(job.output)
            continue
        tqdm.write(f"running {job.source.name} -> {rel} with {job.parameters}")
        with _kernel_warning_filter():
            pm.execute_notebook(
                str(job.source), str(job.output), parameters=job.parameters, cwd=str(repo_root()),
                kernel_name="python3", progress_bar=True, log_output=log_output,
            )
        _stamp(job.output, _content_hash(job), job)  # after the run: it may have exported results
        done.append(job.output)
    return done


# In a kernel without ipywidgets, importing ``tqdm.auto`` warns "IProgress not found" (and falls
# back to text bars); the warning names this machine's venv path and would sit in every executed
# page. JupyterLab users still see it, with its advice to install ipywidgets.
KERNEL_WARNING_FILTER = "ignore:IProgress not found"


@contextmanager
def _kernel_warning_filter():
    """Add :data:`KERNEL_WARNING_FILTER` to ``PYTHONWARNINGS`` (comma-separated) for the kernels
    papermill starts (they inherit our environment); put back afterwards."""
    saved = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(x for x in (saved, KERNEL_WARNING_FILTER) if x)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONWARNINGS")
        else:
            os.environ["PYTHONWARNINGS"] = saved


def _stamp(output: Path, digest: str, job: Job) -> None:
    """Write the hash into the executed copy's metadata (after a successful run only), and give
    the copy its own title when the spec has one."""
    import nbformat

    nb = nbformat.read(str(output), as_version=4)
    if job.spec.title:
        title = job.spec.title.format(dataset=job.dataset or "")
        for cell in nb.cells:
            if cell.cell_type == "markdown" and cell.source.startswith("# "):
                cell.source = "\n".join([f"# {title}", *cell.source.split("\n")[1:]])
                break
    # papermill records absolute paths of this machine; the committed copy names them from the
    # repository root, like the rest of the book.
    paths = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in paths:
            paths[key] = portable_path(Path(paths[key]))
    nb.metadata["sprec_book"] = {
        "hash": digest,
        "source": f"notebooks/{job.source.name}",
        "parameters": job.parameters,
    }
    nbformat.write(nb, str(output))


# ----------------------------------------------------------------------------------------------
# MathJax, served from the book


MATHJAX_VERSION = "3.2.2"
# Where the book keeps it (book/_config.yml: html_static_path [_mathjax], mathjax_path mathjax/tex-chtml.js).
MATHJAX_DIR = Path("_mathjax") / "mathjax"
# sha256 of the npm tarball mathjax-3.2.2.tgz (npm checks its own sha512 integrity as well).
MATHJAX_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
# What the book needs from the package's es5/ build: the TeX-to-CommonHTML bundle, its web fonts,
# the TeX extensions it may autoload, and the menu / accessibility components it loads lazily.
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y")


def _mathjax_cache(cache_dir=None) -> Path:
    from .assets import cache_root

    return cache_root(cache_dir) / "mathjax" / MATHJAX_VERSION


def _fetch_mathjax(folder: Path) -> None:
    from .assets import sha256_file

    """``npm pack mathjax@VERSION`` (the npm registry's own client), check, extract the parts."""
    npm = shutil.which("npm")
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz"
        hand_placed = folder.parent / tgz.name  # a tarball put there by hand is used as is
        if hand_placed.is_file():
            shutil.copy(hand_placed, tgz)
        elif npm is None:
            raise RuntimeError(
                f"MathJax {MATHJAX_VERSION} is not cached in {folder} and npm is not installed: install "
                f"Node.js/npm, or put mathjax-{MATHJAX_VERSION}.tgz (`npm pack mathjax@{MATHJAX_VERSION}`) "
                f"into {folder.parent}"
            )
        else:
            subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--pack-destination", tmp, "--silent"],
                           check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        got = sha256_file(tgz)
        if got != MATHJAX_SHA256:
            raise RuntimeError(f"mathjax-{MATHJAX_VERSION}.tgz: sha256 {got}, expected {MATHJAX_SHA256}")
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        with tarfile.open(tgz) as tar:
            wanted = [m for m in tar.getmembers()
                      if m.isfile() and (m.name == "package/LICENSE" or any(
                          m.name == f"package/es5/{p}" or m.name.startswith(f"package/es5/{p}/") for p in MATHJAX_PARTS))]
            tar.extractall(staging, members=wanted, filter="data")
        es5 = staging / "package" / "es5"
        shutil.copy(staging / "package" / "LICENSE", es5 / "LICENSE")
        (es5 / ".complete").write_text(MATHJAX_VERSION + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        es5.rename(folder)
        shutil.rmtree(staging)


def ensure_mathjax(dest: str | os.PathLike, cache_dir=None) -> Path:
    """MathJax's ``es5/`` parts in ``dest`` (the book's ``_mathjax/mathjax``), from the cache.

    The cache (``<cache root>/mathjax/VERSION``, see :func:`sprec_lib.assets.cache_root`) is filled
    once from the npm registry with ``npm pack``; the tarball's sha256 is checked.
    """
    dest = Path(dest)
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().strip() == MATHJAX_VERSION:
        return dest
    cache = _mathjax_cache(cache_dir)
    if not (cache / ".complete").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        _fetch_mathjax(cache)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(cache, dest)
    return dest


# ----------------------------------------------------------------------------------------------
# building


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def build_book(
    strict: bool = True,
    book: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    check_offline: bool = True,
) -> Path:
    """``jupyter-book build`` the book (strict: ``-W -n --keep-going``); returns ``index.html``.

    ``output``: the folder that gets ``_build/`` (default: the book folder). MathJax is put into
    ``<book>/_mathjax/mathjax`` first (:func:`ensure_mathjax`). With ``check_offline`` the build fails
    if a page loads a script, stylesheet or font from another host (:func:`cdn_references`).
    """
    book = Path(book) if book is not None else book_dir()
    missing = [s.name for s in NOTEBOOKS if not s.per_dataset and not (book / "executed" / f"{s.name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"{book / 'executed'} lacks {', '.join(missing)}: run `sprec book run` first")
    ensure_mathjax(book / MATHJAX_DIR)
    cmd = [*_jupyter_book(), "build", str(book), "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    subprocess.run(cmd, check=True)
    html = (Path(output) if output is not None else book) / "_build" / "html"
    if check_offline:
        remote = cdn_references(html)
        if remote:
            listing = "\n".join(f"  {page}: {url}" for page, url in remote[:20])
            raise RuntimeError(f"pages load assets from other hosts:\n{listing}")
    index = html / "index.html"
    print(f"the book: {index}")
    return index


def cdn_references(html_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(page, url)`` for every script, stylesheet, preload or font a built page (or a stylesheet
    under ``_static``) loads from an absolute ``http(s)://`` or ``//`` address. Links a reader
    clicks (``<a href>``) are not loads and are not listed."""
    import re
    from html.parser import HTMLParser

    class Loads(HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
                self.urls.append(a["src"])
            elif tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {
                    "stylesheet", "preload", "modulepreload", "icon", "prefetch", "manifest"}:
                self.urls.append(a["href"])

    remote = re.compile(r"^(https?:)?//", re.I)
    found = []
    root = Path(html_dir)
    for page in sorted(root.rglob("*.html")):
        parser = Loads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found += [(str(page.relative_to(root)), u) for u in parser.urls if remote.match(u)]
    css_url = re.compile(r"""(?:@import\s+|url\()\s*['"]?((?:https?:)?//[^'")\s]+)""", re.I)
    for css in sorted((root / "_static").rglob("*.css")):
        found += [(str(css.relative_to(root)), u) for u in css_url.findall(css.read_text(encoding="utf-8", errors="replace"))]
    return found
