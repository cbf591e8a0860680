# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The theorem: DPO is mode-seeking, self-play pushes back
#
# SPRec's section 4.1 (with its Appendix A) says that DPO trained with **uniformly random
# negatives** does not learn the data's popularity $p_D$: it learns a *sharpened* copy of it,
# so popular items get recommended even more often than users pick them. Section 4.2 says that
# taking the negatives from **the model itself** (self-play) turns that around: the items the
# model over-recommends are the ones it is trained away from.
#
# This notebook checks both claims on a toy catalogue, where a "model" is just a probability
# vector $\pi$ over $n$ items for one user context. Everything it computes comes from
# `sprec_lib.theory` (whose docstring has the derivations) and every figure from
# `sprec_lib.plots`.

# %% tags=["parameters"]
n_items: int = 30  # catalogue size of the toy
zipf_a: float = 1.0  # popularity skew: p_D(i) ~ (i + 1)^-zipf_a
beta: float = 0.1  # the DPO temperature (the public code's value; the text asks only 0 < beta < 1)
head_k: int = 3  # "the head": this many most popular items
betas_shown: list[float] = [0.1, 0.5, 1.0, 2.0]  # optima drawn item by item
zipf_as: list[float] = [0.5, 1.0, 1.5]  # popularity skews compared
beta_min: float = 0.05  # range of the beta sweep
beta_max: float = 5.0
n_betas: int = 25
optimiser_steps: int = 200  # L-BFGS steps of the numeric check
optimiser_seed: int = 0
start_beta: float = 0.5  # start: DPO optimum at this beta, p_D^(1/start_beta)
iterations: int = 8  # self-play iterations
sft_weight: float = 0.1  # SFT step: a geometric step toward p_D (0: none)
dpo_steps: int = 10  # gradient steps of each iteration's short DPO "epoch"
dpo_lr: float = 6.0  # their step size
stable_beta: float = 2.0  # a beta where the exact iteration converges
quick: bool = False  # shrink every size (or set SPREC_QUICK to 1)

# %%
import numpy as np
import pandas as pd
import torch

from sprec_lib import book, plots, theory

quick = book.quick_mode(quick)
size = book.sizes("01_theorem", quick, n_items=n_items, iterations=iterations,
                  optimiser_steps=optimiser_steps, n_betas=n_betas)
size

# %% [markdown]
# ## 1. The toy catalogue
#
# Positives come from a Zipf popularity $p_D(i) \propto (i+1)^{-a}$; DPO's negatives from the
# uniform distribution $q(i) = 1/n$, as in the DPO baseline that SPRec criticises. With the
# implicit reward $h(y) = \beta \log \frac{\pi(y)}{\pi_\mathrm{ref}(y)}$, the expected DPO loss
# over pairs $y_w \sim p_D$, $y_l \sim q$ is
#
# $$
# \mathcal{L}(\pi) = \sum_{w,\,l} p_D(w)\, q(l)\, \bigl[-\log \sigma\bigl(h(w) - h(l)\bigr)\bigr].
# $$

# %%
p_data = theory.zipf(size.n_items, zipf_a)
q = theory.uniform(size.n_items)
print(f"{size.n_items} items; the top {head_k} hold "
      f"{theory.head_mass(p_data, head_k):.1%} of the data")

# %% [markdown]
# ## 2. The closed form and the numbers agree
#
# Grouping the two ordered pairs of each item pair $\{j, k\}$ turns the loss into a sum of
# Bradley-Terry fits, each minimised exactly at $h(j) - h(k) = \log\frac{p_D(j)}{q(j)} -
# \log\frac{p_D(k)}{q(k)}$. One $h$ attains all of them, so the minimiser is
#
# $$
# \pi^*(y) = \frac{1}{Z}\, \pi_\mathrm{ref}(y) \left(\frac{p_D(y)}{q(y)}\right)^{1/\beta}.
# $$
#
# Independently, we minimise $\mathcal{L}$ over the logits of $\pi$ numerically (L-BFGS in
# float64, from a random start) and compare, for several $\beta$ and for two references: uniform
# ($\pi_\mathrm{ref} = q$, DPO from scratch) and $\pi_\mathrm{ref} = p_D$ (DPO after a converged
# SFT, the usual pipeline). The loss it reaches is also compared with the minimum value
# $\mathcal{L}^*$ (`theory.dpo_min_loss`), which depends on neither $\beta$ nor $\pi_\mathrm{ref}$.

# %%
rows = []
for reference, pi_ref in {"uniform": q, "p_D (after SFT)": p_data}.items():
    for b in betas_shown:
        closed = theory.dpo_optimum(p_data, q, pi_ref, b)
        numeric, losses = theory.optimise_dpo(
            p_data, q, pi_ref, b, steps=size.optimiser_steps,
            seed=optimiser_seed)
        rows.append({
            "reference": reference,
            "beta": b,
            "max abs error": np.abs(numeric - closed).max(),
            "loss - L*": losses[-1] - theory.dpo_min_loss(p_data, q),
            f"head mass (top {head_k})": theory.head_mass(closed, head_k),
        })
check = pd.DataFrame(rows)
max_abs_error = book.record("theorem_max_abs_error",
                            check["max abs error"].max())
book.record("theorem_max_loss_gap", check["loss - L*"].abs().max())
print(f"max |pi_numeric - pi_closed| over all cases: {max_abs_error:.2e}")
check

# %% [markdown]
# ## 3. What the optimum looks like: mode-seeking
#
# SFT minimises the forward KL divergence to the data, so its optimum is $p_D$ itself. DPO's
# optimum with uniform negatives and reference is $\pi^* \propto p_D^{1/\beta}$: at the public
# code's $\beta = 0.1$ (the text asks only $0 < \beta < 1$) the popularity is raised to the 10th power, and nearly all the mass lands on the
# first items (the mode-seeking picture of the paper's Fig. 2).

# %%
fig = plots.plot_optimum_vs_beta(p_data, betas_shown)

# %% [markdown]
# How much of the optimum the head takes, over a sweep of $\beta$ and three popularity skews.
# After SFT ($\pi_\mathrm{ref} = p_D$) DPO's optimum is $p_D^{1 + 1/\beta}$: sharper still.

# %%
betas = np.geomspace(beta_min, beta_max, size.n_betas)
head = plots.head_mass_table(size.n_items, zipf_as, betas, head_k)
fig = plots.plot_head_mass(head, head_k, mark_beta=beta)
at_beta = plots.head_mass_table(size.n_items, zipf_as, [beta], head_k)
book.record("head_mass_at_beta", {
    f"zipf_a={r.zipf_a:g}": {"sft": r.sft, "dpo": r.dpo_uniform_ref,
                             "dpo_after_sft": r.dpo_sft_ref}
    for r in at_beta.itertuples()
})
at_beta

# %% [markdown]
# ## 4. Self-play is re-weighted DPO (section 4.2)
#
# SPRec draws the negative of a pair from the current model $\pi_t$ instead of $q$. Because the
# expectation over negatives is a sum, that is the uniform-negative loss with every pair weighted
# by how much more often the model proposes its negative than $q$ does:
#
# $$
# \mathbb{E}_{y_w \sim p_D,\; y_l \sim \pi_t}\bigl[\ell(y_w, y_l)\bigr]
# = \mathbb{E}_{y_w \sim p_D,\; y_l \sim q}\Bigl[\frac{\pi_t(y_l)}{q(y_l)}\, \ell(y_w, y_l)\Bigr].
# $$
#
# The weights are constants (no gradient flows through $\pi_t$), so values *and* gradients agree.
# We check both at a random policy, with $\pi_t$ a model that over-recommends the head
# ($\pi_t = \pi_0 \propto p_D^{1/\beta_0}$, the starting point of the simulations below).

# %%
pi_0 = theory.dpo_optimum(p_data, q, q, start_beta)  # ~ p_D^(1/start_beta)
noise = torch.randn(size.n_items, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(optimiser_seed))
logits = (torch.log(torch.as_tensor(p_data)) + noise).requires_grad_(True)
# reference p_D (after SFT); negatives from pi_0, or uniform with weights pi_0 / q
self_play_loss = theory.expected_dpo_loss(logits, p_data, pi_0, p_data, beta)
reweighted = theory.reweighted_loss(logits, p_data, q, pi_0 / q, p_data, beta)
grad_self, = torch.autograd.grad(self_play_loss, logits)
grad_reweighted, = torch.autograd.grad(reweighted, logits)
self_play_loss, reweighted = self_play_loss.item(), reweighted.item()  # numbers from here on
book.record("reweighting_loss_gap", abs(self_play_loss - reweighted))
book.record("reweighting_grad_gap",
            float((grad_self - grad_reweighted).abs().max()))
pd.DataFrame({
    "self-play negatives":
        [self_play_loss, *grad_self[:head_k].tolist()],
    "uniform negatives, re-weighted":
        [reweighted, *grad_reweighted[:head_k].tolist()],
}, index=["loss", *[f"gradient, item {i + 1}" for i in range(head_k)]])

# %% [markdown]
# The weight $n\,\pi_t(y)$ of the most popular items is far above 1: pairs whose negative the model
# already over-recommends dominate the update.

# %%
pd.Series(size.n_items * pi_0[:head_k], name="weight n * pi_t(y)",
          index=[f"item {i + 1}" for i in range(head_k)])

# %% [markdown]
# ## 5. Iterating: short DPO steps (the faithful model of SPRec)
#
# SPRec trains one short DPO epoch per iteration, far from the optimum. Near the reference the
# gradient of $\mathcal{L}$ in the logits is exactly $\frac{\beta}{2}\,(q - p_D)$, so $k$ small
# steps of size $\eta$ move the logits by about $c\,(p_D - q)$ with $c = k \eta \beta / 2$. With
# $q = \pi_t$ this is a multiplicative-weights step
#
# $$
# \pi_{t+1} \propto \mathrm{sft}(\pi_t)\, \exp\bigl(c\,(p_D - \pi_t)\bigr),
# $$
#
# whose fixed point is $p_D$: the over-recommended head is corrected fastest. With uniform
# negatives it is $\pi_{t+1} \propto \pi_t \exp\bigl(c\,(p_D - 1/n)\bigr)$ and the head keeps
# growing. Each iteration here is an SFT step (a geometric step toward $p_D$ of weight
# $\lambda$), then `dpo_steps` gradient steps on the expected DPO loss started at the SFT model,
# against that reference. The module's docstring states the regime in which the head mass falls
# every round: $\lambda + c \max_y p_D(y) \lesssim 0.9$.

# %%
c = dpo_steps * dpo_lr * beta / 2
regime = book.record("finite_step_regime", sft_weight + c * p_data.max())
where = "inside" if regime <= 0.9 else "outside"
print(f"c = {c:g}; lambda + c max p_D = {regime:.2f} "
      f"({where} the documented regime <= 0.9)")
SELF = "self-play negatives (SPRec)"
UNIFORM = "uniform negatives (iterated DPO)"
finite = {
    label: theory.self_play(p_data, pi_0, beta, size.iterations,
                            sft_weight=sft_weight, negatives=negatives,
                            dpo_steps=dpo_steps, dpo_lr=dpo_lr)
    for label, negatives in {SELF: "self", UNIFORM: "uniform"}.items()
}
fig = plots.plot_self_play(
    finite, p_data, head_k,
    title=f"Short DPO steps at beta = {beta:g}, SFT weight {sft_weight:g}")
finite_table = plots.self_play_table(finite, p_data, head_k)
finite_head = finite_table.pivot(index="iteration", columns="variant",
                                 values="head_mass")
book.record("data_head_mass", theory.head_mass(p_data, head_k))
book.record("finite_self_head_mass", finite_head[SELF])
book.record("finite_uniform_head_mass", finite_head[UNIFORM])
finite_head.style.format("{:.1%}")

# %% [markdown]
# ## 6. Iterating the exact optimum instead (honest caveat)
#
# If every iteration reached DPO's optimum, the reference being the previous model and the
# negatives its own samples, then $\log \pi_{t+1} - \log p_D = r\,(\log \pi_t - \log p_D)$ (up to
# a constant) with $r = 1 - \lambda - 1/\beta$. The fixed point is $p_D$ (self-play removes DPO's amplification),
# but the iteration converges only when $|r| < 1$. At the public code's $\beta = 0.1$ (no SFT),
# $r = -9$: the policy collapses onto the head, then onto the tail, and so on. At $\beta = 2$
# (`stable_beta`), $r = 0.5$ and it converges to $p_D$. Iterated uniform-negative DPO at its optimum collapses onto
# the most popular item for every $\beta$. The toy's reading: SPRec works at $\beta = 0.1$ because
# each round is a small step, not the optimum.

# %%
rate = book.record("exact_rate_at_beta", theory.self_play_rate(beta))
print(f"r at beta = {beta:g}: {rate:g};  "
      f"r at beta = {stable_beta:g}: {theory.self_play_rate(stable_beta):g}")
T = size.iterations
exact = {
    f"self-play, beta = {beta:g}": theory.self_play(p_data, pi_0, beta, T),
    f"uniform negatives, beta = {beta:g}":
        theory.self_play(p_data, pi_0, beta, T, negatives="uniform"),
    f"self-play, beta = {stable_beta:g}":
        theory.self_play(p_data, pi_0, stable_beta, T),
}
fig = plots.plot_self_play(exact, p_data, head_k,
                           title="Iterating DPO's exact optimum (no SFT step)")
exact_table = plots.self_play_table(exact, p_data, head_k)
exact_head = exact_table.pivot(index="iteration", columns="variant",
                               values="head_mass")
book.record("exact_self_head_mass", exact_head[f"self-play, beta = {beta:g}"])
exact_head.style.format("{:.1%}")

# %% [markdown]
# ## Summary
#
# The values this notebook recorded (`sprec_lib.book.record`); the tests and the book read them
# from the executed notebook.

# %%
book.summary()
