"""D3 (sprec_lib/methods/d3.py): the ghost-token rule and the assistant on a hand-built trie and
probability table, the search against transformers' constrained beam search, bad settings, and a
whole run through the pipeline on the micro model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sprec_lib import methods, models, prompts
from sprec_lib.config import ConfigError, ModelConfig, override, run_config
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.decoding import TitleTrie, constrained_beam_search
from sprec_lib.methods import d3, sasrec
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# Tokens: EOS 0, a 1, b 2, c 3, g 4 (a "ghost": probability 0.999 wherever it is allowed), 5 never allowed.
# Item 0 "X" = a g g g g EOS; item 1 "Y" = b c EOS.
EOS, A, B, C, G, OTHER = range(6)
TRIE = TitleTrie([[A, G, G, G, G, EOS], [B, C, EOS]], [0, 1], eos_id=EOS)
TABLE = {(): {A: 0.3, B: 0.7}, (B,): {C: 0.6}, (B, C): {EOS: 0.999}}
for n in range(1, 5):
    TABLE[(A,) + (G,) * (n - 1)] = {G: 0.999}
TABLE[(A, G, G, G, G)] = {EOS: 0.999}


def table_logps(parents, tokens, prefixes):
    """The LLM's next-token log-probs from TABLE; the rest of the mass goes to token 5."""
    out = []
    for prefix in prefixes:
        p = np.full(6, 1e-12)
        p[list(TABLE[prefix])] = list(TABLE[prefix].values())
        p[OTHER] = max(1e-12, 1 - sum(TABLE[prefix].values()))
        out.append(np.log(p))
    return np.array(out)


LOG_X = [math.log(0.3)] + [math.log(0.999)] * 5  # a, four g, EOS
LOG_Y = [math.log(0.7), math.log(0.6), math.log(0.999)]


def test_ghost_token_rule_by_hand():
    sx, sy = sum(LOG_X), sum(LOG_Y)  # -1.20898, -0.86850
    assert d3.title_score(LOG_X, LOG_X, "none") == pytest.approx(sx)
    # Ordinary length normalisation: X's five ghost tokens lengthen it at almost no cost, X wins (amplification bias)
    assert d3.title_score(LOG_X, LOG_X, "all") == pytest.approx(sx / 6) and sx / 6 > sy / 3
    # Ghosts (p >= 0.99) do not count: X has one real token (a), Y two (b, c; its EOS is a ghost)
    assert d3.title_score(LOG_X, LOG_X, "non_ghost", 0.99) == pytest.approx(sx / 1)
    assert d3.title_score(LOG_Y, LOG_Y, "non_ghost", 0.99) == pytest.approx(sy / 2)
    # With a threshold above every probability nothing is a ghost: ordinary normalisation
    assert d3.title_score(LOG_Y, LOG_Y, "non_ghost", 1.0) == pytest.approx(sy / 3)
    with pytest.raises(ValueError, match="length_norm"):
        d3.title_score(LOG_X, LOG_X, "mean")


@pytest.mark.parametrize("length_norm, first", [("none", 1), ("non_ghost", 1), ("all", 0)])
def test_search_on_the_hand_built_trie(length_norm, first):
    cfg = d3.D3Config(num_beams=2, assistant_weight=0.0, length_norm=length_norm)
    found = d3.search(TRIE, table_logps, 2, cfg)
    assert found[0][0] == first and {item for item, _ in found} == {0, 1}
    scores = dict(found)
    assert scores[0] == pytest.approx(d3.title_score(LOG_X, LOG_X, length_norm, 0.99))
    assert scores[1] == pytest.approx(d3.title_score(LOG_Y, LOG_Y, length_norm, 0.99))
    # One beam: a (0.3) is pruned at the first step, only Y is found
    assert [i for i, _ in d3.search(TRIE, table_logps, 1, cfg)] == [1]


def test_assistant_mixing_by_hand():
    index = d3.ItemsUnder(TRIE)
    assert index.items(TRIE.root).tolist() == [0, 1] and index.items(TRIE.node([A, G])).tolist() == [0]
    probs = np.array([0.9, 0.1])  # the assistant prefers X
    tf = index.log_tf(TRIE.root, probs)
    assert tf[A] == pytest.approx(math.log(0.9), abs=1e-8) and tf[B] == pytest.approx(math.log(0.1), abs=1e-8)
    assert index.log_tf(TRIE.node([A]), probs) == {G: pytest.approx(0.0)}  # one allowed token: log 1
    w = 0.5
    x = (1 - w) * math.log(0.3) + w * math.log(0.9) + (1 - w) * 5 * math.log(0.999)
    y = (1 - w) * math.log(0.7) + w * math.log(0.1) + (1 - w) * (math.log(0.6) + math.log(0.999))
    found = d3.search(TRIE, table_logps, 2, d3.D3Config(num_beams=2, assistant_weight=w), probs, index)
    assert found[0][0] == 0 and dict(found)[0] == pytest.approx(x, abs=1e-8) and dict(found)[1] == pytest.approx(y, abs=1e-8)
    # Weight 0: the assistant is ignored
    assert d3.search(TRIE, table_logps, 2, d3.D3Config(num_beams=2, assistant_weight=0.0), probs)[0][0] == 1


TINY = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512,
                   max_positions=256, lora=False)


def test_without_assistant_it_is_constrained_beam_search():
    """assistant_weight 0 and no length normalisation: the items and their order are those of
    transformers' trie-constrained beam search (length_penalty 0), the ``constrained`` evaluation mode."""
    ds = make_synthetic(n_items=30, sizes=(16, 4, 4))
    tok = models.train_tokenizer(ds, 512)
    model = models.build_tiny_model(TINY, tok, 0).eval()
    trie = TitleTrie.from_catalogue(ds.catalogue, tok, ds.wording)
    texts = [prompts.prompt(s, ds.catalogue, ds.wording) for s in ds.test[:3]]
    ours = d3.decode(model, tok, texts, trie, d3.D3Config(num_beams=5, assistant_weight=0.0), progress=False)
    theirs = constrained_beam_search(model, tok, texts, trie, num_beams=5, batch_size=1, progress=False)
    assert ours == theirs and all(len(r) == 5 for r in ours)


def test_bad_settings_name_the_setting():
    for value in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="assistant_weight"):
            d3.D3Config(assistant_weight=value)
    for field, value in [("num_beams", 0), ("ghost_threshold", 0.0), ("length_norm", "mean")]:
        with pytest.raises(ConfigError, match=field):
            d3.D3Config(**{field: value})
    with pytest.raises(ConfigError, match="asistant_weight"):
        override(d3.D3Config(), ["asistant_weight=0.2"])
    cfg = run_config("tiny", ["eval.ks=(1,20)"])
    with pytest.raises(ConfigError, match="num_beams"):
        d3.check(cfg)


def test_registry_entry():
    m = methods.get("d3")
    assert (m.title, m.paper, m.table1) == ("D3", "d3", True)
    names = methods.names()
    assert names.index("rw") < names.index("d3") < names.index("dmpo")


def test_quick_run_through_the_pipeline(tmp_path, monkeypatch):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(folder), method="d3", seed=3)
    assert [s.name for s in methods.get("d3").plan(cfg)] == ["sasrec", "eval d3"]
    monkeypatch.setattr(sasrec, "settings", lambda cfg: sasrec.SASRecConfig(epochs=5, patience=5))
    run = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert run.stages == ["pretrain", "sft", "sasrec"] and list(run.metrics()) == ["sft", "d3"]
    assert run.final_stage == "d3" and run.final_label == "d3"
    m = run.metrics()["d3"]
    assert m["valid_ratio"] == 1.0 and m["model_stage"] == "sft" and m["rows"] == 12
    assert set(m["@5"]) == set(run.metrics()["sft"]["@5"])
    pred = pd.read_parquet(run.predictions_path("d3"))
    assert list(pred.columns) == ["target", "generation", "title", "valid", "topk"]
    assert all(len(t) == 5 for t in pred["topk"])
