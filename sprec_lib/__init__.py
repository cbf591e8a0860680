"""sprec_lib: the thin library under the sprec-book reproduction of SPRec (arXiv 2412.09243)."""

__version__ = "0.1.0"
