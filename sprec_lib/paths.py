"""Where things are: the repository, the dataset folders the book knows, and folder hashes.

Paths in notebook parameters and run specs are relative to the repository root (:func:`resolve`),
so they work with papermill's working directory, JupyterLab's (``notebooks/``) or any other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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


RESULTS = "results/runs"  # the committed run results (sprec_lib.experiments)
RUNS = "runs"  # local run folders, checkpoints included (ignored by git)


def paper_data_dir() -> Path:
    """Where the paper's four folders lie: ``$SPREC_PAPER_DATA``, else ``../shared/data/sprec``
    relative to the repository root."""
    return resolve(os.environ.get("SPREC_PAPER_DATA", "../shared/data/sprec"))


PAPER_DATASETS = ("MovieLens", "Goodreads", "CDs_and_Vinyl", "Steam")
PAPER = "$SPREC_PAPER_DATA"  # stands for paper_data_dir() in DATASETS
# Dataset names -> folders, relative to the repository root.
DATASETS: dict[str, str] = {"ml-1m": "data/ml-1m", **{name: f"{PAPER}/{name}" for name in PAPER_DATASETS}}
# Where the book runs the section-5.4 negative-sample sweeps (notebook 05), and at which seeds. The
# paper runs them on MovieLens: so does the book, at its three seeds. ml-1m (MovieLens-1M with the
# paper's preprocessing), where they ran first, keeps its seed-0 sweeps as they are. The ablations
# (Table 2, notebook 04) run on every dataset, as the paper's do.
SWEEP_DATASETS: dict[str, tuple[int, ...]] = {"MovieLens": (0, 1, 2), "ml-1m": (0,)}


def dataset_folder(name: str) -> Path:
    """The folder of dataset ``name`` (a key of :data:`DATASETS`), or ``name`` read as a path."""
    path = DATASETS.get(name, name)
    if path.startswith(PAPER + "/"):
        return paper_data_dir() / path[len(PAPER) + 1:]
    return resolve(path)


def portable_path(folder: Path) -> str:
    """``folder`` relative to the repository root when it lies in it or beside it (as the paper's
    folders do), so that executed copies name no machine's absolute paths; else absolute."""
    folder, root = Path(folder).resolve(), repo_root()
    for base, prefix in ((root, ""), (root.parent, "../")):
        if folder.is_relative_to(base):
            return prefix + folder.relative_to(base).as_posix()
    return str(folder)


def folder_hash(folder: str | os.PathLike, pattern: str = "*") -> str | None:
    """sha256 over the relative names and contents of the files matching ``pattern`` under
    ``folder`` (None when it is not a folder). Contents, not times: a fresh clone or copy of the
    same files has the same hash. The one hash of a folder: dataset keys of the stage cache, the
    book's record of which data and results a page was made from."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob(pattern) if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
