"""DMPO, Direct Multi-Preference Optimization (Bai et al., CIKM 2024, arXiv 2405.16127; the SPRec paper's
reference [5]; Table 1's "DMPO"): DPO from the SFT model with ``K`` uniformly random negatives per row
under DMPO's own loss, :func:`sprec_lib.losses.dmpo_loss`.

What we followed:

* The loss. The DMPO paper contrasts the chosen completion's implicit reward with the *average* of
  the ``K`` negatives' rewards inside one ``-log sigmoid`` (``reduction="mean"``, our default). The
  public fork that carries the SPRec paper's baseline scripts (``flora0110/SPRec``,
  ``baselines/DMPO/dmpo_trainer.py``) sums the ``K`` margins instead (``reduction="sum"``): the same loss
  at ``K`` times the ``beta``. The DMPO authors' own repository (``BZX667/DMPO``) ships only a
  pairwise trainer, so the paper's formula is our reference; the SPRec paper says only "sampling
  multiple negative items as rejected responses". This is *not* S-DPO's softmax: every negative is
  pushed down with the same weight, however its reward compares with the others'.
* The data path is S-DPO's (:class:`sprec_lib.trainers.SDPOTrainer`: ``K`` rejected completions per
  row, one forward over ``[chosen; rej_1..rej_K]``), and so are the negatives: the same seeded draw as
  the ``sdpo`` recipe (``Pipeline.preference_stage``), so DMPO and S-DPO of one seed train on the very
  same (prompt, positive, negatives) rows and differ by their loss only.

Settings: the ``dmpo`` section (:class:`sprec_lib.config.DMPOConfig`: its preference stage, with K =
``dmpo.stage.n_negatives``, and the loss's reduction, the paper's ``mean`` by default). Neither the
SPRec paper nor its fork states DMPO's K or beta: its defaults are S-DPO's (K = 3, beta = 1), which
makes the two a controlled comparison.
"""

from __future__ import annotations


from ..config import DMPOConfig, RunConfig
from . import Method, StagePlan, register


SECTION = "dmpo.stage"  # the StageConfig DMPO trains with (dotted, for the plan)


def settings(cfg: RunConfig) -> DMPOConfig:
    """DMPO's settings: ``cfg.dmpo`` (its preference stage and its loss's reduction)."""
    return cfg.dmpo


def _make_trainer_cls():
    from .. import trainers
    from ..losses import dmpo_loss

    class DMPOTrainer(trainers.SDPOTrainer):
        """S-DPO's trainer (data path, reference log-probs, logging) with DMPO's loss.

        Logged as S-DPO's: ``rewards/chosen``, ``rewards/rejected`` (mean over the K negatives),
        ``rewards/accuracies`` (chosen above every negative), ``rewards/margins`` (chosen minus the
        mean negative: DMPO's own margin for ``reduction="mean"``), ``logps/chosen``, ``logps/rejected``.
        """

        _tag_names = ["trl", "dmpo"]
        _name = "DMPO"
        reduction = "mean"

        def preference_loss(self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, inputs):
            return dmpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, self.beta,
                             self.reduction)

    return DMPOTrainer


_TRAINER = None


def trainer_cls(reduction: str = "mean"):
    """The :class:`DMPOTrainer` class (built on first use: importing trl is slow), for ``reduction``."""
    global _TRAINER
    if _TRAINER is None:
        _TRAINER = _make_trainer_cls()
    if reduction == _TRAINER.reduction:
        return _TRAINER
    return type(f"DMPOTrainer_{reduction}", (_TRAINER,), {"reduction": reduction})


def preference_rows(p, k: int, template: str) -> list[dict]:
    """(prompt, chosen, [K rejected]) rows: S-DPO's seeded random negatives (``Pipeline.preference_stage``)."""
    import numpy as np

    from ..config import SPRecConfig
    from ..pipeline import training_rows
    from ..selfplay import negatives_for
    from ..selfplay import preference_rows as pairs_of

    rows = training_rows(p.ds, p.cfg)
    rng = np.random.default_rng([p.cfg.seed, 2])  # the sdpo recipe's draw: the same negatives
    negs = negatives_for(rows, p.ds, SPRecConfig(negatives="random", n_negatives=k), rng)
    pairs, _ = pairs_of(rows, negs, p.ds, k, template)
    if k == 1:  # preference_rows gives DPO's one string; the multi-negative path wants a list
        pairs = [dict(r, rejected=[r["rejected"]]) for r in pairs]
    return pairs


def train(model, tokenizer, rows: list[dict], cfg: DMPOConfig, out_dir, seed: int, ref_model=None,
          checkpoint_minutes: float | None = None, dtype: str = "float32"):
    """Train ``model`` with DMPO on ``rows`` (as :func:`sprec_lib.trainers.sdpo`)."""
    from .. import trainers

    trainer = trainers.make_dpo_trainer(model, tokenizer, rows, cfg.stage, out_dir, seed, ref_model,
                                        trainer_cls=trainer_cls(cfg.reduction), dtype=dtype)
    return trainers._train(trainer, out_dir, checkpoint_minutes, save_epochs=cfg.stage.save_epochs)


def run(p) -> str:
    cfg = settings(p.cfg)
    sft = p.shared_start()
    pairs = preference_rows(p, cfg.stage.n_negatives, cfg.stage.template)
    p.stage("dmpo", sft, lambda m, t, seed, out: train(m, t, pairs, cfg, out, seed,
                                                       checkpoint_minutes=p.checkpoint_minutes, dtype=p.dtype))
    p.evaluate("dmpo")
    return "dmpo"


def plan(cfg) -> list:
    s = settings(cfg)
    return [StagePlan("dmpo", "sdpo", SECTION, cfg.train_rows,
                      f"{s.stage.n_negatives} random negatives per row, DMPO loss ({s.reduction} over negatives)"),
            StagePlan("eval dmpo", "eval", None, cfg.eval.rows)]


register(Method(name="dmpo", title="DMPO", run=run, plan=plan, sections=("dmpo",), order=16,
                paper="dmpo", doc=__doc__))
