"""RosePO (sprec_lib/methods/rosepo.py): the personalised smoothing and the negatives by hand, the
trainer's loss against losses.smoothed_dpo_loss, bad settings, and a whole run on the micro model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from sprec_lib import losses, methods, models, prompts
from sprec_lib.config import ConfigError, ModelConfig, StageConfig, override, run_config
from sprec_lib.data import Sample
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.methods import rosepo, sasrec
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN
from helpers import completion_logp

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_smoothing_by_hand():
    scores = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    eps = rosepo.personal_smoothing(scores, [0, 0, None, 1], [1, 2, 1, 2], 0.5)
    # row 0: s_rej - s_chosen = 2 - 1 = 1 -> 0.5 * sigmoid(1) = 0.5 * 0.7310586; row 1: 0 - 1 -> 0.5 * sigmoid(-1)
    # row 2: the chosen item is outside the catalogue -> 0; row 3: equal scores -> 0.5 * 1/2
    assert eps == pytest.approx([0.5 * 0.7310586, 0.5 * 0.2689414, 0.0, 0.25], abs=1e-7)
    assert rosepo.personal_smoothing(scores[:1], [0], [1], 0.0) == [0.0]  # max 0: plain DPO


def test_semantic_negatives_by_hand():
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    rows = [Sample((0,), 1, "t"), Sample((3,), 0, "t"), Sample((0, 2), 3, "t"), Sample((1,), None, "gone")]
    # row 0: cos to item 0 -> item 2: 0, item 3: -1 (0, 1 banned) -> 3
    # row 1: cos to item 3 -> item 1: -0.8, item 2: 0 (3, 0 banned) -> 1
    # row 2: mean of (1,0),(0,1) = (.5,.5) -> item 1: 0.7 (only 1 allowed: 0, 2, 3 banned) -> 1
    # row 3: cos to item 1 -> 0: 0.8, 2: 0.6, 3: -0.8 -> 3
    assert rosepo.semantic_negatives(rows, emb) == [3, 1, 1, 3]
    # Unnormalised embeddings are normalised first (cosine, not dot product)
    assert rosepo.semantic_negatives(rows, emb * np.array([[10.0], [1.0], [3.0], [0.1]])) == [3, 1, 1, 3]


def test_popularity_negatives_follow_target_counts():
    rows = [Sample((5,), 0, "t")] * 6 + [Sample((5,), 1, "t")] * 2 + [Sample((0, 1), 2, "t")]
    rng = np.random.default_rng(0)
    picks = rosepo.popularity_negatives(rows * 50, 6, rng)
    # Rows with target 0 may draw 1 or 2 (counts 100, 50): about 2:1; never 0 (target), 5 (history), 3, 4 (never targets)
    target0 = [pk for pk, s in zip(picks, rows * 50) if s.target == 0]
    assert set(target0) == {1, 2} and 0.55 < np.mean(np.array(target0) == 1) < 0.78  # 100 / 150
    target1 = [pk for pk, s in zip(picks, rows * 50) if s.target == 1]
    assert set(target1) == {0, 2}
    # Every item ever a target (0, 1, 2) is in the last row's history or its target: uniform over the rest
    last = [pk for pk, s in zip(picks, rows * 50) if s.target == 2]
    assert set(last) == {3, 4, 5}


TINY = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512,
                   max_positions=256, lora=False)
STAGE = StageConfig(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, warmup_steps=0, logging_steps=1, max_length=256,
                    beta=0.5)


def test_trainer_loss_is_the_smoothed_loss(tmp_path):
    ds = make_synthetic(n_items=30, sizes=(16, 4, 4))
    tok = models.train_tokenizer(ds, 512)
    rows = [{"prompt": prompts.prompt(s, ds.catalogue, ds.wording),
             "chosen": prompts.target_completion(s, ds.catalogue, ds.wording),
             "rejected": [prompts.completion(ds.catalogue.titles[3 + i % 5], ds.wording)],
             "epsilon": [0.0, 0.1, 0.3, 0.5][i % 4]} for i, s in enumerate(ds.train[:8])]
    model = models.build_tiny_model(TINY, tok, 0)
    start = copy.deepcopy(model)
    trainer = rosepo.make_trainer(model, tok, rows, STAGE, tmp_path, 0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["epsilon"].tolist() == pytest.approx([trainer.train_dataset[i]["epsilon"] for i in range(4)])
    with torch.no_grad():  # policy = reference: h = 0, loss = log 2 whatever eps
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    got_rows = [trainer.train_dataset[i] for i in range(4)]

    def logps(m):
        return (torch.tensor([completion_logp(m, tok, r["prompt"], r["chosen"]) for r in got_rows]),
                torch.tensor([completion_logp(m, tok, r["prompt"], r["rejected"][0]) for r in got_rows]))

    pc, pr = logps(trainer.model)
    rc, rr = logps(start)
    eps = torch.tensor([r["epsilon"] for r in got_rows])
    expected = losses.smoothed_dpo_loss(pc, pr, rc, rr, STAGE.beta, eps).mean().item()
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    assert got == pytest.approx(expected, abs=1e-5) and abs(got - math.log(2)) > 1e-3
    with pytest.raises(ValueError, match="epsilon"):
        rosepo.make_trainer(models.build_tiny_model(TINY, tok, 0), tok, [dict(rows[0], epsilon=0.9 + 0.2)], STAGE,
                            tmp_path / "bad", 0)


def test_bad_settings_and_registry():
    with pytest.raises(ConfigError, match="max_smoothing"):
        rosepo.RosePOConfig(max_smoothing=0.7)
    with pytest.raises(ConfigError, match="negatives"):
        rosepo.RosePOConfig(negatives="random")
    with pytest.raises(ConfigError, match="smothing"):
        override(rosepo.RosePOConfig(), ["smothing=false"])
    cfg = run_config("tiny")
    assert rosepo.settings(cfg) == cfg.rosepo and methods.get("rosepo").sections == ("rosepo", "sasrec")
    assert (cfg.rosepo.stage.lr, cfg.rosepo.stage.beta) == (cfg.dpo.lr, cfg.dpo.beta)  # tiny's DPO rate
    m = methods.get("rosepo")
    assert (m.title, m.paper, m.table1) == ("RosePO", "rosepo", True)
    names = methods.names()
    assert names.index("sdpo") < names.index("rosepo") < names.index("sprec")


@pytest.mark.parametrize("negatives", ["semantic", "popularity"])
def test_quick_run_through_the_pipeline(tmp_path, monkeypatch, negatives):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(folder), method="rosepo", seed=3)
    stand_in = rosepo.settings(cfg)
    monkeypatch.setattr(rosepo, "settings", lambda c: rosepo.RosePOConfig(stage=stand_in.stage, negatives=negatives))
    monkeypatch.setattr(sasrec, "settings", lambda c: sasrec.SASRecConfig(epochs=5, patience=5))
    assert [s.name for s in methods.get("rosepo").plan(cfg)] == ["sasrec", "rosepo", "eval rosepo"]
    run = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert set(run.stages) == {"pretrain", "sft", "sasrec", "rosepo"} and list(run.metrics()) == ["sft", "rosepo"]
    negs = run.load_negatives("rosepo")
    assert len(negs) == 32 and (negs["epsilon"] >= 0).all() and (negs["epsilon"] <= 0.5).all()
    assert all(n[0] != p for n, p in zip(negs["negatives"], negs["positive"]))
    assert 0 <= run.metrics()["rosepo"]["@5"]["HR"] <= 1
