"""SSE, CLLMR's spectrum-based side-information encoder: a conditional VAE whose prior comes from the SVD.

What the paper says (its summary; the full text could not be read): the user-item interaction
matrix's truncated SVD (rank ``r``) gives a spectrum that serves as the conditional prior of the
latent side representation, in an identifiable conditional VAE (iVAE: Khemakhem et al., 2020);
small noise is added to the spectrum, with a sign function keeping its direction; rank 32, hidden
32 and noise 0.01 are its settings. The point: the side representations aligned with the
collaborative ones keep many dimensions (no dimensional collapse).

What we chose, where it is silent (each a setting of :class:`~sprec_lib.cllmr.config.SSEConfig`
where it is a number):

* **The condition.** ``R ≈ U S V^T`` (rank ``r``, of the 0/1 training matrix). A user's condition is
  its row of ``U``, an item's its row of ``V``, each scaled by the spectrum relative to its largest
  value and by ``sqrt(rows)`` so that the first coordinate has unit mean square:
  ``c_u = sqrt(n_users) U[u] * s / s_1``, ``c_i = sqrt(n_items) V[i] * s / s_1``
  (:func:`spectral_condition`; ``sse.condition=whiten`` drops the ``s / s_1`` weights). The
  singular vectors' signs are fixed (each vector's largest entry positive) so the condition does
  not depend on the solver.
* **The noise.** While training, every step: ``c~ = c + sign(c) * noise * |xi|``, ``xi ~ N(0, 1)``
  per entry (:func:`sign_noise`): the perturbation points the way each coordinate already points,
  so no coordinate changes sign (SimGCL's trick; the tests check it). None at inference.
* **The iVAE.** Prior ``p(z | c) = N(mu_p(c), diag exp(lv_p(c)))`` with ``mu_p``, ``lv_p`` linear in
  ``c`` (iVAE's conditionally factorial prior, its natural parameters a function of the condition);
  encoder ``q(z | x, c)`` an MLP of the profile vector and the condition; decoder ``p(x | z)`` an MLP
  with unit-variance Gaussian output. Loss per node ``0.5 |x - x^|^2 + kl_weight * KL(q || p)``
  (:func:`gaussian_kl`, closed form), averaged over all nodes, times ``vae_weight``.
* **The side representation** is ``z`` (``hidden`` = 32 = the collaborative size, so no projection;
  a linear one is added when they differ): sampled by reparameterisation while training, the mean
  ``mu_q`` at inference. It replaces RLMRec's MLP output in the InfoNCE alignment.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


def truncated_svd(train: sp.csr_matrix, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U [n_users, k], s [k], V [n_items, k]`` with ``k = min(rank, min(shape) - 1)``, values
    descending, each left vector's largest-magnitude entry positive (the right vector follows)."""
    from scipy.sparse.linalg import svds

    k = min(rank, min(train.shape) - 1)
    v0 = np.random.default_rng(seed).uniform(-1, 1, size=min(train.shape))
    u, s, vt = svds(train.astype(np.float64), k=k, v0=v0, random_state=seed)
    order = np.argsort(-s, kind="stable")
    u, s, v = u[:, order], s[order], vt[order].T
    flip = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    flip[flip == 0] = 1.0
    return u * flip, s, v * flip


def spectral_condition(train: sp.csr_matrix, rank: int, seed: int = 0,
                       scale: str = "spectrum") -> tuple[np.ndarray, np.ndarray]:
    """The SSE's conditions ``(c_users [n_users, k], c_items [n_items, k])`` (module docstring),
    zero-padded to ``rank`` columns when the matrix has lower rank than asked. ``scale``:
    ``"spectrum"`` weights column ``j`` by ``s_j / s_1``; ``"whiten"`` leaves every column at unit
    mean square (the singular vectors alone)."""
    if scale not in ("spectrum", "whiten"):
        raise ValueError(f"scale must be spectrum or whiten, got {scale!r}")
    u, s, v = truncated_svd(train, rank, seed)
    weight = s / s[0] if s[0] > 0 and scale == "spectrum" else np.ones_like(s)
    cu = np.sqrt(u.shape[0]) * u * weight
    ci = np.sqrt(v.shape[0]) * v * weight
    pad = rank - len(s)
    if pad > 0:
        cu, ci = np.pad(cu, ((0, 0), (0, pad))), np.pad(ci, ((0, 0), (0, pad)))
    return cu.astype(np.float32), ci.astype(np.float32)


def sign_noise(c: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``c + sign(c) * scale * |xi|``, ``xi ~ N(0, 1)``: every entry moves away from zero, keeping its
    sign (an entry that is exactly 0 stays 0)."""
    if scale == 0:
        return c
    xi = torch.randn(c.shape, generator=generator, dtype=c.dtype)
    return c + torch.sign(c) * scale * xi.abs()


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_q, diag e^lv_q) || N(mu_p, diag e^lv_p))`` per row (summed over the last dimension):
    ``0.5 * sum [lv_p - lv_q + (e^lv_q + (mu_q - mu_p)^2) / e^lv_p - 1]``."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).square()) / logvar_p.exp() - 1).sum(-1)


class _HalfSquaredError(torch.autograd.Function):
    """``0.5 * |y - x|^2`` per row (the VAE's reconstruction term), as one autograd node.

    The chain ``0.5 * (y - x).square().sum(-1)`` keeps ``y - x`` and, backward, makes ``2 * (y - x)``
    and multiplies twice over the [nodes, d] matrix (``square``'s backward, after the sum's
    expanded ``0.5 * grad``); here the kept difference is multiplied once by each row's gradient.
    The same forward, and the same gradient bit for bit: ``(0.5 g) (2 d)`` and ``g d`` round the
    same exact product (0.5 and 2 are powers of two). On ML-1M (9,567 nodes x 384) a few ms a step."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        diff = y - x
        ctx.save_for_backward(diff)
        return 0.5 * diff.square().sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (diff,) = ctx.saved_tensors
        need_y, need_x = ctx.needs_input_grad
        grad_y = diff * grad.unsqueeze(-1) if (need_y or need_x) else None
        return grad_y if need_y else None, -grad_y if need_x else None


def half_squared_error(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``0.5 * ((y - x) ** 2).sum(-1)`` (:class:`_HalfSquaredError`)."""
    return _HalfSquaredError.apply(y, x)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    mid = (d_in + d_out) // 2
    net = nn.Sequential(nn.Linear(d_in, mid), nn.LeakyReLU(), nn.Linear(mid, d_out))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
    return net


class SSE(nn.Module):
    """The conditional VAE of the module docstring. ``forward`` returns the side representation and
    the per-node VAE loss terms."""

    def __init__(self, d_in: int, rank: int, hidden: int, d_out: int, noise: float = 0.01):
        super().__init__()
        self.rank, self.hidden, self.noise = rank, hidden, noise
        self.encoder = _mlp(d_in + rank, 2 * hidden)
        self.prior = nn.Linear(rank, 2 * hidden)
        self.decoder = _mlp(hidden, d_in)
        self.out = nn.Identity() if hidden == d_out else nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """``x [n, d_in]`` profile vectors, ``c [n, rank]`` conditions. Training: the condition gets the
        sign noise and ``z`` is sampled; eval: neither. Returns ``(side [n, d_out], {recon, kl})`` with
        ``recon`` and ``kl`` per node."""
        if self.training:
            c = sign_noise(c, self.noise, generator)
        mu_q, logvar_q = self.encoder(torch.cat([x, c], dim=-1)).chunk(2, dim=-1)
        mu_p, logvar_p = self.prior(c).chunk(2, dim=-1)
        if self.training:
            eps = torch.randn(mu_q.shape, generator=generator, dtype=mu_q.dtype)
            z = mu_q + (0.5 * logvar_q).exp() * eps
        else:
            z = mu_q
        recon = half_squared_error(self.decoder(z), x)
        return self.out(z), {"recon": recon, "kl": gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)}
