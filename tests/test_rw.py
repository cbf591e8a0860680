"""RW (sprec_lib/methods/rw.py): the weights by counting, the weighted SFT loss against a plain forward,
bad settings, and a whole run through the pipeline on the micro model."""

from __future__ import annotations

import json

import pytest
import torch

from sprec_lib import methods, models, prompts
from sprec_lib.config import ConfigError, ModelConfig, StageConfig, override, run_config
from sprec_lib.data import Sample
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.methods import rw
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN
from helpers import completion_token_logps

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# item 0: A; 1: B; 2: A and B; 3: C (not evaluated)
GENRES = {0: ("A",), 1: ("B",), 2: ("A", "B"), 3: ("C",)}
ROWS = [Sample((0, 0, 1), 1, "t1"), Sample((0, 2), 0, "t0"), Sample((3,), 2, "t2"), Sample((1,), 3, "t3")]


def test_weights_by_counting():
    # History items 0,0,1,0,2,3,1: A = 3 (three 0s) + 1/2 (item 2) = 3.5; B = 2 (two 1s) + 1/2 = 2.5; C is not evaluated
    # -> GH_A = 3.5/6 = 7/12, GH_B = 5/12. Targets 1,0,2,3: A = 1 + 1/2, B = 1 + 1/2 -> GT_A = GT_B = 1/2.
    w = rw.genre_weights(ROWS, GENRES, ["A", "B"])
    assert w == pytest.approx({"A": 7 / 6, "B": 5 / 6})
    # Rows: target 1 (B) 5/6; target 0 (A) 7/6; target 2 (A, B) the mean, 1; target 3 (C only) 1
    assert rw.row_weights(ROWS, GENRES, ["A", "B"]) == pytest.approx([5 / 6, 7 / 6, 1.0, 1.0])
    # A target outside the catalogue weighs 1; it does not count as a target either
    more = ROWS + [Sample((1, 1), None, "gone")]
    assert rw.row_weights(more, GENRES, ["A", "B"])[-1] == 1.0
    # normalize: rescaled to mean 1
    skew = [Sample((0, 0, 0), 1, "a"), Sample((0,), 1, "b"), Sample((1,), 0, "c")]
    # GH: A 4/5, B 1/5; GT: A 1/3, B 2/3 -> w_A = 12/5, w_B = 3/10; rows 3/10, 3/10, 12/5 (mean 1)
    assert rw.row_weights(skew, GENRES, ["A", "B"]) == pytest.approx([0.3, 0.3, 2.4])
    raw = rw.row_weights(ROWS[:2], GENRES, ["A", "B"])  # GH: A 3.5/4 ... not mean 1
    normed = rw.row_weights(ROWS[:2], GENRES, ["A", "B"], normalize=True)
    assert sum(normed) / 2 == pytest.approx(1.0) and normed[0] / normed[1] == pytest.approx(raw[0] / raw[1])
    # No genres: every weight is 1
    assert rw.row_weights(ROWS, GENRES, []) == [1.0] * 4


TINY = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512,
                   max_positions=256, lora=False)
CFG = StageConfig(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, warmup_steps=0, logging_steps=1, max_length=256,
                  loss_on="completion")


def completion_nll(model, tok, prompt: str, completion: str) -> tuple[float, int]:
    """Summed NLL of completion + EOS given the prompt, and its token count (plain forward, no trl)."""
    logps = completion_token_logps(model, tok, prompt, completion)
    return -logps.sum().item(), len(logps)


@pytest.mark.parametrize("loss_on", ["completion", "all"])
def test_weighted_loss_against_a_plain_forward(ds, tok, tmp_path, loss_on):
    from sprec_lib import trainers

    cfg = StageConfig(**{**CFG.__dict__, "loss_on": loss_on})
    rows = [{"prompt": prompts.prompt(s, ds.catalogue, ds.wording),
             "completion": prompts.target_completion(s, ds.catalogue, ds.wording)} for s in ds.train[:4]]
    weights = [0.0, 1.0, 2.0, 0.5]
    model = models.build_tiny_model(TINY, tok, 0)
    trainer = rw.weighted_sft_trainer(model, tok, [dict(r, weight=w) for r, w in zip(rows, weights)], cfg, tmp_path / "w", 0)
    order = [trainer.train_dataset[i] for i in range(4)]  # trl may shuffle: read the weights back from the rows
    batch = trainer.data_collator(order)
    assert batch["weight"].tolist() == [ex["weight"] for ex in order]
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, dict(batch)).item()
    if loss_on == "completion":
        by_prompt = {r["prompt"]: completion_nll(model, tok, r["prompt"], r["completion"]) for r in rows}
        w_of = {r["prompt"]: w for r, w in zip(rows, weights)}
        expected = sum(w_of[p] * nll for p, (nll, _) in by_prompt.items()) / sum(n for _, n in by_prompt.values())
        assert got == pytest.approx(expected, rel=1e-5)
    # Weights of 1: trl's own SFT loss on the same batch
    ones = rw.weighted_sft_trainer(model, tok, [dict(r, weight=1.0) for r in rows], cfg, tmp_path / "ones", 0)
    plain = trainers.make_sft_trainer(model, tok, rows, cfg, tmp_path / "plain", 0)
    ex = [plain.train_dataset[i] for i in range(4)]
    with torch.no_grad():
        a = plain.compute_loss(plain.model, plain.data_collator(ex)).item()
        b = ones.compute_loss(ones.model, ones.data_collator([ones.train_dataset[i] for i in range(4)])).item()
    assert b == pytest.approx(a, rel=1e-6)


def test_training_uses_the_weights(ds, tok, tmp_path):
    rows = [{"prompt": prompts.prompt(s, ds.catalogue, ds.wording),
             "completion": prompts.target_completion(s, ds.catalogue, ds.wording), "weight": 0.0} for s in ds.train[:8]]
    model = models.build_tiny_model(TINY, tok, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = rw.train(model, tok, rows, CFG, tmp_path / "zero", 0)
    for n, p in out.named_parameters():  # weight 0 everywhere: zero gradient (Adam moves nothing)
        torch.testing.assert_close(p, before[n], rtol=0, atol=0, msg=n)
    logged = json.loads((tmp_path / "zero" / "log_history.json").read_text())
    assert any(h.get("weight") == 0.0 for h in logged)
    with pytest.raises(ValueError, match="weight"):
        rw.weighted_sft_trainer(model, tok, [dict(rows[0], weight=-1.0)], CFG, tmp_path / "bad", 0)


def test_bad_settings_and_registry():
    with pytest.raises(ConfigError, match="normalize"):
        rw.RWConfig(normalize="yes")
    with pytest.raises(ConfigError, match="normalise"):
        override(rw.RWConfig(), ["normalise=true"])
    m = methods.get("rw")
    assert (m.title, m.paper, m.table1) == ("RW", "rw", True)
    names = methods.names()
    assert names.index("sft") < names.index("rw") < names.index("dmpo")


def test_quick_run_through_the_pipeline(tmp_path):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(folder), method="rw", seed=3)
    assert [s.name for s in methods.get("rw").plan(cfg)] == ["rw", "eval rw"]
    run = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert run.stages == ["pretrain", "rw"] and list(run.metrics()) == ["rw"] and run.final_stage == "rw"
    m = run.metrics()["rw"]
    assert 0 <= m["valid_ratio"] <= 1 and m["rows"] == 12
    saved = json.loads((run.stage_dir("rw") / "weights.json").read_text())
    assert set(saved["genre_weights"]) == {f"genre{g}" for g in range(4)} and len(saved["row_weights"]) == 32
    assert any(w != 1.0 for w in saved["row_weights"])
