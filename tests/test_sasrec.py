"""SASRec (sprec_lib/methods/sasrec.py): no future item is visible, the training data, that it learns a
sequential pattern, bad settings, and a whole run through the pipeline in the LLM methods' format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sprec_lib import methods
from sprec_lib.config import ConfigError, override, run_config
from sprec_lib.data import Catalogue, Dataset, Sample
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.methods import sasrec
from sprec_lib.metrics import ranking_metrics
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_causal_mask_by_hand():
    assert sasrec.causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]


@pytest.mark.parametrize("blocks, heads", [(1, 1), (2, 2)])
def test_no_future_item_is_visible(blocks, heads):
    """The state at position t is the same whatever items follow t; an earlier item does change it."""
    torch.manual_seed(0)
    model = sasrec.build_model(50, sasrec.SASRecConfig(hidden_size=16, num_blocks=blocks, num_heads=heads)).eval()
    seq = torch.tensor([[0, 0, 0, 5, 9, 12, 3, 7, 1, 40]])
    with torch.no_grad():
        base = model(seq)
        for t in range(3, 9):
            changed = seq.clone()
            changed[0, t + 1:] = torch.tensor([(int(v) % 49) + 2 for v in changed[0, t + 1:]])
            assert not torch.equal(changed, seq)
            out = model(changed)
            torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(out[0, t + 1:], base[0, t + 1:])
        earlier = seq.clone()
        earlier[0, 3] = 33
        assert not torch.allclose(model(earlier)[0, 9], base[0, 9])
        # The score of the next item reads the last position only
        torch.testing.assert_close(model.item_scores(seq)[0], base[0, -1] @ model.item_emb.weight[1:].T)


def test_encode_and_training_tensors():
    enc = sasrec.encode([(4, 5), tuple(range(12)), ()], 4)
    assert enc.tolist() == [[0, 0, 5, 6], [9, 10, 11, 12], [0, 0, 0, 0]]  # item id + 1, left-padded, last 4 kept
    samples = [Sample((0, 1, 2), 3, "t"), Sample((5,), None, "gone")]  # the second's target is outside: skipped
    inputs, positives = sasrec.training_tensors(samples, 4)
    assert inputs.tolist() == [[0, 1, 2, 3]] and positives.tolist() == [[0, 2, 3, 4]]  # item i+1 follows item i
    inputs, positives = sasrec.training_tensors([Sample((0,), 3, "t")], 3)
    assert inputs.tolist() == [[0, 0, 1]] and positives.tolist() == [[0, 0, 4]]  # no loss where there is no input
    g = torch.Generator().manual_seed(0)
    inputs, positives = sasrec.training_tensors([Sample((0, 1, 2, 3), 4, "t")] * 50, 4)
    neg = sasrec.sample_negatives(inputs, positives, 8, g)
    assert ((neg >= 6) & (neg <= 8)).all()  # indices 1..5 (items 0..4) are in the sequence: never a negative


def sequential_dataset(n_items=20, rows=(400, 64, 64), seed=0):
    """Histories are runs of consecutive ids; the target is the next id (mod n): a pattern only an
    order-aware model can learn (every item is equally popular)."""
    rng = np.random.default_rng(seed)
    titles = tuple(f"Item {i}" for i in range(n_items))
    splits = {}
    for name, size in zip(("train", "valid", "test"), rows):
        out = []
        for _ in range(size):
            start, length = int(rng.integers(n_items)), int(rng.integers(3, 8))
            seq = [(start + j) % n_items for j in range(length + 1)]
            out.append(Sample(tuple(seq[:-1]), seq[-1], titles[seq[-1]]))
        splits[name] = out
    genres = tuple((f"g{i % 2}",) for i in range(n_items))
    return Dataset("sequential", Catalogue(titles, genres), splits, ["g0", "g1"])


def test_it_learns_the_next_item():
    ds = sequential_dataset()
    cfg = sasrec.SASRecConfig(hidden_size=32, epochs=40, patience=10, batch_size=64)
    model, history = sasrec.fit(ds.train, ds.valid, 20, cfg, seed=0, ks=(1, 5), log=lambda m: None)
    assert history[0]["epoch"] == 1 and len(history) <= 40
    assert history[-1]["loss"] < history[0]["loss"]
    test = ds.test
    topk = sasrec.top_k(sasrec.scores(model, [list(s.history) for s in test]), 5)
    m = ranking_metrics(topk, [s.target for s in test], [list(s.history) for s in test], ds.item_genres(), ds.genres, 1)
    assert m["HR"] > 0.5  # chance is 1/20
    # Same seed, same model
    again, _ = sasrec.fit(ds.train, ds.valid, 20, cfg, seed=0, ks=(1, 5), log=lambda m: None)
    for (n, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


def test_bad_settings_name_the_setting():
    for field, value in [("dropout", 1.0), ("lr", 0.0), ("epochs", 0), ("num_heads", 3)]:
        with pytest.raises(ConfigError, match=field):
            sasrec.SASRecConfig(**{field: value})
    with pytest.raises(ConfigError, match="hiden_size"):
        override(sasrec.SASRecConfig(), ["hiden_size=32"])
    assert sasrec.SASRecConfig().hidden_size == 64 and sasrec.SASRecConfig().lr == 4e-3  # the paper's Appendix C


def test_registry_entry():
    m = methods.get("sasrec")
    assert (m.title, m.paper, m.table1) == ("SASRec", "sasrec", True)
    assert methods.names()[0] == "sasrec"  # the paper's first row


def test_quick_run_through_the_pipeline(tmp_path, monkeypatch):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(folder), method="sasrec", seed=3)
    assert [s.name for s in methods.get("sasrec").plan(cfg)] == ["sasrec", "eval sasrec"]
    monkeypatch.setattr(sasrec, "settings", lambda cfg: sasrec.SASRecConfig(epochs=15, patience=5))
    run = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert run.stages == ["sasrec"] and run.final_stage == "sasrec"  # no LLM stage
    m = run.metrics()["sasrec"]
    assert set(m) == {"valid_ratio", "rows", "mode", "split", "@1", "@5", "stage"} and m["rows"] == 12
    assert set(m["@5"]) == {"HR", "NDCG", "DivRatio", "ORRatio", "MGU", "DGU", "GU", "valid"}
    assert m["valid_ratio"] == 1.0 and 0 <= m["@5"]["HR"] <= 1
    pred = pd.read_parquet(run.predictions_path("sasrec"))
    assert list(pred.columns) == ["target", "generation", "title", "valid", "topk"]
    assert all(len(t) == 5 for t in pred["topk"]) and pred["valid"].all()
    assert json.loads((run.stage_dir("sasrec") / "log_history.json").read_text())[0]["epoch"] == 1
    # The metrics are ranking_metrics of the saved top-K on the same test rows
    from sprec_lib.data.sprec_format import read_sprec_folder

    ds = read_sprec_folder(folder)
    rows = ds.test[:12]
    again = ranking_metrics([list(t) for t in pred["topk"]], [s.target for s in rows], [list(s.history) for s in rows],
                            ds.item_genres(), ds.genres, 5)
    assert again == m["@5"]
    # A damaged model file is noticed and the stage is trained again (to the same weights)
    weights = run.model_dir("sasrec") / sasrec.WEIGHTS
    before = weights.read_bytes()
    weights.write_bytes(before[:-8] + b"\0" * 8)
    train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert "does not verify" in (run.folder / "log.txt").read_text() and weights.read_bytes() == before
