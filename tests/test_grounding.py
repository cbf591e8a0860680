"""Grounding generated titles to catalogue items with the real all-MiniLM-L6-v2 embedder (from its wheel)."""

from __future__ import annotations

import numpy as np
import pytest

from sprec_lib import grounding as G
from sprec_lib.data import Catalogue

TITLES = (
    "Toy Story (1995)",
    "Jumanji (1995)",
    "Heat (1995)",
    "GoldenEye (1995)",
    "Casino (1995)",
    "Sense and Sensibility (1995)",
    "Babe (1995)",
    "Braveheart (1995)",
    "The Usual Suspects (1995)",
    "Apollo 13 (1995)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "Pulp Fiction (1994)",
    "Forrest Gump (1994)",
    "The Lion King (1994)",
    "Jurassic Park (1993)",
    "Schindler's List (1993)",
    "Fargo (1996)",
    "Die Hard (1988)",
    "The Silence of the Lambs (1991)",
    "Titanic (1997)",
)


def catalogue(titles=TITLES) -> Catalogue:
    return Catalogue(tuple(titles), ((),) * len(titles))


@pytest.fixture(scope="module")
def embedder():
    return G.TitleEmbedder(device="cpu")


@pytest.fixture(scope="module")
def cat_emb(embedder, tmp_path_factory):
    return G.catalogue_embeddings(catalogue(), embedder, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_embedder_output(embedder, cat_emb):
    assert embedder.name == G.DEFAULT_MODEL_NAME and embedder.dim == 384
    assert cat_emb.dtype == np.float32 and cat_emb.shape == (len(TITLES), 384)
    # all-MiniLM-L6-v2 ends in a Normalize module: sentence-transformers returns unit vectors.
    np.testing.assert_allclose(np.linalg.norm(cat_emb, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_exact_title_grounds_to_itself(embedder, cat_emb):
    gens = [f'"{t}"\n' for t in TITLES]
    assert [top[0] for top in G.ground(gens, cat_emb, embedder, k=1)] == list(range(len(TITLES)))


def test_near_misses_ground_to_the_intended_item(embedder, cat_emb):
    cases = {
        '"Toy Story"': 0,  # year dropped
        '"the lion king (1994)"': 13,  # lowercased
        '"Star Wars: A New Hope"': 10,
        '"Silence of the Lambs, The (1991)"': 18,  # MovieLens' article order
        '"Jurassic Park': 14,  # no closing quote: the rest of the text is the title
        "Forrest Gump (1994)": 12,  # no quote at all: the stripped text is the title
    }
    top = G.ground(list(cases), cat_emb, embedder, k=3)
    assert [t[0] for t in top] == list(cases.values())
    assert all(len(t) == 3 and len(set(t)) == 3 for t in top)


def test_topk_equals_brute_force_argsort(embedder, cat_emb):
    gens = ['"Space adventure with rebels"', '"A crime story in Minnesota"', '"a pig farm"', "cartoon toys", '"1995"']
    k = 7
    got = G.ground(gens, cat_emb, embedder, k)
    q = embedder.encode(["Space adventure with rebels", "A crime story in Minnesota", "a pig farm", "cartoon toys", "1995"])
    dist = np.linalg.norm(q[:, None, :].astype(np.float64) - cat_emb[None, :, :].astype(np.float64), axis=-1)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :k]
    assert got == expected.tolist()
    # Chunked computation gives the same answer; k larger than the catalogue is clipped.
    assert G.l2_topk(q, cat_emb, k, chunk=2).tolist() == expected.tolist()
    assert G.l2_topk(q, cat_emb, 100).shape == (5, len(TITLES))


def test_ties_go_to_the_smaller_id():
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    assert G.l2_topk(np.array([[1.0, 0.0]]), keys, 4).tolist() == [[0, 2, 1, 3]]
    assert G.l2_topk(np.array([[0.0, 0.0]]), keys, 4).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        G.l2_topk(keys, keys, 0)


def test_catalogue_cache_hit_and_invalidation(embedder, tmp_path, monkeypatch):
    calls = []
    real = embedder.encode

    def counting(texts, progress=False):
        calls.append(len(texts))
        return real(texts, progress=progress)

    monkeypatch.setattr(embedder, "encode", counting)
    small = catalogue(TITLES[:5])
    first = G.catalogue_embeddings(small, embedder, cache_dir=tmp_path, progress=False)
    again = G.catalogue_embeddings(small, embedder, cache_dir=tmp_path, progress=False)
    assert calls == [5]
    np.testing.assert_array_equal(first, again)
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert len(files) == 1 and files[0] == G.embedding_cache_path(small.titles, embedder.name, tmp_path)
    assert not list((tmp_path / "embeddings").glob(".tmp-*"))  # the atomic write left no temporary file

    changed = catalogue(TITLES[:4] + ("Heat (1996)",))
    new = G.catalogue_embeddings(changed, embedder, cache_dir=tmp_path, progress=False)
    assert calls == [5, 5] and len(list((tmp_path / "embeddings").glob("*.npy"))) == 2
    np.testing.assert_array_equal(new[:4], first[:4])

    # Another model name is another key; a damaged cache file is recomputed.
    assert G.embedding_cache_path(small.titles, "other-model", tmp_path) != files[0]
    files[0].write_bytes(b"not a numpy file")
    G.catalogue_embeddings(small, embedder, cache_dir=tmp_path, progress=False)
    assert calls == [5, 5, 5]


def test_ground_empty(embedder, cat_emb):
    assert G.ground([], cat_emb, embedder, 5) == []


def test_answer_kinds_tell_a_wrong_year_from_no_title():
    """evaluation.answer_kinds, by hand: an exact title; a title's name with another year, grounded
    to that title or elsewhere; a name the catalogue lacks; nothing parsed. A title without a year
    never makes a wrong year (Goodreads-like names)."""
    from sprec_lib.evaluation import ANSWER_KINDS, answer_kinds

    cat = Catalogue(titles=("Heat (1995)", "Pretty Woman (1990)", "Dune", "Heat (1972)"), genres=((),) * 4)
    titles = ["Heat (1995)", "Pretty Woman (1999)", "Pretty Woman (1999)", "Heat (2001)", "Dune (2021)", "Zorro (1998)",
              None, "Dune"]
    top1 = [0, 1, 2, 3, 2, 1, None, 2]
    assert answer_kinds(titles, top1, cat) == [
        "title", "wrong year", "wrong year, grounded elsewhere", "wrong year", "other", "other", "other", "title"]
    assert set(ANSWER_KINDS) == {"title", "wrong year", "wrong year, grounded elsewhere", "other"}
