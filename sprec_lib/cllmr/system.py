"""The three systems as one module: LightGCN, plus an aligned side encoder, plus a propensity branch.

=============  =================================================================================
``backbone``   LightGCN alone: BPR + L2 (:mod:`~sprec_lib.cllmr.lightgcn`); score ``<e_u, e_i>``.
``rlmrec-con`` + the MLP projector of the profile vectors, aligned by InfoNCE
               (:mod:`~sprec_lib.cllmr.rlmrec`); score ``<e_u, e_i>``, as RLMRec.
``cllmr``      + the SSE (:mod:`~sprec_lib.cllmr.sse`; ``sse.encoder=mlp``: the MLP instead) aligned
               the same way, its VAE loss, and the propensity branch ``P_i`` on the item's side
               representation (:mod:`~sprec_lib.cllmr.counterfactual`); factual score
               ``<e_u, e_i> * sigmoid(P_i)``, counterfactual score ``(<e_u, e_i> - c) * sigmoid(P_i)``.
=============  =================================================================================

The BPR loss of ``cllmr`` is on its factual score; the propensity branch adds
``propensity_weight * BPR(P_pos, P_neg)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import CllmrConfig
from .counterfactual import counterfactual_score, outcome
from .lightgcn import Graph, LightGCN, bpr_loss, l2_of_parameters
from .rlmrec import MLPProjector, alignment_loss
from .sse import SSE


class Recommender(nn.Module):
    """One system (``cfg.system``) over one training graph.

    ``graph``: the normalised adjacency (:class:`~sprec_lib.cllmr.lightgcn.Graph`); ``user_side``/``item_side``: profile vectors (None for the
    backbone); ``user_cond``/``item_cond``: the SSE's spectral conditions (cllmr with the SSE only).
    """

    def __init__(self, cfg: CllmrConfig, n_users: int, n_items: int, graph: Graph,
                 user_side: np.ndarray | None = None, item_side: np.ndarray | None = None,
                 user_cond: np.ndarray | None = None, item_cond: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = LightGCN(n_users, n_items, graph, cfg.backbone)
        self.encoder = self.propensity = None
        emb = cfg.backbone.embedding_size
        if cfg.uses_side_info:
            if user_side is None or item_side is None:
                raise ValueError(f"system {cfg.system} needs the users' and items' profile vectors")
            self.register_buffer("user_side", torch.as_tensor(user_side, dtype=torch.float32), persistent=False)
            self.register_buffer("item_side", torch.as_tensor(item_side, dtype=torch.float32), persistent=False)
            d = self.item_side.shape[1]
            if cfg.system == "cllmr" and cfg.sse.encoder == "sse":
                if user_cond is None or item_cond is None:
                    raise ValueError("the SSE needs the spectral conditions")
                self.register_buffer("user_cond", torch.as_tensor(user_cond, dtype=torch.float32), persistent=False)
                self.register_buffer("item_cond", torch.as_tensor(item_cond, dtype=torch.float32), persistent=False)
                # The SSE encodes every user and item at each step: their profile vectors and conditions
                # stacked once here, not concatenated anew at each step (the same tensors).
                self.register_buffer("node_side", torch.cat([self.user_side, self.item_side]), persistent=False)
                self.register_buffer("node_cond", torch.cat([self.user_cond, self.item_cond]), persistent=False)
                self.encoder = SSE(d, cfg.sse.rank, cfg.sse.hidden, emb, cfg.sse.noise)
            else:
                self.encoder = MLPProjector(d, emb)
        if cfg.system == "cllmr":
            self.propensity = nn.Linear(emb, 1)

    @property
    def uses_sse(self) -> bool:
        return isinstance(self.encoder, SSE)

    def side(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(users', items' side representations, VAE terms per node or {})."""
        if self.uses_sse:
            n_users = self.user_side.shape[0]
            rep, terms = self.encoder(self.node_side, self.node_cond, generator)
            return rep[:n_users], rep[n_users:], terms
        return self.encoder(self.user_side), self.encoder(self.item_side), {}

    def loss(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The system's training loss on one batch, and its parts (floats, for the log)."""
        cfg = self.cfg
        u_emb, i_emb = self.backbone(generator)
        eu, ep, en = u_emb[users], i_emb[pos], i_emb[negs]
        m_pos, m_neg = (eu * ep).sum(-1), (eu * en).sum(-1)
        parts: dict[str, torch.Tensor] = {}
        if self.encoder is not None:
            u_side, i_side, terms = self.side(generator)
            parts["kd"] = cfg.align.kd_weight * alignment_loss(u_emb, i_emb, u_side, i_side, users, pos, negs,
                                                               cfg.align.kd_temperature, cfg.align.user_candidates,
                                                               fused=cfg.train.fused_infonce,
                                                               blocked=cfg.train.blocked_infonce)
            if terms:
                parts["vae"] = cfg.sse.vae_weight * (terms["recon"] + cfg.sse.kl_weight * terms["kl"]).mean()
        if self.propensity is not None:
            p = self.propensity(i_side).squeeze(-1)
            parts["bpr"] = bpr_loss(outcome(m_pos, p[pos]), outcome(m_neg, p[negs]))
            parts["propensity"] = cfg.cf.propensity_weight * bpr_loss(p[pos], p[negs])
        else:
            parts["bpr"] = bpr_loss(m_pos, m_neg)
        parts["reg"] = cfg.backbone.reg_weight * l2_of_parameters(self)
        total = sum(parts.values())
        return total, {k: v.item() for k, v in parts.items()}

    @torch.no_grad()
    def inference(self) -> dict[str, torch.Tensor]:
        """Everything scoring needs, computed once in eval mode: the final embeddings, the items'
        side representations and propensity logits (where the system has them)."""
        was = self.training
        self.eval()
        users, items = self.backbone()
        out = {"users": users, "items": items}
        if self.encoder is not None:
            out["user_side"], out["item_side"], _ = self.side()
        if self.propensity is not None:
            out["propensity"] = self.propensity(out["item_side"]).squeeze(-1)
        self.train(was)
        return out

    @staticmethod
    def scorer(state: dict[str, torch.Tensor], kind: str = "factual", reference: float = 0.0):
        """``score(user_rows) -> [len, n_items]`` from :meth:`inference`'s ``state``: ``factual`` (the
        system's own score) or ``counterfactual`` (TE - NDE with the matching's reference)."""
        if kind not in ("factual", "counterfactual"):
            raise ValueError(f"kind must be factual or counterfactual, got {kind!r}")
        users, items, p = state["users"], state["items"], state.get("propensity")

        def score(rows: torch.Tensor) -> torch.Tensor:
            m = users[rows] @ items.T
            if p is None:
                return m
            return outcome(m, p) if kind == "factual" else counterfactual_score(m, p, reference)
        return score

    @staticmethod
    def mean_matching(state: dict[str, torch.Tensor], users: np.ndarray, items: np.ndarray) -> float:
        """The mean of ``<e_u, e_i>`` over the given pairs (the default reference ``c``)."""
        u, i = torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
        return float((state["users"][u] * state["items"][i]).sum(-1).mean())
