"""LightGCN (He et al., 2020) as RLMRec's code runs it: the backbone every system here shares.

Followed from RLMRec's ``encoder/models/general_cf/lightgcn.py`` and its data handler:

* the graph is the bipartite user-item graph of the training matrix, ``A = [[0, R], [R^T, 0]]``,
  normalised symmetrically, ``D^-1/2 A D^-1/2`` (no self-loops);
* embeddings (Xavier-uniform, ``embedding_size`` 32) are propagated ``layers`` times and the layers
  are **summed** (RLMRec sums where the LightGCN paper averages: the same ranking, another scale);
* while training, edges are dropped with keep rate 0.8 and the survivors are not rescaled
  (RLMRec's ``SpAdjEdgeDrop``);
* the loss is BPR with one uniformly sampled negative per training pair (an item the user has no
  training interaction with), summed and divided by the batch, plus ``reg_weight`` times the squared
  L2 norm of every parameter of the model (RLMRec's ``reg_params``).

Issue 19 asks for ``torch_geometric.nn.models.LightGCN``. The propagation is the three lines of
:meth:`LightGCN.propagate`, written here with ``torch.sparse.mm`` on CSR matrices, so that the runs
need no graph library and RLMRec's edge dropout (drop without rescaling) stays as it is. The tests
check it against a dense computation and against torch_geometric's LightGCN (a test dependency):
the same embeddings to float rounding, times L + 1, since torch_geometric averages the layers
where RLMRec sums them.

Everything random takes a generator: edge dropout a ``torch.Generator``, negatives and batch order a
``numpy.random.Generator``; the trainer seeds both per epoch from the run's seed.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig


def normalized_adjacency(train: sp.csr_matrix) -> Graph:
    """``D^-1/2 A D^-1/2`` of the bipartite graph of ``train`` (users first, then items), as a
    :class:`Graph`; isolated nodes get zero rows."""
    binary = (train > 0).astype(np.float32)
    adj = sp.bmat([[None, binary], [binary.T, None]], format="csr", dtype=np.float32)
    adj.sort_indices()
    adj = adj.tocoo()
    degree = np.asarray(adj.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        d_inv_sqrt = np.where(degree > 0, degree ** -0.5, 0.0)
    values = (d_inv_sqrt[adj.row] * adj.data * d_inv_sqrt[adj.col]).astype(np.float32)
    return Graph(adj.row, adj.col, values, adj.shape[0])


class Graph:
    """A sparse square matrix as edges sorted by (row, column), served as a CSR pair ``(A, A^T)``.

    Edge dropout drops each stored entry on its own (RLMRec's ``SpAdjEdgeDrop``), so the dropped
    matrix is no longer symmetric and the backward pass needs its transpose: :meth:`matrices` builds
    both from the kept edges without sorting (the transpose's order is computed once). CSR because
    ``torch.sparse.mm`` on CSR is about 10x faster forward than on COO on this machine's CPU, and
    :func:`spmm` gives it a backward through ``A^T`` (torch's own CSR backward was as slow as COO's).

    What does not depend on the step's dropout is built here once: both matrices' row pointers, and
    ``A^T``'s column indices and values in its own order. A step then only draws the kept mask and
    selects the kept entries of each (:meth:`_kept`: row pointers from a running count of kept
    entries, no sort, no ``bincount``; the kept positions by numpy's ``flatnonzero``, ~10x faster
    than ``torch.nonzero`` on one thread). The same tensors as building each CSR from its kept
    (row, column, value) triples, bit for bit (``tests/test_cllmr_speed.py``), from the same random
    draw; on ML-1M's 690k edges ~7 ms of CPU a step instead of 18-25 ms (most of a backbone step's overhead
    besides the six sparse products).
    """

    def __init__(self, row: np.ndarray, col: np.ndarray, values: np.ndarray, n: int):
        self.n = n
        self.row, self.col = torch.from_numpy(row.astype(np.int64)), torch.from_numpy(col.astype(np.int64))
        self.values = torch.from_numpy(values.astype(np.float32))
        self.t_order = torch.from_numpy(np.lexsort((row, col)))  # the edges sorted by (column, row)
        self.crow = self._row_pointers(self.row)
        self.t_crow = self._row_pointers(self.col.index_select(0, self.t_order))  # A^T's rows: A's columns
        self.t_col = self.row.index_select(0, self.t_order)
        self.t_values = self.values.index_select(0, self.t_order)

    def _row_pointers(self, sorted_rows: torch.Tensor) -> torch.Tensor:
        crow = torch.zeros(self.n + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.bincount(sorted_rows, minlength=self.n), 0)
        return crow

    def dense(self) -> torch.Tensor:
        out = torch.zeros(self.n, self.n)
        out[self.row, self.col] = self.values
        return out

    def _csr(self, crow, cols, values) -> torch.Tensor:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the one op used here is tested
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, cols, values, (self.n, self.n), check_invariants=False)

    def matrices(self, keep_rate: float = 1.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as CSR tensors, each edge kept with probability ``keep_rate`` (values not
        rescaled, as RLMRec)."""
        if keep_rate >= 1.0:
            if not hasattr(self, "_full"):
                self._full = (self._csr(self.crow, self.col, self.values), self._csr(self.t_crow, self.t_col, self.t_values))
            return self._full
        keep = torch.rand(len(self.values), generator=generator) < keep_rate
        return (self._kept(keep, self.crow, self.col, self.values),
                self._kept(keep.index_select(0, self.t_order), self.t_crow, self.t_col, self.t_values))

    def _kept(self, keep: torch.Tensor, crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The CSR matrix ``(crow, cols, values)`` with only the entries where ``keep`` (in storage
        order) is true: a row's new start is the number of kept entries before its old start."""
        kept_before = torch.zeros(len(keep) + 1, dtype=torch.int64)
        torch.cumsum(keep, 0, out=kept_before[1:])
        if keep.device.type == "cpu":
            edges = torch.from_numpy(np.flatnonzero(keep.numpy()).astype(np.int64, copy=False))
        else:
            edges = keep.nonzero().squeeze(1)
        return self._csr(kept_before[crow], cols.index_select(0, edges), values.index_select(0, edges))


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, a_t, x):
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.a_t, grad)


def spmm(a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` with the gradient ``A^T @ grad`` (both CSR)."""
    return _SpMM.apply(a, a_t, x)


class LightGCN(nn.Module):
    """User and item embeddings, propagated over the normalised graph and summed over layers."""

    def __init__(self, n_users: int, n_items: int, graph: Graph, cfg: BackboneConfig = BackboneConfig()):
        super().__init__()
        self.n_users, self.n_items, self.cfg, self.graph = n_users, n_items, cfg, graph
        self.user_embeds = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, cfg.embedding_size)))
        self.item_embeds = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, cfg.embedding_size)))

    def propagate(self, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        """``sum_{l=0..L} A^l E``: all nodes' final embeddings (users first)."""
        embeds = torch.cat([self.user_embeds, self.item_embeds])
        total = embeds
        for _ in range(self.cfg.layers):
            embeds = spmm(a, a_t, embeds)
            total = total + embeds
        return total

    def forward(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, item) final embeddings; with edge dropout while ``self.training``."""
        a, a_t = self.graph.matrices(self.cfg.keep_rate if self.training else 1.0, generator)
        out = self.propagate(a, a_t)
        return out[:self.n_users], out[self.n_users:]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """RLMRec's ``cal_bpr_loss`` divided by the batch: ``mean softplus(neg - pos)``."""
    return F.softplus(neg_scores - pos_scores).mean()


def l2_of_parameters(model: nn.Module) -> torch.Tensor:
    """RLMRec's ``reg_params``: the sum of every parameter's squared L2 norm."""
    return sum(p.square().sum() for p in model.parameters())


def sample_negatives(train: sp.csr_matrix, users: np.ndarray, rng: np.random.Generator,
                     max_rounds: int = 100) -> np.ndarray:
    """Per user of ``users``, an item drawn uniformly among those it has no training interaction with
    (rejection sampling; RLMRec's ``sample_negs``, vectorised)."""
    n_items = train.shape[1]
    coo = train.tocoo()
    keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
    negs = rng.integers(n_items, size=len(users))
    for _ in range(max_rounds):
        pos = np.searchsorted(keys, users * n_items + negs)
        bad = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == users * n_items + negs)
        if not bad.any():
            return negs
        negs[bad] = rng.integers(n_items, size=int(bad.sum()))
    raise RuntimeError("could not sample negatives: some user has interacted with (almost) every item")


def epoch_batches(train: sp.csr_matrix, batch_size: int, rng: np.random.Generator):
    """One epoch of (users, positives, negatives) int64 tensors: every training pair once, shuffled,
    each with a fresh negative (RLMRec resamples the negatives every epoch)."""
    coo = train.tocoo()
    users, pos = coo.row.astype(np.int64), coo.col.astype(np.int64)
    negs = sample_negatives(train, users, rng)
    order = rng.permutation(len(users))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield torch.from_numpy(users[idx]), torch.from_numpy(pos[idx]), torch.from_numpy(negs[idx])
