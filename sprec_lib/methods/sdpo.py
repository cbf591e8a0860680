"""S-DPO (Softmax-DPO, Chen et al. 2024): ``sdpo.n_negatives`` uniformly random negatives per row
under the softmax loss (:func:`sprec_lib.losses.sdpo_loss`), from the SFT model (Table 1's "S-DPO")."""

from . import Method, StagePlan, register


def run(p) -> str:
    sft = p.shared_start()
    last = p.preference_stage("sdpo", sft, p.cfg.sdpo.n_negatives, p.cfg.sdpo)
    p.evaluate(last)
    return last


def plan(cfg) -> list:
    return [StagePlan("sdpo", "sdpo", "sdpo", cfg.train_rows, f"{cfg.sdpo.n_negatives} random negatives per row"),
            StagePlan("eval sdpo", "eval", None, cfg.eval.rows)]


register(Method(name="sdpo", title="S-DPO", run=run, plan=plan, sections=("sdpo",), order=30, paper="sdpo",
                doc=__doc__))
