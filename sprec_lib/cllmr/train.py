"""Train and evaluate one system in a resumable run folder, as RLMRec's trainer does.

Followed from RLMRec's ``encoder/trainer/trainer.py``: Adam (lr 1e-3), batches of 4,096 training
pairs with fresh negatives each epoch, validation every ``eval_every`` epochs (from epoch 0), early
stopping after ``patience`` validations without a better valid Recall@20, then the best model is
evaluated on the test split. Ours:

* **Seeds.** The model's initialisation is seeded by the run's seed; epoch ``t``'s negatives, batch
  order, edge dropout and SSE noise by ``(seed, t)``. A run resumed from its saved state therefore
  ends where an uninterrupted one would (``tests/test_cllmr.py`` checks it, bit for bit, on one CPU
  kind at one thread count).
* **Early stopping reads the factual score** (the system's own). The counterfactual score is an
  inference rule over the same trained model: ``cllmr`` and ``cllmr-nocf`` of one seed differ only
  in which of the two the table reads, and every ``cllmr`` run records both.
* **Memory.** :func:`train` makes glibc keep freed memory for reuse
  (:func:`sprec_lib.cpu.keep_freed_memory`, as the SPRec pipeline does): a step allocates and frees
  the same large tensors (the InfoNCE's logits, the SSE's activations over every node), which
  glibc would otherwise hand back to the kernel and page-fault in again, zero-filled, at the next
  step (ML-1M, CLLMR: ~28k minor faults and ~50 ms of kernel time a step, gone). It changes where
  memory comes from, never a number computed; the run's ``config.json`` records it.
* **What is recorded** (``metrics.json``): valid and test metrics of each score (Recall, NDCG,
  head share, coverage at each K), the reference ``c``, the singular values and effective rank of
  the items' side representations (and of the collaborative item embeddings), per-epoch losses and
  validations, timings.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cpu import keep_freed_memory
from .config import CllmrConfig
from .data import ImplicitData, load_implicit, popularity
from .lightgcn import Graph, epoch_batches, normalized_adjacency
from .metrics import effective_rank, evaluate_scores, head_items, singular_values
from .run import CllmrRun
from .system import Recommender


@dataclass
class Inputs:
    """What a model is built from: the data and, for the systems that use them, the side vectors
    and the SSE's spectral conditions."""

    data: ImplicitData
    graph: Graph
    user_side: np.ndarray | None = None
    item_side: np.ndarray | None = None
    user_cond: np.ndarray | None = None
    item_cond: np.ndarray | None = None
    side_texts_sha256: str | None = None  # of the items' side texts (side_info.texts_fingerprint)


def prepare(cfg: CllmrConfig, data: ImplicitData | None = None, item_vectors: np.ndarray | None = None,
            cache_dir=None, progress: bool = True, side_texts_sha256: str | None = None) -> Inputs:
    """Load the data (unless given), the item vectors (unless given; generating missing LLM profiles)
    and the spectral conditions, as ``cfg.system`` needs."""
    from .side_info import side_vectors, user_vectors
    from .sse import spectral_condition

    data = data if data is not None else load_implicit(cfg.data, cache_dir)
    inputs = Inputs(data, normalized_adjacency(data.train), side_texts_sha256=side_texts_sha256)  # given with item_vectors
    if cfg.uses_side_info:
        if item_vectors is None:
            item_vectors, inputs.side_texts_sha256 = side_vectors(data.titles, data.genres, cfg.side, cache_dir, progress)
        inputs.item_side = np.asarray(item_vectors, dtype=np.float32)
        inputs.user_side = user_vectors(data.train, inputs.item_side)
    if cfg.system == "cllmr" and cfg.sse.encoder == "sse":
        inputs.user_cond, inputs.item_cond = spectral_condition(data.train, cfg.sse.rank, cfg.data.split_seed,
                                                                cfg.sse.condition)
    return inputs


def build(cfg: CllmrConfig, inputs: Inputs) -> Recommender:
    torch.manual_seed(cfg.seed)
    d = inputs.data
    return Recommender(cfg, d.n_users, d.n_items, inputs.graph, inputs.user_side, inputs.item_side,
                       inputs.user_cond, inputs.item_cond)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % 2**31


def train_epoch(model: Recommender, opt: torch.optim.Optimizer, inputs: Inputs, epoch: int) -> dict[str, float]:
    """One pass over the training pairs; the mean of each loss part over the batches."""
    cfg = model.cfg
    rng = np.random.default_rng([cfg.seed, epoch])
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    model.train()
    sums, steps = {}, 0
    for users, pos, negs in epoch_batches(inputs.data.train, cfg.train.batch_size, rng):
        opt.zero_grad()
        loss, parts = model.loss(users, pos, negs, gen)
        loss.backward()
        opt.step()
        steps += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / max(steps, 1) for k, v in sums.items()}


def evaluate(model: Recommender, inputs: Inputs, split: str, kind: str = "factual", reference: float = 0.0,
             state: dict | None = None) -> dict:
    """Recall, NDCG, head share and coverage at every K of ``cfg.eval.ks`` on ``split`` (training
    items masked; valid ones too on test if ``cfg.eval.mask_valid_in_test``)."""
    cfg, d = model.cfg, inputs.data
    state = state if state is not None else model.inference()
    extra = d.valid if (split == "test" and cfg.eval.mask_valid_in_test) else None
    head = head_items(popularity(d.train), cfg.eval.head_share)
    return evaluate_scores(Recommender.scorer(state, kind, reference), d.train, d.split(split), cfg.eval.ks,
                           extra_mask=extra, batch_users=cfg.eval.batch_users, head=head)


def spectrum(x: torch.Tensor) -> dict:
    s = singular_values(x)
    return {"singular_values": s.tolist(), "effective_rank": effective_rank(values=s), "dim": int(x.shape[1])}


def train(cfg: CllmrConfig, out: str | Path, inputs: Inputs | None = None, cache_dir=None, variant: str | None = None,
          stop_after: int | None = None, log=print, progress: bool = True) -> CllmrRun:
    """Train (or resume) ``cfg`` in the run folder ``out`` and evaluate the best model; returns the
    run. ``stop_after``: leave after this many epochs in this call, state saved (to resume later)."""
    keep_freed_memory()  # fewer page faults, the same numbers (module docstring); before the run records the machine
    run = CllmrRun(out, cfg, variant)
    cfg = run.cfg
    if run.is_finished:
        log(f"{run.folder}: finished already")
        return run
    torch.set_num_threads(cfg.train.torch_threads)
    inputs = inputs if inputs is not None else prepare(cfg, cache_dir=cache_dir, progress=progress)
    model = build(cfg, inputs)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    es_key = f"Recall@{cfg.eval.early_stop_k}"
    rec = {"epoch": 0, "best": -1.0, "best_epoch": -1, "best_model": None, "bad": 0, "history": [], "seconds": 0.0,
           "stopped": None}
    saved = run.load_state()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        rec = saved["record"]
        run.log(f"resumed at epoch {rec['epoch']}")
        log(f"resuming {run.folder} at epoch {rec['epoch']}")
    else:
        run.log(f"started: {run.label} seed {cfg.seed} on {cfg.data.dataset} ({inputs.data.stats()})")

    def save():
        run.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "record": rec})

    done_now = 0
    while rec["stopped"] is None and rec["epoch"] < cfg.train.epochs:
        epoch, t0 = rec["epoch"], time.perf_counter()
        losses = train_epoch(model, opt, inputs, epoch)
        entry = {"epoch": epoch, "seconds": time.perf_counter() - t0, **losses}
        if epoch % cfg.train.eval_every == 0:
            valid = evaluate(model, inputs, "valid")
            entry["valid"] = {k: valid[k] for k in valid if k.startswith(("Recall", "NDCG"))}
            if valid[es_key] > rec["best"]:
                rec.update(best=valid[es_key], best_epoch=epoch, bad=0, best_model=copy.deepcopy(model.state_dict()))
            else:
                rec["bad"] += 1
                if rec["bad"] >= cfg.train.patience:
                    rec["stopped"] = "early"
            log(f"epoch {epoch}: loss {sum(losses.values()):.4f}, valid {es_key} {valid[es_key]:.4f} "
                f"(best {rec['best']:.4f} at {rec['best_epoch']}), {entry['seconds']:.1f} s")
        rec["history"].append(entry)
        rec["seconds"] += entry["seconds"]
        rec["epoch"] = epoch + 1
        done_now += 1
        if rec["stopped"] or (epoch + 1) % cfg.train.checkpoint_every == 0 or rec["epoch"] >= cfg.train.epochs:
            save()
        if stop_after is not None and done_now >= stop_after and rec["stopped"] is None and rec["epoch"] < cfg.train.epochs:
            save()
            run.log(f"left after epoch {epoch} (stop_after={stop_after}); run again to resume")
            return run
    rec["stopped"] = rec["stopped"] or "max_epochs"
    if rec["best_model"] is not None:
        model.load_state_dict(rec["best_model"])
    run.finish(final_metrics(model, inputs, run, rec))
    run.log(f"finished: best epoch {rec['best_epoch']}, {rec['epoch']} epochs, {rec['seconds']:.0f} s")
    return run


def final_metrics(model: Recommender, inputs: Inputs, run: CllmrRun, rec: dict) -> dict:
    """The best model's evaluation: every score on valid and test, the side spectrum, the record."""
    cfg = model.cfg
    state = model.inference()
    coo = inputs.data.train.tocoo()
    reference = cfg.cf.reference if cfg.cf.reference is not None else Recommender.mean_matching(state, coo.row, coo.col)
    kinds = ["factual"] + (["counterfactual"] if model.propensity is not None else [])
    scores = {kind: {split: evaluate(model, inputs, split, kind, reference, state) for split in ("valid", "test")}
              for kind in kinds}
    headline = "counterfactual" if (model.propensity is not None and cfg.cf.counterfactual) else "factual"
    spectra = {"collaborative": spectrum(state["items"])}
    if "item_side" in state:
        spectra["side"] = spectrum(state["item_side"])
    epochs = max(len(rec["history"]), 1)
    return {"label": run.label, "system": cfg.system, "seed": cfg.seed, "dataset": cfg.data.dataset,
            "headline": headline, "valid": scores[headline]["valid"], "test": scores[headline]["test"],
            "scores": scores, "reference": reference if model.propensity is not None else None,
            "best_epoch": rec["best_epoch"], "epochs": rec["epoch"], "stopped": rec["stopped"],
            "train_seconds": rec["seconds"], "seconds_per_epoch": rec["seconds"] / epochs,
            "data": inputs.data.stats(), "side_texts_sha256": inputs.side_texts_sha256, "spectrum": spectra,
            "history": [{k: v for k, v in h.items()} for h in rec["history"]]}
