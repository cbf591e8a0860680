"""CLLMR's counterfactual inference: total effect minus natural direct effect, as a scoring rule.

What the paper says (its summary): a causal graph with exposure, mediator and outcome; by setting
the mediator to reference states it computes the pure natural direct effect (NDE) and subtracts it
from the total effect (TE), removing the bias the LLM brings into the scores.

What we built, where it is silent. We read the graph as MACR's (Wei et al., KDD 2021), the rule the
paper's wording matches term for term:

* the **exposure** is the LLM side information ``S``; it reaches the score ``Y`` two ways:
* through the **mediator** ``M``: the user-item matching on the collaborative embeddings
  (``M = <e_u, e_i>``), which the side information shapes through the alignment;
* and **directly**, as the LLM's **propensity** for the item: ``P_i``, a linear head on the item's
  side representation (the SSE's ``z_i``, or the MLP's output in the ablation), trained with its own
  BPR loss (``propensity_weight``) so that it learns how often the side information alone predicts
  an interaction (MACR's item module);
* the factual score fuses them multiplicatively, as MACR: ``Y(M, P) = M * sigmoid(P)``.

With ``M*`` = ``reference`` (the matching's reference value ``c``) and ``P*`` any reference
propensity::

    TE  = Y(M, P)  - Y(M*, P*)
    NDE = Y(M*, P) - Y(M*, P*)        (the propensity's effect with the matching held at reference)
    TE - NDE = Y(M, P) - Y(M*, P) = (M - c) * sigmoid(P)

``P*`` cancels. With ``c = 0`` the counterfactual ranking equals the factual one; the larger ``c``,
the more a high propensity lowers an item whose matching is below ``c``. The paper does not give
``c``; ours defaults to the mean matching over the training pairs (``CounterfactualConfig.reference``).

The issue's wording names the propensity the mediator; held at a reference there, TE - NDE would
keep exactly the propensity's part (``M * (sigmoid(P) - sigmoid(P*))``), the opposite of the
stated aim, so the reference sits on the matching, as in MACR.
"""

from __future__ import annotations

import torch


def outcome(matching: torch.Tensor, propensity_logit: torch.Tensor) -> torch.Tensor:
    """The factual fusion ``Y(M, P) = M * sigmoid(P)`` (broadcasting: ``P`` per item)."""
    return matching * torch.sigmoid(propensity_logit)


def total_effect(matching: torch.Tensor, propensity_logit: torch.Tensor, reference: float,
                 reference_logit: float = 0.0) -> torch.Tensor:
    """``TE = Y(M, P) - Y(M*, P*)``."""
    return outcome(matching, propensity_logit) - outcome(torch.tensor(reference), torch.tensor(reference_logit))


def natural_direct_effect(matching: torch.Tensor, propensity_logit: torch.Tensor, reference: float,
                          reference_logit: float = 0.0) -> torch.Tensor:
    """``NDE = Y(M*, P) - Y(M*, P*)``: the propensity's effect with the matching held at its reference
    (broadcast to the shape of ``Y(M, P)``)."""
    nde = outcome(torch.tensor(reference), propensity_logit) - outcome(torch.tensor(reference), torch.tensor(reference_logit))
    return nde.expand_as(outcome(matching, propensity_logit))


def counterfactual_score(matching: torch.Tensor, propensity_logit: torch.Tensor, reference: float) -> torch.Tensor:
    """``TE - NDE = (M - c) * sigmoid(P)``, the ranking score of counterfactual inference."""
    return (matching - reference) * torch.sigmoid(propensity_logit)
