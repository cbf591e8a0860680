"""RW, re-weighting (Jiang et al., "Item-side Fairness of Large Language Model-based Recommendation
System", WWW 2024; the SPRec paper's reference [31]; Table 1's "RW"): BIGRec's SFT with a weight per
training row that balances the item groups (genres) of the training data.

What we followed: the script that carries the SPRec paper's RW baseline (``flora0110/SPRec``,
``baselines/Re-weighting/RW_SFT.py``), which computes, over the training rows,

* ``GH_g``: the share of genre ``g`` among the *history* items of the rows, and ``GT_g``: its share
  among their *targets*;
* a genre weight ``w_g = GH_g / GT_g`` (a genre that users consume more often than it is a target is
  up-weighted, so that what the model learns to recommend follows the history distribution);
* a row's weight: the mean ``w_g`` over its target's genres; 1 when the target has no evaluated genre
  or is outside the catalogue.

Then SFT with the per-row weighted loss, from the same start as BIGRec's SFT (the tiny profile's
``pretrain`` stage, or the base model) and with the same ``sft`` settings and rows; RW replaces the
SFT stage rather than following it, as in that script.

Where we differ from that script:

* Genre shares are :func:`sprec_lib.metrics.genre_shares` (an item splits its mass evenly over its
  *evaluated* genres), the definition MGU is computed with; the script divides by all of an item's
  genres while counting the evaluated ones only.
* The weighted loss is token-level: ``sum_i w_i * sum_t nll_it / (number of completion tokens)``, which
  is trl's SFT loss exactly when every weight is 1. The script computes
  ``mean(w) * mean(token nll)`` over the batch (a torch ``mean`` over a ``[B, T]`` tensor), which weighs
  the batch, not the rows.
* The weights come from the rows trained on (``train_rows``), the script's from its whole training file.
* Jiang et al. also re-rank the generated list; the SPRec paper's RW is the training-side
  re-weighting only ("dataset-based training weights"), and so is ours.

It goes through trl's ``SFTTrainer`` (:func:`weighted_sft_trainer`): a ``weight`` column, kept through
trl's preparation and collated beside the batch, and ``compute_loss`` weighted per row.
Settings: :class:`RWConfig`; ``RunConfig`` has no ``rw`` section yet (:func:`settings`).
"""

from __future__ import annotations


from ..config import RunConfig, RWConfig
from ..metrics import genre_shares
from . import Method, StagePlan, register

STAGE = "rw"




def settings(cfg: RunConfig) -> RWConfig:
    return cfg.rw


# -- the weights ----------------------------------------------------------------------------------


def genre_weights(rows, item_genres, genres) -> dict[str, float]:
    """``w_g = GH_g / GT_g`` over ``rows`` (history items vs targets); 1.0 for a genre that is no
    row's target (its weight is never used)."""
    history = genre_shares((i for s in rows for i in s.history), item_genres, genres)
    targets = genre_shares((s.target for s in rows if s.target is not None), item_genres, genres)
    return {g: history[g] / targets[g] if targets[g] > 0 else 1.0 for g in genres}


def row_weights(rows, item_genres, genres, normalize: bool = False) -> list[float]:
    """Per row: the mean genre weight over its target's evaluated genres (1.0 when it has none)."""
    w = genre_weights(rows, item_genres, genres)
    evaluated = set(genres)
    out = []
    for s in rows:
        mine = [g for g in dict.fromkeys(item_genres.get(s.target, ())) if g in evaluated] if s.target is not None else []
        out.append(sum(w[g] for g in mine) / len(mine) if mine else 1.0)
    if normalize and out:
        mean = sum(out) / len(out)
        out = [x / mean for x in out] if mean > 0 else out
    return out


# -- the weighted SFT trainer ---------------------------------------------------------------------


def weighted_sft_trainer(model, tokenizer, rows: list[dict], cfg, out_dir, seed: int, dtype: str = "float32"):
    """trl's ``SFTTrainer`` on ``{"prompt", "completion", "weight"}`` rows, the loss weighted per row
    (see the module docstring); otherwise :func:`sprec_lib.trainers.make_sft_trainer`: the same
    :class:`~sprec_lib.trainers.FastSFTTrainer` (``cfg.fast_head``, ``cfg.head_kernel``; its head
    computes the log-probabilities only, as the weighted loss logs no token metrics) and ``dtype``."""
    import torch
    from trl import SFTConfig

    from .. import trainers

    if cfg.loss_on not in ("all", "completion"):
        raise ValueError(f"StageConfig.loss_on must be 'all' or 'completion', got {cfg.loss_on!r}")
    weights = [r.get("weight") for r in rows]
    if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0 for w in weights):
        raise ValueError("RW: every row needs a number weight >= 0")

    class _Collate:
        def __init__(self, base):
            self.base = base

        def __call__(self, examples):
            batch = self.base(examples)
            batch["weight"] = torch.tensor([float(ex["weight"]) for ex in examples], dtype=torch.float32)
            return batch

    class WeightedSFTTrainer(trainers.FastSFTTrainer):
        _tag_names = ["trl", "sft", "rw"]

        def head_outputs(self) -> tuple[str, ...]:
            return ("log_probs",)  # the weighted loss reads nothing else

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = _Collate(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "weight" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "weight"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            weight = inputs.pop("weight")
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            per_row = -outputs.log_probs.sum(dim=1)  # summed NLL of each row's trained tokens
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (weight.to(per_row.dtype) * per_row).sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            self._metrics[mode]["weight"].append(self.accelerator.gather_for_metrics(weight).mean().item())
            return (loss, outputs) if return_outputs else loss

    trainers._unpatch_forward(model)
    args = trainers.training_args(SFTConfig, cfg, out_dir, seed, dtype, completion_only_loss=cfg.loss_on == "completion")
    return WeightedSFTTrainer(model=model, args=args, train_dataset=trainers._dataset(rows, ("prompt", "completion", "weight")),
                              processing_class=tokenizer, fast_head=cfg.fast_head, head_kernel=cfg.head_kernel)


def train(model, tokenizer, rows: list[dict], cfg, out_dir, seed: int, checkpoint_minutes: float | None = None,
          dtype: str = "float32"):
    from .. import trainers

    return trainers._train(weighted_sft_trainer(model, tokenizer, rows, cfg, out_dir, seed, dtype), out_dir,
                           checkpoint_minutes, save_epochs=cfg.save_epochs)


# -- the recipe -----------------------------------------------------------------------------------


def run(p) -> str:
    from .. import models
    from ..pipeline import sft_rows, training_rows
    from ..runs import write_json

    rows = training_rows(p.ds, p.cfg)
    gw = genre_weights(rows, p.ds.item_genres(), p.ds.genres)
    weights = row_weights(rows, p.ds.item_genres(), p.ds.genres, settings(p.cfg).normalize)
    data = [dict(r, weight=w) for r, w in zip(sft_rows(rows, p.ds), weights)]
    if not p.ds.genres:
        p.run.log(f"stage {STAGE}: the dataset has no genres; every weight is 1 (RW is BIGRec's SFT)")

    def fn(model, tokenizer, seed, out):
        write_json({"genre_weights": gw, "row_weights": weights}, out / "weights.json")
        if p.cfg.model.lora and not hasattr(model, "peft_config"):
            model = models.add_lora(model, p.cfg.model)
        return train(model, tokenizer, data, p.cfg.sft, out, seed, checkpoint_minutes=p.checkpoint_minutes, dtype=p.dtype)

    p.stage(STAGE, p.base_stage(), fn)
    p.evaluate(STAGE)
    return STAGE


def plan(cfg) -> list:
    return [StagePlan(STAGE, "sft", "sft", cfg.train_rows,
                      "BIGRec's SFT with per-row genre weights (GH/GT), in place of the sft stage "
                      "(the sft stage listed before it is not run)"),
            StagePlan(f"eval {STAGE}", "eval", None, cfg.eval.rows)]


register(Method(name="rw", title="RW", run=run, plan=plan, sections=("rw",), order=12,
                paper="rw", doc=__doc__))
