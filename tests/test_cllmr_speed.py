"""The CLLMR training step's speed-ups compute what the code before them computed.

* the edge-dropped adjacency (:meth:`Graph.matrices`): the same CSR tensors, bit for bit, from the
  same random draw, as building them from the kept (row, column, value) triples;
* the blocked log-sum-exp of the fused InfoNCE (``train.blocked_infonce``): the same value and
  gradients as the unblocked one and as ``torch.logsumexp`` by autograd, to float rounding;
* the VAE's reconstruction term (:func:`sprec_lib.cllmr.sse.half_squared_error`): autograd's
  chain, bit for bit;
* one whole training step of RLMRec-Con and of CLLMR on an ML-100K-sized random graph: loss and
  gradient of every parameter against the step as written before (transcribed here: per-step
  concatenation of the SSE's inputs, its reconstruction by autograd's chain, the old adjacency
  construction, the unblocked InfoNCE): equal bit for bit with ``blocked_infonce=false``, within
  1e-6 relative (norm of the difference) and 1e-5 elementwise with it on (the default), and the
  random generator left in the same state (the same draws, hence the same seeded run).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sprec_lib.cllmr import rlmrec
from sprec_lib.cllmr.config import cllmr_config
from sprec_lib.cllmr.counterfactual import outcome
from sprec_lib.cllmr.lightgcn import bpr_loss, epoch_batches, l2_of_parameters, normalized_adjacency
from sprec_lib.cllmr.rlmrec import _LogSumExpOfProducts, alignment_loss
from sprec_lib.cllmr.run import CllmrRun
from sprec_lib.cllmr.side_info import user_vectors
from sprec_lib.cllmr.sse import gaussian_kl, half_squared_error, sign_noise, spectral_condition
from sprec_lib.cllmr.system import Recommender


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def _random_interactions(n_users=943, n_items=1682, per_user=(20, 120), seed=0) -> sp.csr_matrix:
    """ML-100K's size (943 x 1,682, ~65k positives), popularity skewed like a real log."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rows, cols = [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(*per_user), replace=False, p=weights / weights.sum())
        rows += [u] * len(items)
        cols += list(items)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


# -- the adjacency --------------------------------------------------------------------------------


def _old_matrices(graph, keep_rate, generator):
    """``Graph.matrices`` before the speed-up, transcribed: each CSR from its kept triples."""
    def csr(rows, cols, values):
        crow = torch.zeros(graph.n + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=graph.n), 0)
        return torch.sparse_csr_tensor(crow, cols, values, (graph.n, graph.n), check_invariants=False)

    def pair(edges, t_edges):
        a = csr(*(x.index_select(0, edges) for x in (graph.row, graph.col, graph.values)))
        return a, csr(*(x.index_select(0, t_edges) for x in (graph.col, graph.row, graph.values)))

    if keep_rate >= 1.0:
        return pair(torch.arange(len(graph.values)), graph.t_order)
    keep = torch.rand(len(graph.values), generator=generator) < keep_rate
    return pair(keep.nonzero().squeeze(1), graph.t_order[keep[graph.t_order]])


def _same_csr(x: torch.Tensor, y: torch.Tensor) -> bool:
    return (torch.equal(x.crow_indices(), y.crow_indices()) and torch.equal(x.col_indices(), y.col_indices())
            and torch.equal(x.values(), y.values()))


@pytest.mark.parametrize("keep_rate, seed", [(0.8, 0), (0.8, 1), (0.3, 2), (1.0, 0)])
def test_dropped_adjacency_is_the_old_one_bit_for_bit(keep_rate, seed):
    keep_user = np.ones(200, dtype=np.float32)
    keep_user[7] = 0  # a user without edges: an empty row in both matrices
    train = (sp.diags(keep_user) @ _random_interactions(200, 300, (1, 40), seed=3)).tocsr()
    train.eliminate_zeros()
    graph = normalized_adjacency(train)
    g_new, g_old = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    new, old = graph.matrices(keep_rate, g_new), _old_matrices(graph, keep_rate, g_old)
    assert _same_csr(new[0], old[0]) and _same_csr(new[1], old[1])
    torch.testing.assert_close(new[1].to_dense(), new[0].to_dense().T, rtol=0, atol=0)
    assert torch.equal(g_new.get_state(), g_old.get_state())  # the same draws


# -- the blocked log-sum-exp ----------------------------------------------------------------------


def _lse_and_grads(fn, a, c, w):
    a, c = a.clone().requires_grad_(), c.clone().requires_grad_()
    out = fn(a, c)
    (out * w).sum().backward()
    return out.detach(), a.grad, c.grad


@pytest.mark.parametrize("temperature", [0.2, 0.004])  # |logits| <= 5 (unshifted) / up to 250 (max-shifted)
@pytest.mark.parametrize("with_shift", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 64, None])
def test_blocked_log_sum_exp_against_torch_logsumexp(temperature, with_shift, rows):
    g = torch.Generator().manual_seed(5)
    a = rlmrec._unit(torch.randn(50, 16, generator=g, dtype=torch.float64)) / temperature
    c = rlmrec._unit(torch.randn(37, 16, generator=g, dtype=torch.float64))
    shift = torch.log(torch.randint(1, 9, (37,), generator=g).double()) if with_shift else None
    w = torch.rand(50, generator=g, dtype=torch.float64)
    want = _lse_and_grads(lambda a, c: torch.logsumexp(a @ c.T + (0 if shift is None else shift), -1), a, c, w)
    got = _lse_and_grads(lambda a, c: _LogSumExpOfProducts.apply(a, c, shift, rows), a, c, w)
    assert all(torch.isfinite(x).all() for x in got)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10 * float(y.abs().max()))


def test_blocked_alignment_loss_on_ml1m_shapes_float32(monkeypatch):
    """The three InfoNCE terms with ML-1M's batch and sizes, float32, blocked against unblocked."""
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(n, 32, generator=g) for n in (6034, 3533, 6034, 3533)]
    users, pos, negs = (torch.randint(n, (4096,), generator=g) for n in (6034, 1200, 3533))

    def grads(blocked):
        xs = [b.clone().requires_grad_() for b in base]
        loss = alignment_loss(*xs, users, pos, negs, 0.2, blocked=blocked)
        loss.backward()
        return [loss.detach()] + [x.grad for x in xs]

    old = grads(False)
    for elements in (rlmrec.BLOCK_ELEMENTS, 2**14):  # the default blocks, and many small ones
        monkeypatch.setattr(rlmrec, "BLOCK_ELEMENTS", elements)
        for x, y in zip(grads(True), old):
            assert float((x - y).norm() / y.norm()) < 1e-6
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6 * float(y.abs().max()))


# -- the VAE's reconstruction term ----------------------------------------------------------------


def test_half_squared_error_is_the_autograd_chain_bit_for_bit():
    g = torch.Generator().manual_seed(7)
    y0, x0 = torch.randn(300, 48, generator=g), torch.randn(300, 48, generator=g)
    w = torch.rand(300, generator=g) * 1e-4  # as the VAE loss's weight over the nodes

    def run(fn):
        y, x = y0.clone().requires_grad_(), x0.clone().requires_grad_()
        out = fn(y, x)
        (out * w).sum().backward()
        return out.detach(), y.grad, x.grad

    for got, want in zip(run(half_squared_error), run(lambda y, x: 0.5 * (y - x).square().sum(-1))):
        assert torch.equal(got, want)


# -- one training step, old and new ---------------------------------------------------------------


def _old_sse(sse, x, c, generator):
    """``SSE.forward`` (training) before the speed-ups, transcribed: the reconstruction by autograd's chain."""
    c = sign_noise(c, sse.noise, generator)
    mu_q, logvar_q = sse.encoder(torch.cat([x, c], dim=-1)).chunk(2, dim=-1)
    mu_p, logvar_p = sse.prior(c).chunk(2, dim=-1)
    eps = torch.randn(mu_q.shape, generator=generator, dtype=mu_q.dtype)
    z = mu_q + (0.5 * logvar_q).exp() * eps
    recon = 0.5 * (sse.decoder(z) - x).square().sum(-1)
    return sse.out(z), {"recon": recon, "kl": gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)}


def _old_loss(model: Recommender, users, pos, negs, generator):
    """``Recommender.loss`` as it was before the speed-ups, transcribed (its parts as tensors)."""
    cfg, bb = model.cfg, model.backbone
    out = bb.propagate(*_old_matrices(bb.graph, cfg.backbone.keep_rate, generator))
    u_emb, i_emb = out[:bb.n_users], out[bb.n_users:]
    eu, ep, en = u_emb[users], i_emb[pos], i_emb[negs]
    m_pos, m_neg = (eu * ep).sum(-1), (eu * en).sum(-1)
    parts = {}
    if model.uses_sse:
        rep, terms = _old_sse(model.encoder, torch.cat([model.user_side, model.item_side]),
                              torch.cat([model.user_cond, model.item_cond]), generator)
        u_side, i_side = rep[:bb.n_users], rep[bb.n_users:]
    else:
        u_side, i_side, terms = model.encoder(model.user_side), model.encoder(model.item_side), {}
    parts["kd"] = cfg.align.kd_weight * alignment_loss(u_emb, i_emb, u_side, i_side, users, pos, negs,
                                                       cfg.align.kd_temperature, cfg.align.user_candidates,
                                                       fused=cfg.train.fused_infonce, blocked=False)
    if terms:
        parts["vae"] = cfg.sse.vae_weight * (terms["recon"] + cfg.sse.kl_weight * terms["kl"]).mean()
    if model.propensity is not None:
        p = model.propensity(i_side).squeeze(-1)
        parts["bpr"] = bpr_loss(outcome(m_pos, p[pos]), outcome(m_neg, p[negs]))
        parts["propensity"] = cfg.cf.propensity_weight * bpr_loss(p[pos], p[negs])
    else:
        parts["bpr"] = bpr_loss(m_pos, m_neg)
    parts["reg"] = cfg.backbone.reg_weight * l2_of_parameters(model)
    return sum(parts.values()), parts


@pytest.fixture(scope="module")
def ml100k_sized():
    train = _random_interactions()
    items = np.random.default_rng(1).standard_normal((train.shape[1], 384)).astype(np.float32)
    users = user_vectors(train, items)
    cu, ci = spectral_condition(train, 32, seed=0)
    batch = next(epoch_batches(train, 4096, np.random.default_rng(2)))
    return train, normalized_adjacency(train), users, items, cu, ci, batch


@pytest.mark.parametrize("system", ["rlmrec-con", "cllmr"])
@pytest.mark.parametrize("blocked", [False, True])
def test_one_training_step_is_the_old_one(system, blocked, ml100k_sized, monkeypatch):
    train, graph, users_side, items_side, cu, ci, (users, pos, negs) = ml100k_sized
    monkeypatch.setattr(rlmrec, "BLOCK_ELEMENTS", 2**15)  # ~35 blocks of the user term, as on ML-1M
    cfg = cllmr_config([f"train.blocked_infonce={str(blocked).lower()}"], system=system, seed=3)
    torch.manual_seed(cfg.seed)
    model = Recommender(cfg, train.shape[0], train.shape[1], graph, users_side, items_side, cu, ci)
    params = dict(model.named_parameters())

    def step(loss_fn):
        model.zero_grad()
        gen = torch.Generator().manual_seed(11)
        loss, parts = loss_fn(users, pos, negs, gen)
        loss.backward()
        return loss.detach(), parts, {k: p.grad.clone() for k, p in params.items()}, gen.get_state()

    new_loss, new_parts, new_grads, new_state = step(model.loss)
    old_loss, old_parts, old_grads, old_state = step(lambda *a: _old_loss(model, *a))
    assert torch.equal(new_state, old_state)  # the same random draws
    assert set(new_parts) == set(old_parts) and ("vae" in new_parts) == (system == "cllmr")
    if not blocked:  # the bit-exact changes only: nothing moved
        assert torch.equal(new_loss, old_loss) and new_parts == {k: v.item() for k, v in old_parts.items()}
        assert all(torch.equal(new_grads[k], old_grads[k]) for k in params)
        return
    assert abs(float(new_loss - old_loss)) <= 1e-6 * abs(float(old_loss))
    for k in params:
        g_new, g_old = new_grads[k], old_grads[k]
        assert float((g_new - g_old).norm() / g_old.norm()) < 1e-6, k
        torch.testing.assert_close(g_new, g_old, rtol=1e-5, atol=1e-6 * float(g_old.abs().max()), msg=k)


def test_the_speed_switches_do_not_make_another_run(tmp_path):
    run = CllmrRun(tmp_path / "r", cllmr_config(["train.blocked_infonce=false"], system="rlmrec-con"))
    assert run.made_with(cllmr_config(system="rlmrec-con"))
    assert run.made_with(cllmr_config(["train.fused_infonce=false", "train.torch_threads=2"], system="rlmrec-con"))
    assert not run.made_with(cllmr_config(["align.kd_weight=0.1"], system="rlmrec-con"))
