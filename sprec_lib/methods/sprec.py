"""SPRec, the self-play loop (paper sections 4.2-4.3; public code ``shell/SPRec.sh``).

From the SFT model, each of ``sprec.iterations`` iterations:

1. samples ``sprec.train_rows`` rows of the training pool and ``sprec.valid_rows`` validation rows
   (seeded per iteration, so iteration t is the same whatever T is);
2. generates one negative per row with the model that ended the previous iteration
   (``it<t>-negatives``; kept in the run folder, so a resumed run reuses them, and a decode cut
   short resumes at its first unfinished batch: :class:`~sprec_lib.decoding.DecodeJournal`; under
   ``accelerate launch`` on the main process, the others reading them from the run folder);
3. an SFT step on the positives (``it<t>-sft``; the validation rows give its eval loss);
4. a DPO step on (prompt, positive, self-play negative) whose reference is a frozen copy of this
   iteration's SFT model (``it<t>-dpo``);
5. evaluates the iteration's model (metrics label ``it<t>``; ``sft`` is iteration 0); with
   ``sprec.eval_sft_steps``, the SFT step's model too (``it<t>-sft``), as the public script does.

Ablations (Table 2) and the section-5.4 studies are settings of the ``sprec`` section, named as
variants in :mod:`sprec_lib.experiments`: ``sft_step=false`` (SPRec-noSFT), ``dpo_step=false``
(SPRec-noDPO), ``negatives=random`` (SPRec-RN) or ``mix`` with ``random_ratio``, ``n_negatives`` N > 1.
"""

import numpy as np

from . import Method, StagePlan, register


def run(p) -> str:
    from .. import distributed, trainers
    from ..pipeline import sft_rows, training_rows
    from ..selfplay import negatives_for, preference_rows, sample_rows

    cfg, run_ = p.cfg.sprec, p.run
    prev = p.shared_start()
    pool = training_rows(p.ds, p.cfg)
    for it in range(1, cfg.iterations + 1):
        rng = np.random.default_rng([p.cfg.seed, 100 + it])
        rows = sample_rows(pool, cfg.train_rows, rng)
        valid = sample_rows(p.ds.valid, cfg.valid_rows, rng)  # the SFT step's eval loss

        def negatives():
            negs = run_.load_negatives(f"it{it}")
            if negs is None:
                p.load(prev)
                journal = p.decode_journal(f"negatives-it{it}", prev)  # a decode cut short resumes
                negs = negatives_for(rows, p.ds, cfg, rng, p.model, p.tokenizer, p.cfg.eval.batch_size, journal)
                run_.save_negatives(f"it{it}", negs)
                if journal is not None:
                    journal.discard()
            return negs

        # Generated once, on the main process under `accelerate launch`; the others wait, then read them.
        negs = distributed.on_main(negatives, share=False)
        if negs is None:
            negs = run_.load_negatives(f"it{it}")
        pairs, skipped = preference_rows(rows, negs, p.ds, cfg.n_negatives, cfg.dpo.template)
        in_cat = float(np.mean([all(v) for v in negs["in_catalogue"] if len(v)])) if len(pairs) else 0.0
        run_.log(f"it{it}: {len(pairs)} preference pairs, {skipped} rows skipped (negative = positive or "
                 f"no title parsed); {in_cat:.1%} of the negatives are catalogue titles")
        if cfg.sft_step:
            positives, valid_rows = sft_rows(rows, p.ds), sft_rows(valid, p.ds)
            p.stage(f"it{it}-sft", prev, lambda m, t, seed, out: trainers.sft(
                m, t, positives, cfg.sft, out, seed, eval_rows=valid_rows, checkpoint_minutes=p.checkpoint_minutes,
                dtype=p.dtype))
            prev = f"it{it}-sft"
            if cfg.eval_sft_steps and cfg.dpo_step:  # the public script's evaluation after the SFT step
                p.evaluate(prev)
        if cfg.dpo_step:
            p.stage(f"it{it}-dpo", prev, _dpo_step(p, pairs, it))
            prev = f"it{it}-dpo"
        p.evaluate(prev, label=f"it{it}")
    return prev


def _dpo_step(p, pairs: list[dict], it: int):
    """The stage function of iteration ``it``'s DPO step (S-DPO's loss when N > 1)."""
    from .. import trainers

    cfg = p.cfg.sprec
    train = trainers.dpo if cfg.n_negatives == 1 else trainers.sdpo

    def step(model, tokenizer, seed, out):
        if not pairs:  # every negative was skipped: nothing to learn from
            p.run.log(f"it{it}-dpo: no preference pairs; the model passes through unchanged")
            return model
        return train(model, tokenizer, pairs, cfg.dpo, out, seed, checkpoint_minutes=p.checkpoint_minutes, dtype=p.dtype)

    return step


def plan(cfg) -> list:
    s, out = cfg.sprec, []
    source = {"self": "self-play", "random": "random", "mix": f"{s.random_ratio:g} random, rest self-play"}[s.negatives]
    rows = min((n for n in (s.train_rows, cfg.train_rows) if n is not None), default=None)  # at most
    for it in range(1, s.iterations + 1):
        out.append(StagePlan(f"it{it}-negatives", "negatives", None, rows,
                             f"{s.n_negatives} {source} negative(s), {s.decoding} decoding"))
        if s.sft_step:
            out.append(StagePlan(f"it{it}-sft", "sft", "sprec.sft", rows))
            if s.eval_sft_steps and s.dpo_step:  # without a DPO step, the iteration's own evaluation is it
                out.append(StagePlan(f"eval it{it}-sft", "eval", None, cfg.eval.rows))
        if s.dpo_step:
            out.append(StagePlan(f"it{it}-dpo", "dpo" if s.n_negatives == 1 else "sdpo", "sprec.dpo", rows))
        out.append(StagePlan(f"eval it{it}", "eval", None, cfg.eval.rows))
    return out


register(Method(name="sprec", title="SPRec", run=run, plan=plan, sections=("sprec",), order=90, paper="sprec",
                doc=__doc__))
