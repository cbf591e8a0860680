"""DMPO (sprec_lib/methods/dmpo.py): its trainer computes losses.dmpo_loss, its settings are checked,
and a whole run goes through the pipeline on the micro model."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from sprec_lib import losses, methods, models, prompts
from sprec_lib.config import ConfigError, ModelConfig, StageConfig, override, run_config
from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.methods import dmpo
from sprec_lib.pipeline import train
from sprec_lib.quick import QUICK_RUN
from helpers import completion_logp

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512,
                   max_positions=256, lora=False)
CFG = StageConfig(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, warmup_steps=0, logging_steps=1, max_length=256,
                  beta=0.5, n_negatives=3)


def rows(ds, n=8, k=3):
    out = []
    for i, s in enumerate(ds.train[:n]):
        out.append({"prompt": prompts.prompt(s, ds.catalogue, ds.wording),
                    "chosen": prompts.target_completion(s, ds.catalogue, ds.wording),
                    "rejected": [prompts.completion(ds.catalogue.titles[3 + (i + j) % 7], ds.wording) for j in range(k)]})
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_trainer_loss_is_dmpo_loss(ds, tok, tmp_path, reduction):
    from sprec_lib import trainers

    k, data = 3, rows(ds, 8, 3)
    model = models.build_tiny_model(TINY, tok, 0)
    start = copy.deepcopy(model)
    cfg = dmpo.DMPOConfig(stage=CFG, reduction=reduction)
    trainer = trainers.make_dpo_trainer(model, tok, data, cfg.stage, tmp_path, 0, trainer_cls=dmpo.trainer_cls(reduction))
    assert trainer.num_negatives == k and trainer.reduction == reduction
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    # At the start the policy is the reference: every reward and the margin are 0, loss = log 2 (S-DPO's: log(1 + K))
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(trainer.state.log_history[1])

    def logps(m, rs):
        return (torch.tensor([completion_logp(m, tok, r["prompt"], r["chosen"]) for r in rs]),
                torch.tensor([[completion_logp(m, tok, r["prompt"], c) for c in r["rejected"]] for r in rs]))

    pc, pr = logps(trainer.model, data[:4])
    rc, rr = logps(start, data[:4])
    expected = losses.dmpo_loss(pc, pr, rc, rr, CFG.beta, reduction).mean().item()
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    assert got == pytest.approx(expected, abs=1e-5) and abs(got - math.log(2)) > 1e-3


def test_settings_stand_in_and_bad_settings():
    cfg = run_config("tiny")
    s = dmpo.settings(cfg)
    # Its own section, at the tiny profile's preference learning rate, S-DPO's K and beta by default.
    assert s == cfg.dmpo and methods.get("dmpo").sections == ("dmpo",)
    assert (s.stage.lr, s.stage.n_negatives, s.stage.beta) == (cfg.sdpo.lr, cfg.sdpo.n_negatives, cfg.sdpo.beta)
    assert dmpo.DMPOConfig().stage.n_negatives == 3 and dmpo.DMPOConfig().reduction == "mean"
    with pytest.raises(ConfigError, match="reduction"):
        dmpo.DMPOConfig(reduction="max")
    with pytest.raises(ConfigError, match="reductoin"):  # an unknown option is named
        override(dmpo.DMPOConfig(), ["reductoin=sum"])
    with pytest.raises(ConfigError, match="stage.lr"):
        override(dmpo.DMPOConfig(), ["stage.lr=-1"])
    assert override(dmpo.DMPOConfig(), ["reduction=sum", "stage.n_negatives=5"]).stage.n_negatives == 5


def test_registry_entry():
    m = methods.get("dmpo")
    assert (m.title, m.paper, m.table1) == ("DMPO", "dmpo", True)
    order = methods.names()
    assert order.index("sft") < order.index("dmpo") < order.index("sdpo")


def test_quick_run_through_the_pipeline(tmp_path):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    cfg = run_config("tiny", QUICK_RUN + ["model.torch_threads=1"], dataset=str(folder), method="dmpo", seed=3)
    # the recipe's plan (pipeline.plan adds the shared start and time estimates)
    assert [s.name for s in methods.get("dmpo").plan(cfg)] == ["dmpo", "eval dmpo"]
    run = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    metrics = run.metrics()
    assert list(metrics) == ["sft", "dmpo"] and run.final_stage == "dmpo"
    assert 0 <= metrics["dmpo"]["@5"]["HR"] <= 1 and metrics["dmpo"]["rows"] == 12
    logged = json.loads((run.stage_dir("dmpo") / "log_history.json").read_text())
    assert any("rewards/margins" in h for h in logged)
    # The negatives are S-DPO's draw: K per row, none equal to the positive
    from sprec_lib.data.sprec_format import read_sprec_folder
    from sprec_lib.pipeline import Pipeline
    from sprec_lib.runs import Run

    p = Pipeline(Run(tmp_path / "run"), read_sprec_folder(folder), tmp_path / "cache")
    pairs = dmpo.preference_rows(p, dmpo.settings(cfg).stage.n_negatives, "alpaca")
    assert all(len(r["rejected"]) == dmpo.settings(cfg).stage.n_negatives and r["chosen"] not in r["rejected"] for r in pairs)
