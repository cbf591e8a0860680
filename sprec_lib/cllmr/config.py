"""CLLMR's typed settings: one dataclass per section, each field's source in its ``help``.

Sources: **paper** (CLLMR, arXiv 2409.20052, as its summary in ``shared/papers`` reports it),
**RLMRec** (HKUDS/RLMRec, ``encoder/config/modelconf/lightgcn.yml`` and ``lightgcn_plus.yml``, the
code CLLMR builds on), **ours** (the paper is silent; the module that uses it says why).
``--set section.field=value`` goes through :func:`sprec_lib.config.override`, so the checks are the
same as the SPRec run config's. :data:`QUICK` is the quick size (tests, ``--quick``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError, _at_least, _check_types, _require, override

System = Literal["backbone", "rlmrec-con", "cllmr"]
DatasetName = Literal["ml-1m", "ml-100k"]


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataConfig:
    """Implicit feedback and the split (:mod:`sprec_lib.cllmr.data`)."""

    dataset: DatasetName = _f("ml-1m", "ours: ML-1M (ML-100K for tests); the paper's Amazon-book/Yelp/Steam cannot be fetched here")
    min_rating: int = _f(4, "RLMRec: ratings >= 4 are positive interactions")
    split_ratio: tuple[int, int, int] = _f((3, 1, 1), "RLMRec: per-user train:valid:test 3:1:1")
    min_user_interactions: int = _f(5, "ours: a user needs 5 positives for one valid and one test item")
    split_seed: int = _f(2023, "ours: the split's seed, the same for every training seed (RLMRec's seed is 2023)")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "min_rating", "min_user_interactions")
        _at_least(self, 0, "split_seed")
        _require(self, "split_ratio", min(self.split_ratio) >= 1, "three ints >= 1")


@dataclass(frozen=True)
class SideConfig:
    """Item text profiles and their embeddings (:mod:`sprec_lib.cllmr.side_info`)."""

    profiles: Literal["llm", "title-genres", "random"] = _f(
        "llm", "paper/RLMRec: LLM-generated profiles (ours: SmolLM2-135M-Instruct); 'title-genres': MiniLM of title and genres, "
        "no generation; 'random' (ours, a control): a random unit vector per item, no information")
    max_new_tokens: int = _f(64, "ours: a profile of at most 64 new tokens (RLMRec asks for <= 200 words)")
    batch_size: int = _f(8, "ours: prompts generated together (left-padded, greedy)")
    user_profiles: Literal["mean-items"] = _f("mean-items", "ours: a user's profile vector is the mean of its training items' vectors")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "max_new_tokens", "batch_size")


@dataclass(frozen=True)
class BackboneConfig:
    """LightGCN (:mod:`sprec_lib.cllmr.lightgcn`)."""

    embedding_size: int = _f(32, "RLMRec: embedding_size 32")
    layers: int = _f(3, "RLMRec: layer_num 3")
    keep_rate: float = _f(0.8, "RLMRec: edge keep rate 0.8 while training (edges dropped, not rescaled)")
    reg_weight: float = _f(1e-6, "RLMRec lightgcn.yml: 1e-6 x the squared L2 norm of every parameter")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "embedding_size")
        _at_least(self, 0, "layers", "reg_weight")
        _require(self, "keep_rate", 0 < self.keep_rate <= 1, "in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (:mod:`sprec_lib.cllmr.train`)."""

    lr: float = _f(1e-3, "RLMRec: Adam, lr 1e-3, no weight decay")
    batch_size: int = _f(4096, "RLMRec: 4096 (user, positive, negative) triples a step")
    epochs: int = _f(3000, "RLMRec: at most 3000 epochs, stopped early")
    eval_every: int = _f(3, "RLMRec: test_step 3 (validation every 3 epochs)")
    patience: int = _f(5, "RLMRec: stop after 5 validations without a better valid Recall@20")
    checkpoint_every: int = _f(5, "ours: save the state to resume from every 5 epochs")
    torch_threads: int = _f(1, "ours: one thread (two jobs share 2 cores here)")
    fused_infonce: bool = _f(True, "ours: the InfoNCE's 1/t folded into the anchors and a log-sum-exp that keeps its "
                                   "softmax (rlmrec.infonce); the same loss to float rounding, ~2x faster on CPU")
    blocked_infonce: bool = _f(True, "ours: with fused_infonce, its logits made and used a block of rows at a time (in cache) and "
                                     "unshifted when bounded (rlmrec._LogSumExpOfProducts); the same loss to float rounding, "
                                     "~1.3x faster alignment on CPU")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "batch_size", "epochs", "eval_every", "patience", "checkpoint_every", "torch_threads")
        _require(self, "lr", self.lr > 0, "a number > 0")


@dataclass(frozen=True)
class AlignConfig:
    """RLMRec-Con's contrastive alignment (:mod:`sprec_lib.cllmr.rlmrec`); CLLMR aligns the same way."""

    kd_weight: float = _f(1e-2, "RLMRec lightgcn_plus.yml (amazon, yelp): kd_weight 1e-2")
    kd_temperature: float = _f(0.2, "RLMRec lightgcn_plus.yml (amazon, yelp): kd_temperature 0.2")
    user_candidates: Literal["all", "batch"] = _f(
        "all", "RLMRec: a batch user's InfoNCE denominator runs over all users; 'batch' (ours): over the batch's users, cheaper")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 0, "kd_weight")
        _require(self, "kd_temperature", self.kd_temperature > 0, "a number > 0")


@dataclass(frozen=True)
class SSEConfig:
    """The spectrum-based side-information encoder (:mod:`sprec_lib.cllmr.sse`)."""

    encoder: Literal["sse", "mlp"] = _f("sse", "paper: SSE; 'mlp' is the paper's ablation (RLMRec's projector instead)")
    rank: int = _f(32, "paper: rank 32 of the truncated SVD is best (swept 16, 32, 64)")
    hidden: int = _f(32, "paper: hidden 32 (the latent side representation's size)")
    noise: float = _f(0.01, "paper: noise 0.01 (better than 0.001, worse beyond 0.1)")
    condition: Literal["spectrum", "whiten"] = _f(
        "spectrum", "ours: the condition is the singular vectors weighted by s/s_1 ('whiten': unweighted)")
    kl_weight: float = _f(1.0, "ours: beta of the VAE's KL term (1: the plain ELBO)")
    vae_weight: float = _f(1e-2, "ours: weight of the VAE loss (reconstruction + beta KL) beside BPR, as kd_weight")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 1, "rank", "hidden")
        _at_least(self, 0, "noise", "kl_weight", "vae_weight")


@dataclass(frozen=True)
class CounterfactualConfig:
    """The propensity branch and the counterfactual score (:mod:`sprec_lib.cllmr.counterfactual`)."""

    counterfactual: bool = _f(True, "paper: rank by TE - NDE; false is the paper's ablation (rank by the factual score)")
    reference: float | None = _f(None, "ours: the matching's reference value c; None: its mean over the training pairs")
    propensity_weight: float = _f(1.0, "ours (as MACR): weight of the propensity branch's own BPR loss")

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 0, "propensity_weight")


@dataclass(frozen=True)
class EvalConfig:
    """Full ranking (:mod:`sprec_lib.cllmr.metrics`)."""

    ks: tuple[int, ...] = _f((10, 20), "paper/RLMRec: Recall and NDCG at 10 and 20")
    early_stop_k: int = _f(20, "RLMRec: early stopping on valid Recall@20 (its last K)")
    mask_valid_in_test: bool = _f(False, "RLMRec: only training items are masked, also on the test split")
    head_share: float = _f(0.01, "ours: the head is the top 1% of items by training popularity (the book's ORRatio-style share)")
    batch_users: int = _f(1024, "RLMRec: 1024 users scored at a time")

    def __post_init__(self):
        _check_types(self)
        _require(self, "ks", len(self.ks) > 0 and min(self.ks) >= 1, "a non-empty tuple of ints >= 1")
        _require(self, "early_stop_k", self.early_stop_k in self.ks, f"one of ks {self.ks}")
        _require(self, "head_share", 0 < self.head_share < 1, "in (0, 1)")
        _at_least(self, 1, "batch_users")


@dataclass(frozen=True)
class CllmrConfig:
    """One run: the system, the seed, and every section. Saved resolved in the run folder."""

    system: System = _f("cllmr", "backbone (LightGCN), rlmrec-con (+ InfoNCE to MLP-projected profiles), cllmr (+ SSE, counterfactual)")
    seed: int = _f(0, "ours: seeds the model's initialisation, negatives, batches, edge dropout and the SSE's noise")
    data: DataConfig = DataConfig()
    side: SideConfig = SideConfig()
    backbone: BackboneConfig = BackboneConfig()
    train: TrainConfig = TrainConfig()
    align: AlignConfig = AlignConfig()
    sse: SSEConfig = SSEConfig()
    cf: CounterfactualConfig = CounterfactualConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        _check_types(self)
        _at_least(self, 0, "seed")

    @property
    def uses_side_info(self) -> bool:
        return self.system != "backbone"


# The quick size: a few epochs on the cheap side information; seconds on ML-100K (plumbing, not results).
QUICK: list[str] = ["side.profiles=title-genres", "train.epochs=4", "train.eval_every=2", "train.patience=2",
                    "train.batch_size=2048", "train.checkpoint_every=2"]


def cllmr_config(assignments: list[str] | None = None, quick: bool = False, **fields) -> CllmrConfig:
    """The defaults, then ``fields`` (system, seed), then quick mode's sizes, then ``key=value`` strings."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(CllmrConfig)}
    if unknown:
        raise ConfigError(f"CllmrConfig has no field {', '.join(sorted(unknown))}")
    cfg = dataclasses.replace(CllmrConfig(), **fields)
    return override(cfg, (QUICK if quick else []) + list(assignments or []))
