"""The book, in three parts, and what notebooks import from it.

* :mod:`~sprec_lib.book.kernel`: what a notebook's kernel needs (:func:`record`, :func:`summary`,
  :func:`recorded`, quick mode);
* :mod:`~sprec_lib.book.runner`: execute the notebooks with papermill (``sprec book run``);
* :mod:`~sprec_lib.book.site`: build the Jupyter Book, offline and strict (``sprec book build``).

Repository paths and the dataset list are :mod:`sprec_lib.paths`; they are re-exported here so
that a notebook needs one import (``from sprec_lib import book``).
"""

from ..paths import DATASETS, PAPER_DATASETS, SWEEP_DATASETS, book_dir, dataset_folder, notebooks_dir, portable_path, repo_root, resolve
from .kernel import quick_mode, record, recorded, recorded_here, sizes, summary
from .runner import NOTEBOOKS, NotebookSpec, check_pairing, run_notebooks
from .site import build_book, cdn_references

__all__ = [
    "DATASETS", "PAPER_DATASETS", "SWEEP_DATASETS", "book_dir", "dataset_folder", "notebooks_dir", "portable_path",
    "repo_root", "resolve", "quick_mode", "record", "recorded", "recorded_here", "sizes", "summary", "NOTEBOOKS",
    "NotebookSpec", "check_pairing", "run_notebooks", "build_book", "cdn_references",
]
