"""Execute the book's notebooks with papermill into ``book/executed/`` (``sprec book run``).

:func:`run_notebooks` executes every notebook of :data:`NOTEBOOKS` (once, or once per dataset)
into ``book/executed/NAME[-DATASET].ipynb``, with the working directory at the repository root.
A copy is skipped when it was made from the same notebook with the same parameters (and, for a
dataset's copy, the same files in the dataset folder): a hash of them is kept in the copy's
metadata (``metadata.sprec_book``); ``force=True`` runs it anyway. The library's code is in the
hash too (:func:`library_fingerprint`: its syntax trees without docstrings, so that a change to
what ``sprec_lib`` computes makes every page stale, and a change to its prose or comments does not).

A dataset's copy also keeps the dataset folder's own hash (``data_hash``), so that whether it is up
to date can be told where the folder is not (:func:`stale_pages`: a fresh clone, or a checkout that
has not prepared ``data/ml-1m``). A page whose folder is missing is skipped by the run, and said
to be stale when it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import (DATASETS, PAPER_DATASETS, RESULTS, RUNS, SWEEP_DATASETS, book_dir, dataset_folder, folder_hash,
                     notebooks_dir, portable_path, repo_root, resolve)

# ----------------------------------------------------------------------------------------------
# which notebooks the book runs


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook of ``notebooks/`` and the run-level parameters it takes.

    ``takes``: which of ``data_dir`` (one executed copy per dataset), ``sweep_dir`` (one copy per
    dataset of the negative-sample sweeps, given its ``data_dir`` and its sweep ``seeds``),
    ``datasets`` (one copy, given every dataset folder there is), ``sweeps`` (the sweeps' datasets
    and seeds, a dict), ``profile`` (the notebook reads runs: the
    committed results and the names of the finished local runs are part of its hash),
    ``seeds`` and ``train`` :func:`run_notebooks` passes to it (every notebook gets ``quick``);
    ``runs``: the notebook reads runs (hashed as with ``profile``) of the profiles its own
    parameters name, and is not passed the run-level profile.
    ``params``: fixed extra parameters. ``title``: the executed copy's page title (its first ``# ``
    heading), with ``{dataset}`` filled in, so that the book's per-dataset pages have distinct titles.
    ``reads``: other committed result folders the page reads (relative to the repository root);
    their contents are part of its hash. ``copies``: one executed copy per ``(label, params)``,
    ``NAME-LABEL.ipynb``, each with its own fixed parameters (the CLLMR chapter on ML-1M and on
    ML-100K); ``{dataset}`` in the title is the label.
    """

    name: str
    takes: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    title: str | None = None
    reads: tuple[str, ...] = ()
    copies: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    @property
    def per_dataset(self) -> bool:
        return "data_dir" in self.takes

    @property
    def per_folder(self) -> bool:
        """One executed copy per dataset folder: every dataset's (``data_dir``) or every sweep dataset's (``sweep_dir``)."""
        return self.per_dataset or "sweep_dir" in self.takes

    def fixed_pages(self) -> list[str]:
        """The executed copies' names that do not depend on which datasets are here: ``NAME``, or
        ``NAME-LABEL`` per copy; none for a per-dataset notebook (or a per-sweep-dataset one)."""
        if self.per_folder:
            return []
        return [f"{self.name}-{label}" for label, _ in self.copies] if self.copies else [self.name]


# The book's notebooks, in reading order. Add a row for a new notebook.
NOTEBOOKS: list[NotebookSpec] = [
    NotebookSpec("00_scorecard", takes=("datasets", "sweeps", "profile", "seeds")),
    NotebookSpec("01_theorem"),
    NotebookSpec("02_datasets", takes=("data_dir",), title="{dataset}: the data as the models see it"),
    NotebookSpec("03_training", takes=("data_dir", "profile", "seeds", "train"), title="{dataset}: Table 1"),
    NotebookSpec("04_ablations", takes=("data_dir", "profile", "seeds", "train"), title="{dataset}: Table 2, the ablations"),
    NotebookSpec("05_negative_samples", takes=("sweep_dir", "profile", "train"),
                 title="{dataset}: the negative samples (section 5.4)"),
    NotebookSpec("06_results", takes=("datasets", "sweeps", "profile", "seeds")),
    # The third paper: its own runs (LightGCN), exported under results/cllmr. The main copy is ML-1M
    # with SmolLM2's profiles; ML-100K with the cheap title-and-genres vectors keeps its complete runs.
    NotebookSpec("07_cllmr", takes=("seeds", "train"), reads=("results/cllmr",), title="CLLMR on {dataset}: LLM side information without its propensity",
                 copies=(("ml-1m", (("dataset", "ml-1m"), ("profiles", "llm"))),
                         ("ml-100k", (("dataset", "ml-100k"), ("profiles", "title-genres"))))),
    # The pretrained LLM (issue 17): the small profile's runs beside tiny's on MovieLens and
    # Goodreads. Its datasets, profiles and seed are its own parameters, the same on every machine.
    NotebookSpec("08_pretrained", takes=("runs", "train")),
]


@dataclass(frozen=True)
class Job:
    spec: NotebookSpec
    source: Path
    output: Path
    parameters: dict
    dataset: str | None = None
    data: Path | None = None


def _named(item: str) -> str:
    """A dataset as a page's parameter: its name where it is one of :data:`DATASETS`, else its folder."""
    return item if item in DATASETS else portable_path(dataset_folder(item))


def _jobs(notebooks: list[NotebookSpec], out_dir: Path, datasets, profile: str, seeds, quick: bool,
          train: bool = False, sweeps=None, keep_missing: bool = False) -> list[Job]:
    """The executed copies to make. A dataset whose folder is missing gives no job (with a message),
    or, with ``keep_missing``, its job all the same (for :func:`stale_pages`)."""
    sweeps = dict(SWEEP_DATASETS if sweeps is None else sweeps)
    # The sweeps of the datasets asked for only (by name, or by folder).
    asked = {dataset_folder(d).resolve() for d in datasets}
    sweeps = {k: [int(s) for s in v] for k, v in sweeps.items() if k in datasets or dataset_folder(k).resolve() in asked}
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
        if "datasets" in spec.takes:  # one copy over all the datasets (the claim pages)
            # The book's datasets by name, whether or not their folders are here: these pages read
            # the committed runs of every dataset anyway (claims.gather_evidence), so the parameters,
            # and with them the page's hash, are the same on a clone without ../shared. Other folders
            # by path, where they exist.
            base["datasets"] = [_named(n) for n in datasets if n in DATASETS or dataset_folder(n).is_dir()]
        if "sweeps" in spec.takes:
            base["sweeps"] = {_named(n): v for n, v in sweeps.items() if n in DATASETS or dataset_folder(n).is_dir()}
        if spec.copies:
            for label, params in spec.copies:
                jobs.append(Job(spec, source, out_dir / f"{spec.name}-{label}.ipynb", {**base, **dict(params)}, label))
            continue
        if not spec.per_folder:
            jobs.append(Job(spec, source, out_dir / f"{spec.name}.ipynb", base))
            continue
        for name in (datasets if spec.per_dataset else sweeps):
            folder = dataset_folder(name)
            if not folder.is_dir() and not keep_missing:
                print(f"skip {spec.name} on {name}: no folder {folder}{_folder_hint(name)}")
                continue
            label = name if name in DATASETS else folder.name
            params = {**base, "data_dir": portable_path(folder)}
            if "sweep_dir" in spec.takes:
                params["seeds"] = sweeps[name]
            jobs.append(Job(spec, source, out_dir / f"{spec.name}-{label}.ipynb", params, label, folder))
    return jobs


def _folder_hint(name: str) -> str:
    if name in PAPER_DATASETS:
        return " (set SPREC_PAPER_DATA to the folder that holds it)"
    return f" (make it: sprec data prepare {name} --out {portable_path(dataset_folder(name))})" if name == "ml-1m" else ""


def _data_hash(job: Job) -> str | None:
    """The dataset folder's hash: computed where the folder is, else the one the executed copy
    recorded when it was made (``"missing"`` if it recorded none)."""
    if job.data is None:
        return None
    if job.data.is_dir():
        return folder_hash(job.data)
    return _stored_meta(job.output).get("data_hash") or "missing"


_LIBRARY_FINGERPRINT: dict[str, str] = {}


def library_fingerprint(root: str | os.PathLike | None = None) -> str:
    """sha256 of ``sprec_lib``'s code: each module's syntax tree with its docstrings taken out,
    written back as source (``ast.unparse``: comments and layout gone, and a text that does not
    depend on the Python version's ``ast`` node fields), by relative path. Comments, docstrings and
    formatting do not change it; any change to what the code does (and a few that do not, such as
    renaming a local) does. Kept per process, keyed by the files' raw contents (parsing is the slow part)."""
    import ast

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    sources = {path: path.read_bytes() for path in sorted(root.rglob("*.py"))}
    key = hashlib.sha256(b"".join(str(p).encode() + b"\0" + text + b"\0" for p, text in sources.items())).hexdigest()
    if key in _LIBRARY_FINGERPRINT:
        return _LIBRARY_FINGERPRINT[key]
    h = hashlib.sha256()
    for path, text in sources.items():
        tree = ast.parse(text.decode("utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + ast.unparse(tree).encode() + b"\0")
    _LIBRARY_FINGERPRINT[key] = h.hexdigest()
    return _LIBRARY_FINGERPRINT[key]


def _content_hash(job: Job, data: str | None = None) -> str:
    """sha256 of the notebook's cells (type, source, tags), the parameters, the page title, the
    dataset folder's fingerprint (``data``, else :func:`_data_hash`), those of the result folders
    the page reads, and the library's code (:func:`library_fingerprint`)."""
    import nbformat

    nb = nbformat.read(str(job.source), as_version=4)
    cells = [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]
    data = data if data is not None else _data_hash(job)
    runs = None
    if {"profile", "runs"} & set(job.spec.takes):  # the committed results, and the finished local runs not exported
        runs = [folder_hash(resolve(RESULTS)), local_only_runs()]
    inputs = {"cells": cells, "parameters": job.parameters, "title": job.spec.title, "data": data, "results": runs,
              "library": library_fingerprint()}
    if job.spec.reads:  # a key only where there is one: the other pages' hashes stay as committed
        inputs["reads"] = {folder: folder_hash(resolve(folder)) for folder in job.spec.reads}
    blob = json.dumps(inputs, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def local_only_runs(runs_root=RUNS, results_root=RESULTS) -> list[str]:
    """The finished local runs (``runs/<dataset>-<profile>/<label>-seed<S>``) that have no exported
    copy under ``results/runs``: the only local runs a page can read that a fresh clone lacks
    (the notebooks read an exported run first). A run exported and committed does not change the
    page's hash, so a clone of the same commit finds every executed copy up to date."""
    from ..runs import finished_runs, open_run

    runs_root, results_root = resolve(runs_root), resolve(results_root)
    out = []
    for run in finished_runs(runs_root):
        rel = run.folder.relative_to(runs_root).as_posix()
        # only a run named as the pages name them, <dataset>-<profile>/<label>-seed<S>: deeper folders
        # (quick/, investigations/, cllmr/) are runs no page reads from runs/
        if rel.count("/") == 1 and open_run(results_root / rel) is None:
            out.append(rel)
    return sorted(out)


def _stored_meta(output: Path) -> dict:
    """The executed copy's ``metadata.sprec_book`` ({} when there is no readable copy)."""
    if not output.is_file():
        return {}
    try:
        return json.loads(output.read_text(encoding="utf-8"))["metadata"].get("sprec_book", {}) or {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _stored_hash(output: Path) -> str | None:
    return _stored_meta(output).get("hash")


def stale_pages(out_dir: Path | None = None, datasets=tuple(DATASETS), profile: str = "tiny", seeds=(0, 1, 2),
                sweeps=None, notebooks: list[NotebookSpec] | None = None, quick: bool = False) -> list[str]:
    """The executed copies (names) that are missing or not made from what they would be made from
    today, the dataset pages included where their folder is missing (by their recorded data hash)."""
    out_dir = Path(out_dir) if out_dir is not None else book_dir() / "executed"
    jobs = _jobs(NOTEBOOKS if notebooks is None else notebooks, out_dir, list(datasets), profile, seeds,
                 quick=quick, sweeps=sweeps, keep_missing=True)
    return [j.output.name for j in jobs if _stored_hash(j.output) != _content_hash(j)]


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
    sweeps: dict | None = None,
) -> list[Path]:
    """Execute the book's notebooks with papermill into ``<book>/executed/``; returns the copies.

    ``datasets``: names of :data:`DATASETS` or dataset folders; a dataset whose folder is missing is
    skipped with a message. ``quick`` is passed to every notebook. A copy whose notebook and
    parameters are unchanged since it was made is skipped unless ``force``. ``train``: the
    notebooks that need runs train the missing ones (hours on a CPU); by default they use the runs
    that exist (committed under ``results/runs`` or local under ``runs/``) and list the missing.
    ``sweeps``: the datasets (names or folders) of the negative-sample sweeps -> their seeds
    (default :data:`sprec_lib.paths.SWEEP_DATASETS`); only those among ``datasets`` are run.
    """
    import papermill as pm
    from tqdm.auto import tqdm

    out_dir = Path(book) if book is not None else book_dir()
    out_dir = out_dir / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = NOTEBOOKS if notebooks is None else notebooks
    for spec in specs:
        check_pairing(spec.name)
    every = _jobs(specs, out_dir, datasets, profile, seeds, quick, train, sweeps, keep_missing=True)
    jobs = [j for j in every if j.data is None or j.data.is_dir()]
    # The dataset pages whose folder is missing are skipped; a committed copy of one that is stale
    # (the data hash it recorded no longer gives its hash) is said to be, rather than left to look current.
    for job in every:
        if job not in jobs:
            stale = job.output.is_file() and _stored_hash(job.output) != _content_hash(job)
            print(f"skip {job.spec.name} on {job.dataset}: no folder {job.data}{_folder_hint(job.dataset)}"
                  + (f"\nwarning: {job.output.name} is stale and was not run" if stale else ""))
    def shown(job: Job) -> Path:  # the copy's path as the user reads it: from the book folder's parent
        return job.output.relative_to(out_dir.parent) if out_dir.parent in job.output.parents else job.output

    def execute(job: Job, data: str | None, why: str = "running") -> None:
        tqdm.write(f"{why} {job.source.name} -> {shown(job)} with {job.parameters}")
        with _kernel_warning_filter():
            pm.execute_notebook(
                str(job.source), str(job.output), parameters=job.parameters, cwd=str(repo_root()),
                kernel_name="python3", progress_bar=True, log_output=log_output,
            )
        _stamp(job.output, _content_hash(job, data), job, data)  # after the run: it may have exported results

    done, data_hashes = [], {}
    for job in tqdm(jobs, desc="notebooks", unit="nb"):
        data = data_hashes[job.output] = _data_hash(job)  # once: the folder does not change while the book runs
        if not force and _stored_hash(job.output) == _content_hash(job, data):
            tqdm.write(f"up to date: {shown(job)}")
        else:
            execute(job, data)
        done.append(job.output)
    # A page can export finished runs into a folder that a page before it hashed (the CLLMR chapter's
    # ML-100K copy exports into results/cllmr, which its ML-1M copy reads): run those once more, so
    # that the call leaves no page stale. A second pass exports nothing new (the runs are out).
    for job in jobs:
        data = data_hashes[job.output]
        if _stored_hash(job.output) != _content_hash(job, data):
            execute(job, data, why="again (a page after it changed what it reads):")
    if untracked := untracked_results():
        print(f"warning: the pages were hashed with result files git does not track ({len(untracked)}: "
              f"{', '.join(untracked[:3])}{', ...' if len(untracked) > 3 else ''}); commit them with book/executed/, "
              "or a fresh clone finds those pages stale")
    return done


def untracked_results() -> list[str]:
    """The files under the result folders a page hashes (:data:`RESULTS` and every spec's ``reads``)
    that git does not track (a run a lane exported and nobody committed yet): a fresh clone lacks
    them, so the pages hashed with them look stale there. [] outside a git checkout."""
    import subprocess

    folders = list(dict.fromkeys([RESULTS, *(f for spec in NOTEBOOKS for f in spec.reads)]))
    try:
        out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *folders],
                             cwd=repo_root(), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line for line in out.splitlines() if line]


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


def hide_inputs(nb) -> None:
    """Tag every code cell ``hide-input`` (papermill's injected parameters too) unless it says
    otherwise: a page is prose, tables and figures; the code stays one click away."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "code" and not {"hide-input", "remove-input", "remove-cell"} & set(tags):
            tags.append("hide-input")


def _stamp(output: Path, digest: str, job: Job, data_hash: str | None = None) -> None:
    """Write the hash into the executed copy's metadata (after a successful run only), and give
    the copy its own title when the spec has one."""
    import nbformat

    nb = nbformat.read(str(output), as_version=4)
    hide_inputs(nb)
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
        **({"data_hash": data_hash} if data_hash is not None else {}),
    }
    nbformat.write(nb, str(output))

