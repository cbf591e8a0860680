"""D3, Debiasing-Diversifying Decoding (Bao et al., "Decoding Matters", EMNLP 2024, arXiv 2406.14900;
the SPRec paper's reference [7]; Table 1's "D3"): a decoding method on BIGRec's SFT model, no training
beyond SFT and the SASRec assistant.

Beam search over a prefix trie of the catalogue's titles (every beam is a real item), with D3's two
changes to the beam score:

* **Ghost tokens** (amplification bias). Tokens whose probability is close to 1 (a title's tail once its
  start is decoded) add almost nothing to a title's log-probability but do count in the length that
  ordinary beam search divides by, so titles with many of them are inflated. D3 disables length
  normalisation for them. ``length_norm="none"`` (default): no length normalisation at all, the score is
  the summed log-probability, as D3's released scripts run it (``length_penalty 0.0``,
  ``SAI990323/DecodingMatters/evaluate2.sh``; the SPRec fork's ``baselines/D3/evaluate2.sh`` too);
  ``"non_ghost"``: the sum divided by the number of non-ghost tokens (a token is a ghost when the
  LLM gives it probability >= ``ghost_threshold``), the paper's statement taken literally; ``"all"``:
  ordinary length normalisation (transformers' ``length_penalty=1``), the biased baseline.
* **The text-free assistant** (homogeneity). At every step, each token ``c`` the trie allows after the
  beam's prefix gets the assistant's probability ``tf(c)``: the largest SASRec probability (softmax over
  the catalogue) of the items whose titles continue through ``c``, normalised over the allowed tokens
  (D3's ``CFEnhancedLogitsProcessor``, ``max`` variant). The step score is
  ``(1 - w) * log p_LLM(c) + w * log tf(c)`` with ``w = assistant_weight`` (D3's code writes it
  ``guidance_scale * (llm - tf) + tf``, i.e. ``w = 1 - guidance_scale``). ``p_LLM`` is the LLM's
  log-softmax over the whole vocabulary, not renormalised over the allowed tokens (as D3 and
  transformers' constrained beam search).

Search: per row, ``num_beams`` running beams ranked by their summed step scores; at each step the
``2 * num_beams`` best extensions are considered, a completed title among the first ``num_beams`` is
kept (scored by the rule above), the others fill the running beams (transformers' beam search).
The top-K items are the completed titles, best first. With ``assistant_weight=0`` and
``length_norm="none"`` it is the ``constrained`` evaluation mode (tested).

Where we had to choose: D3's paper tunes the assistant's weight per dataset and its released scripts
leave ``guidance_scale`` at 1 (no assistant); we found no value for the SPRec paper's D3 runs, so
``assistant_weight=0.1`` is ours. We did not choose it on the validation split: at the tiny
profile's accuracy (HR@5 about 0.01, i.e. 5 hits in 512 validation rows, a standard error of about
0.004) no two weights could be told apart by HR or NDCG, and one weight's decoding of 512 rows costs
10-15 CPU-minutes here. Set it from the validation split on a GPU (``--set d3.assistant_weight=W
eval.split=valid``). ``num_beams=10`` is D3's
``evaluate.py``. ``ghost_threshold=0.99`` is ours (only ``"non_ghost"`` uses it). The assistant is the
run's own SASRec (:mod:`sprec_lib.methods.sasrec`, trained on the same rows, same seed: the ``sasrec``
run's model).

Settings: :class:`D3Config`; ``RunConfig`` has no ``d3`` section yet (:func:`settings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from ..config import ConfigError, D3Config, RunConfig
from . import Method, StagePlan, register

LABEL = "d3"




def settings(cfg: RunConfig) -> D3Config:
    return cfg.d3


# -- the scoring rule ------------------------------------------------------------------------------


def title_score(step_scores, llm_logps, length_norm: str = "none", ghost_threshold: float = 0.99) -> float:
    """A completed title's beam score from its per-token step scores and the LLM's log-probs of those tokens.

    ``none``: ``sum(step_scores)``; ``non_ghost``: that sum over the number of tokens the LLM gave
    probability < ``ghost_threshold`` (at least 1); ``all``: over the number of tokens."""
    total = float(sum(step_scores))
    if length_norm == "none":
        return total
    if length_norm == "all":
        return total / max(1, len(step_scores))
    if length_norm == "non_ghost":
        real = sum(1 for lp in llm_logps if math.exp(lp) < ghost_threshold)
        return total / max(1, real)
    raise ValueError(f"unknown length_norm {length_norm!r} (none, non_ghost or all)")


class ItemsUnder:
    """For every node of a :class:`sprec_lib.decoding.TitleTrie`, the item ids whose sequences pass
    through it, and the assistant's token probabilities ``tf`` at a node."""

    def __init__(self, trie):
        self.trie = trie
        self._items: dict[int, np.ndarray] = {}
        stack = [(trie.root, False)]
        while stack:  # post-order without recursion
            node, seen = stack.pop()
            if seen:
                parts = [self._items[id(c)] for c in node.children.values()]
                own = [np.array([node.item], dtype=np.int64)] if node.item is not None else []
                self._items[id(node)] = np.unique(np.concatenate(own + parts)) if own or parts else np.zeros(0, np.int64)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in node.children.values())

    def items(self, node) -> np.ndarray:
        return self._items[id(node)]

    def log_tf(self, node, probs: np.ndarray) -> dict[int, float]:
        """``log tf(c)`` for each child token ``c`` of ``node``: the largest ``probs`` of an item below
        ``c`` (+1e-10, as D3), normalised over the children."""
        toks = list(node.children)
        best = np.array([probs[self._items[id(node.children[t])]].max() + 1e-10 for t in toks], dtype=np.float64)
        return dict(zip(toks, np.log(best / best.sum())))


@dataclass
class _Beam:
    tokens: tuple
    node: object
    total: float
    steps: list = field(default_factory=list)  # step scores
    llm: list = field(default_factory=list)  # the LLM's log-probs of the tokens


def search(trie, next_logps, num_beams: int, cfg: D3Config = D3Config(), probs: np.ndarray | None = None,
           index: ItemsUnder | None = None) -> list[tuple[int, float]]:
    """D3's beam search over ``trie``; returns ``(item id, score)`` of the completed titles, best first
    (an item once). ``next_logps(parents, tokens, prefixes)`` gives the LLM's log-probs ``[n, V]`` of
    the next token for each new beam: called first with ``(None, None, [()])`` (after the prompt), then
    with the parent index of each new beam, the token it added, and its whole prefix. ``probs``: the
    assistant's item probabilities for this row (None, or ``assistant_weight`` 0: the LLM alone)."""
    w = cfg.assistant_weight if probs is not None else 0.0
    if w > 0 and index is None:
        index = ItemsUnder(trie)
    beams = [_Beam((), trie.root, 0.0)]
    logps = next_logps(None, None, [()])
    finished: list[tuple[float, int]] = []
    for _ in range(trie.max_depth):
        cands = []
        for b, beam in enumerate(beams):
            row = logps[b]
            tf = index.log_tf(beam.node, probs) if w > 0 else None
            for tok, child in beam.node.children.items():
                lp = float(row[tok])
                step = lp if tf is None else (1 - w) * lp + w * tf[tok]
                cands.append((beam.total + step, b, tok, child, step, lp))
        cands.sort(key=lambda c: -c[0])  # stable: ties keep the beam and trie order
        new = []
        for rank, (total, b, tok, child, step, lp) in enumerate(cands[: 2 * num_beams]):
            parent = beams[b]
            if child.item is not None and not child.children:  # a completed title (its EOS taken)
                if rank < num_beams:
                    score = title_score(parent.steps + [step], parent.llm + [lp], cfg.length_norm, cfg.ghost_threshold)
                    finished.append((score, child.item))
                continue
            new.append((b, _Beam(parent.tokens + (tok,), child, total, parent.steps + [step], parent.llm + [lp])))
            if len(new) == num_beams:
                break
        if not new:
            break
        if cfg.length_norm == "none" and len(finished) >= num_beams:
            worst = sorted((s for s, _ in finished), reverse=True)[num_beams - 1]
            if new[0][1].total <= worst:  # step scores are <= 0: no running beam can still overtake
                break
        beams = [nb for _, nb in new]
        logps = next_logps([b for b, _ in new], [nb.tokens[-1] for nb in beams], [nb.tokens for nb in beams])
    out, seen = [], set()
    for score, item in sorted(finished, key=lambda f: -f[0]):
        if item not in seen:
            seen.add(item)
            out.append((item, score))
    return out


class LLMSteps:
    """``next_logps`` for :func:`search` from a causal LM: the prompt once, then one token per beam
    with the key/value cache reordered to the beams' parents."""

    def __init__(self, model, tokenizer, prompt: str):
        import torch

        self.model, self.torch = model, torch
        dev = next(model.parameters()).device
        self.ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"].to(dev)
        self.dev = dev

    def __call__(self, parents, tokens, prefixes):
        torch = self.torch
        with torch.no_grad():
            if parents is None:
                out = self.model(input_ids=self.ids, use_cache=True)
            else:
                self.cache.reorder_cache(torch.tensor(parents, dtype=torch.long, device=self.dev))
                out = self.model(input_ids=torch.tensor(tokens, dtype=torch.long, device=self.dev)[:, None],
                                 cache=self.cache, use_cache=True)
        self.cache = out.cache  # transformers 5.24 names it ``cache`` (``past_key_values`` is deprecated)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu().numpy()


def decode(model, tokenizer, prompts, trie, cfg: D3Config, probs: np.ndarray | None = None, progress: bool = True):
    """Per prompt, the item ids of D3's completed titles, best first (at most ``num_beams``)."""
    from tqdm.auto import tqdm

    from ..decoding import _eval_mode, _warn_if_not_additive

    if prompts:
        _warn_if_not_additive(tokenizer, prompts[0], trie)
    index = ItemsUnder(trie) if probs is not None and cfg.assistant_weight > 0 else None
    out = []
    with _eval_mode(model):
        for i, text in enumerate(tqdm(prompts, desc="D3 decoding", unit="row", disable=not progress)):
            found = search(trie, LLMSteps(model, tokenizer, text), cfg.num_beams, cfg,
                           None if probs is None else probs[i], index)
            out.append([item for item, _ in found])
    return out


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- the recipe ------------------------------------------------------------------------------------


def check(cfg: RunConfig) -> D3Config:
    d3 = settings(cfg)
    if d3.num_beams < max(cfg.eval.ks):
        raise ConfigError(f"d3.num_beams must be >= the largest eval.ks ({max(cfg.eval.ks)}), got {d3.num_beams}",
                          field="num_beams")
    return d3


def evaluate(p, stage: str, d3: D3Config, assistant) -> dict:
    """D3-decode the evaluated rows with the model ``stage`` ended with; recorded as ``Pipeline.evaluate``
    records (metrics ``d3``, the predictions' columns of :func:`sprec_lib.evaluation.evaluate`)."""
    import pandas as pd

    from ..decoding import TitleTrie
    from ..evaluation import eval_rows
    from ..metrics import ranking_metrics, valid_ratio
    from ..prompts import prompt
    from . import sasrec

    if p.run.has_metrics(LABEL):
        return p.run.metrics_of(LABEL)
    p.load(stage)
    ds, ecfg = p.ds, p.cfg.eval
    rows = eval_rows(ds, ecfg)
    histories = [list(s.history) for s in rows]
    probs = softmax_rows(sasrec.scores(assistant, histories)) if assistant is not None else None
    trie = TitleTrie.from_catalogue(ds.catalogue, p.tokenizer, ds.wording)
    topk = decode(p.model, p.tokenizer, [prompt(s, ds.catalogue, ds.wording) for s in rows], trie, d3, probs)
    topk = [t[: max(ecfg.ks)] for t in topk]  # the LLM methods' predictions hold max(ks) items
    titles = [ds.catalogue.titles[t[0]] if t else "" for t in topk]
    targets = [s.target for s in rows]
    metrics: dict = {"valid_ratio": valid_ratio([t or None for t in titles], ds.catalogue.id_of), "rows": len(rows),
                     "mode": "d3", "split": ecfg.split}
    for k in ecfg.ks:
        metrics[f"@{k}"] = ranking_metrics(topk, targets, histories, ds.item_genres(), ds.genres, k)
    metrics["model_stage"] = stage
    metrics["d3"] = {f.name: getattr(d3, f.name) for f in fields(D3Config)}
    predictions = pd.DataFrame({
        "target": pd.array(targets, dtype="Int64"),
        "generation": titles,
        "title": titles,
        "valid": [bool(t) for t in titles],
        "topk": [list(map(int, t)) for t in topk],
    })
    return p.record_evaluation(LABEL, LABEL, predictions, metrics)


def run(p) -> str:
    """SFT (the shared start), the SASRec assistant, then D3 decoding of the SFT model. The run's final
    "stage" is ``d3``: a decoding of ``sft`` (no model of its own; ``metrics/d3.json`` says so)."""
    from . import sasrec

    d3 = check(p.cfg)
    sft = p.shared_start()
    assistant = sasrec.ensure_stage(p) if d3.assistant_weight > 0 else None
    evaluate(p, sft, d3, assistant)
    return LABEL


def plan(cfg) -> list:
    from . import sasrec

    d3 = check(cfg)
    out = []
    if d3.assistant_weight > 0:  # kind "negatives": no StageConfig and no benchmark (see sasrec.plan)
        s = sasrec.settings(cfg)
        out.append(StagePlan(sasrec.STAGE, "negatives", None, None,
                             f"the SASRec assistant on {cfg.train_rows} training rows (d={s.hidden_size}, "
                             f"up to {s.epochs} epochs)"))
    # The time estimate is the grounded evaluation's per row: D3's beam search costs more
    out.append(StagePlan(f"eval {LABEL}", "eval", None, cfg.eval.rows,
                         f"D3 decoding of sft: {d3.num_beams} beams, assistant weight {d3.assistant_weight:g}, "
                         f"length normalisation {d3.length_norm}"))
    return out


register(Method(name="d3", title="D3", run=run, plan=plan, sections=("d3", "sasrec"), order=14,
                paper="d3", doc=__doc__))
