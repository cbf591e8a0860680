"""CLLMR (arXiv 2409.20052) and its baselines on graph backbones: the book's second, small family.

*Mitigating Propensity Bias of Large Language Models for Recommender Systems* adds LLM side
information to a collaborative-filtering backbone (as RLMRec does: text profiles, embedded, aligned
with the collaborative embeddings by InfoNCE), encodes it with a spectrum-based conditional VAE
(SSE) so that the aligned representations do not collapse, and removes the LLM's propensity at
inference by counterfactual reasoning. The paper's code was never released and its full text could
not be read here; every place where we had to choose is said in the module that chose, and is a
setting of :class:`~sprec_lib.cllmr.config.CllmrConfig`.

One job per module, data flowing one way::

    data (implicit ML-1M / ML-100K, 3:1:1 split) ──► side_info (profiles -> MiniLM vectors)
        │                                                   │
        ▼                                                   ▼
    lightgcn (backbone) ◄── rlmrec (MLP projector, InfoNCE) / sse (SVD prior, conditional VAE)
        │
        ▼
    system (the three systems, their losses, factual and counterfactual scores: counterfactual)
        │
        ▼
    train (epochs, early stopping, resumable run folder: run) ──► metrics (Recall, NDCG, effective rank, popularity)
        │
        ▼
    report (the chapter's runs, tables, verdicts, figures: notebooks/07_cllmr)

``sprec cllmr train --dataset ml-1m --system cllmr --seed 0 --out runs/cllmr/ml-1m/cllmr-seed0`` trains
and evaluates one run; ``sprec cllmr profiles --dataset ml-1m`` generates the LLM item profiles.
"""
