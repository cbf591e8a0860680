"""SASRec (Kang & McAuley, ICDM 2018; the SPRec paper's reference [32]; Table 1's "SASRec"): the
non-LLM reference, and D3's text-free assistant (:mod:`sprec_lib.methods.d3`).

A self-attentive sequential recommender over item ids: item and learned position embeddings, causal
self-attention blocks (each position sees itself and the items before it, never a later one), the
next item scored by the dot product of the last position's state with every item's embedding.

What we followed:

* The SPRec paper's Appendix C: the same training rows as the LLM methods (``train_rows`` drawn with
  the run's seed, 4,096) and 512 validation rows; embedding size 64; dropout 0.1; random negatives in
  training; Adam with lr 4e-3.
* Kang & McAuley (and their reference code, which the common PyTorch port follows) for the rest:
  2 blocks, 1 head, pre-layer-norm attention with a residual, a point-wise two-layer ReLU feed-forward,
  embeddings scaled by sqrt(d), padding zeroed after each block; training on every position of a
  sequence (the next item as the positive, one uniformly random item outside the sequence as the
  negative, binary cross-entropy); Adam betas (0.9, 0.98). Ours: a row's sequence is its history
  (up to ``max_len`` = 10 items, the prompts' length) followed by its target; the model kept is the
  epoch with the best validation NDCG@K (K = the largest of ``eval.ks``), training stops after
  ``patience`` epochs without a better one.
* Evaluation: the top-K over the *whole* catalogue (history items are not removed: an LLM may also
  recommend them) for the same test rows as the LLM methods, through
  :func:`sprec_lib.metrics.ranking_metrics`; the metrics JSON and the predictions have the LLM
  methods' shape (``valid_ratio`` is 1: every recommendation is a catalogue item; ``generation`` and
  ``title`` hold the top-1 item's title).

Why not RecBole's SASRec: RecBole 1.2.1 (the latest) uses ``np.float`` in its data path
(``recbole/data/interaction.py``, ``dataset.py``), removed in numpy 1.24, and we pin numpy 2.4; it also
pins ``colorlog==4.7.2``, ``colorama==0.4.4`` and needs ``ray<=2.6.3``. Installing it would need
patching its source, so this compact module (tested in ``tests/test_sasrec.py``) is used instead.

Settings: :class:`SASRecConfig`. ``RunConfig`` has no ``sasrec`` section yet; until it has one the
defaults here are used (:func:`settings`).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..config import RunConfig, SASRecConfig
from . import Method, StagePlan, register

STAGE = "sasrec"
WEIGHTS = "sasrec.safetensors"




def settings(cfg: RunConfig) -> SASRecConfig:
    """``cfg.sasrec`` when ``RunConfig`` has that section; else the defaults of :class:`SASRecConfig`."""
    return cfg.sasrec


# -- the model ------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def causal_mask(length: int):
    """``[L, L]`` boolean, True where attention is *forbidden*: position ``i`` may attend to ``j <= i`` only."""
    torch = _torch()
    return torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)


def build_model(n_items: int, cfg: SASRecConfig):
    """A SASRec over item indices ``1..n_items`` (0 is padding; item id ``i`` of the catalogue is index ``i + 1``)."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            h = cfg.hidden_size
            self.attn_norm = nn.LayerNorm(h, eps=1e-8)
            self.attn = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
            self.ffn_norm = nn.LayerNorm(h, eps=1e-8)
            self.ffn = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(h, h),
                                     nn.Dropout(cfg.dropout))

        def forward(self, x, mask, keep):
            q = self.attn_norm(x)
            out, _ = self.attn(q, x, x, attn_mask=mask, need_weights=False)
            x = q + out
            x = self.ffn_norm(x)
            x = x + self.ffn(x)
            return x * keep

    class SASRec(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_items, self.cfg = n_items, cfg
            self.item_emb = nn.Embedding(n_items + 1, cfg.hidden_size, padding_idx=0)
            self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden_size)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList([Block() for _ in range(cfg.num_blocks)])
            self.last_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-8)

        def forward(self, seq):
            """``seq``: ``[B, L]`` item indices, left-padded with 0 (L <= max_len, the latest item last).
            Returns the state of every position, ``[B, L, hidden]``; position ``t`` depends on
            ``seq[:, :t + 1]`` only (:func:`causal_mask`)."""
            length = seq.shape[1]
            positions = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=seq.device)
            x = self.item_emb(seq) * math.sqrt(self.cfg.hidden_size) + self.pos_emb(positions)
            keep = (seq > 0).unsqueeze(-1).to(x.dtype)
            x = self.drop(x) * keep
            mask = causal_mask(length).to(seq.device)
            for block in self.blocks:
                x = block(x, mask, keep)
            return self.last_norm(x)

        def item_scores(self, seq):
            """Scores of every catalogue item (``[B, n_items]``, item id order) after the last position."""
            state = self.forward(seq)[:, -1]
            return state @ self.item_emb.weight[1:].T

    return SASRec()


def encode(histories, max_len: int):
    """Left-padded ``[B, max_len]`` item indices (item id + 1) of the last ``max_len`` items of each history."""
    torch = _torch()
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for r, h in enumerate(histories):
        h = list(h)[-max_len:]
        if h:
            out[r, max_len - len(h):] = torch.tensor(h, dtype=torch.long) + 1
    return out


def training_tensors(samples, max_len: int):
    """``(inputs, positives)``: each row's sequence (history then target, the last ``max_len + 1``
    items) shifted by one; positions without an input item have positive 0 (no loss). Rows whose
    target is outside the catalogue are skipped."""
    seqs = [list(s.history) + [s.target] for s in samples if s.target is not None]
    seqs = [q[-(max_len + 1):] for q in seqs]
    return encode([q[:-1] for q in seqs], max_len), encode([q[1:] for q in seqs], max_len)


def sample_negatives(inputs, positives, n_items: int, generator):
    """One uniformly random item index per position, never an item of the row's sequence (0 where
    the position has no positive)."""
    torch = _torch()
    neg = torch.randint(1, n_items + 1, positives.shape, generator=generator)
    seen = torch.cat([inputs, positives[:, -1:]], dim=1)
    for _ in range(100):  # resample collisions; a row's sequence holds at most max_len + 1 of the items
        bad = (neg.unsqueeze(-1) == seen.unsqueeze(1)).any(-1) & (positives > 0)
        if not bad.any() or n_items <= seen.shape[1]:
            break
        neg[bad] = torch.randint(1, n_items + 1, (int(bad.sum()),), generator=generator)
    return neg * (positives > 0)


def scores(model, histories, batch_size: int = 512) -> np.ndarray:
    """``[len(histories), n_items]`` item scores (float32), in eval mode."""
    torch = _torch()
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(histories), batch_size):
            seq = encode(histories[i:i + batch_size], model.cfg.max_len).to(device)
            out.append(model.item_scores(seq).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.n_items), dtype=np.float32)


def top_k(item_scores: np.ndarray, k: int) -> list[list[int]]:
    """The ``k`` best item ids per row, best first (ties: the lower id first)."""
    order = np.argsort(-item_scores, axis=1, kind="stable")[:, :k]
    return [list(map(int, row)) for row in order]


def fit(train_samples, valid_samples, n_items: int, cfg: SASRecConfig, seed: int, ks=(1, 5), log=print,
        item_genres=None, genres=()):
    """Train a SASRec (see the module docstring); returns ``(model, history)`` with the best
    validation epoch's weights and one ``{"epoch", "loss", "valid_NDCG@K", "valid_HR@K"}`` per epoch."""
    from ..metrics import ranking_metrics
    from ..models import device as torch_device

    torch = _torch()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dev = torch_device()
    model = build_model(n_items, cfg).to(dev)
    inputs, positives = training_tensors(train_samples, cfg.max_len)
    if len(inputs) == 0:
        raise ValueError("SASRec: no training row has a target in the catalogue")
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    k = max(ks)
    histories = [list(s.history) for s in valid_samples]
    targets = [s.target for s in valid_samples]
    best, best_state, since, history = -1.0, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(inputs), generator=generator)
        total, count = 0.0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            seq, pos = inputs[idx], positives[idx]
            neg = sample_negatives(seq, pos, n_items, generator)
            seq, pos, neg = seq.to(dev), pos.to(dev), neg.to(dev)
            state = model(seq)
            emb = model.item_emb
            pos_logits = (state * emb(pos)).sum(-1)
            neg_logits = (state * emb(neg)).sum(-1)
            live = pos > 0
            loss = (bce(pos_logits[live], torch.ones_like(pos_logits[live]), reduction="sum")
                    + bce(neg_logits[live], torch.zeros_like(neg_logits[live]), reduction="sum")) / live.sum()
            optim.zero_grad()
            loss.backward()
            optim.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        m = ranking_metrics(top_k(scores(model, histories), k), targets, histories, item_genres or {}, list(genres), k)
        history.append({"epoch": epoch, "loss": total / count, f"valid_NDCG@{k}": m["NDCG"], f"valid_HR@{k}": m["HR"]})
        if m["NDCG"] > best:
            best, since = m["NDCG"], 0
            best_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    log(f"stage {STAGE}: {len(history)} epochs, best valid NDCG@{k} {best:.4f} "
        f"(epoch {max(history, key=lambda h: (h[f'valid_NDCG@{k}'], -h['epoch']))['epoch']})")
    return model.eval(), history


def save(model, folder) -> None:
    from pathlib import Path

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()}, str(folder / WEIGHTS))
    (folder / "config.json").write_text(json.dumps({"n_items": model.n_items, "sasrec": model.cfg.__dict__}, indent=1))


def load(folder):
    from pathlib import Path

    from safetensors.torch import load_file

    from ..models import device as torch_device

    folder = Path(folder)
    doc = json.loads((folder / "config.json").read_text())
    model = build_model(doc["n_items"], SASRecConfig(**doc["sasrec"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(torch_device()).eval()


# -- the stage in a run ---------------------------------------------------------------------------


def ensure_stage(p):
    """The run's ``sasrec`` stage: trained once (on ``training_rows`` and the first ``valid_rows``
    validation rows), saved in the run folder, verified and loaded back. Returns the model."""
    from ..pipeline import training_rows
    from ..runs import stage_seed, write_json

    run, cfg = p.run, settings(p.cfg)
    if run.done(STAGE):
        problem = run.verify(STAGE)
        if problem is None:
            return load(run.model_dir(STAGE))
        run.reopen(STAGE, f"its saved model does not verify ({problem})")
    run.clear(STAGE)
    seed = stage_seed(p.cfg.seed, STAGE)
    run.log(f"stage {STAGE}: training a SASRec on the run's training rows (seed {seed})")
    model, history = fit(training_rows(p.ds, p.cfg), p.ds.valid[:cfg.valid_rows], len(p.ds.catalogue), cfg, seed,
                         p.cfg.eval.ks, log=run.log, item_genres=p.ds.item_genres(), genres=p.ds.genres)
    save(model, run.model_dir(STAGE))
    write_json(history, run.stage_dir(STAGE) / "log_history.json")
    run.mark_done(STAGE)
    return model


def evaluate(p, model, label: str = STAGE) -> dict:
    """Top-K over the catalogue for the evaluated rows; predictions and metrics recorded as the LLM
    methods' (``Pipeline.evaluate``), once (a finished evaluation is read back)."""
    import pandas as pd

    from ..evaluation import eval_rows
    from ..metrics import ranking_metrics

    if p.run.has_metrics(label):
        return p.run.metrics_of(label)
    ds, ecfg = p.ds, p.cfg.eval
    rows = eval_rows(ds, ecfg)
    histories = [list(s.history) for s in rows]
    targets = [s.target for s in rows]
    topk = top_k(scores(model, histories), max(ecfg.ks))
    metrics: dict = {"valid_ratio": 1.0, "rows": len(rows), "mode": "ranking", "split": ecfg.split}
    for k in ecfg.ks:
        metrics[f"@{k}"] = ranking_metrics(topk, targets, histories, ds.item_genres(), ds.genres, k)
    titles = [ds.catalogue.titles[t[0]] if t else "" for t in topk]
    predictions = pd.DataFrame({
        "target": pd.array(targets, dtype="Int64"),
        "generation": titles,
        "title": titles,
        "valid": [bool(t) for t in topk],
        "topk": topk,
    })
    return p.record_evaluation(label, STAGE, predictions, metrics)


def run(p) -> str:
    """No LLM, no shared start: the SASRec stage, then its evaluation."""
    model = ensure_stage(p)
    evaluate(p, model)
    return STAGE


def plan(cfg) -> list:
    s = settings(cfg)
    # kind "negatives" with no rows and no StageConfig: the dry run has no benchmark for SASRec, and
    # pipeline.plan knows the LLM stage kinds only (an unknown kind would fail its time estimate).
    return [StagePlan(STAGE, "negatives", None, None,
                      f"SASRec on {cfg.train_rows} training rows (d={s.hidden_size}, {s.num_blocks} blocks, "
                      f"lr {s.lr:g}, up to {s.epochs} epochs); no LLM: the pretrain/SFT stages listed before it "
                      "are not run"),
            StagePlan(f"eval {STAGE}", "eval", None, cfg.eval.rows, "top-K over the catalogue")]


register(Method(name="sasrec", title="SASRec", run=run, plan=plan, sections=("sasrec",),
                order=5, paper="sasrec", llm=False, doc=__doc__))
