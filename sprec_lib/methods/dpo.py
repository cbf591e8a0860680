"""DPO with one uniformly random negative per row, from the SFT model (``dpo`` section).

Not a row of the paper's Table 1: it is the setting of the paper's section 4.1 theorem (DPO with
negatives drawn uniformly has the optimum pi_ref * (p_D / q)^(1/beta), which for 0 < beta < 1
sharpens the data's popularity p_D), run here to test it.
"""

from . import Method, StagePlan, register


def run(p) -> str:
    sft = p.shared_start()
    last = p.preference_stage("dpo", sft, 1, p.cfg.dpo)
    p.evaluate(last)
    return last


def plan(cfg) -> list:
    return [StagePlan("dpo", "dpo", "dpo", cfg.train_rows, "one uniformly random negative per row"),
            StagePlan("eval dpo", "eval", None, cfg.eval.rows)]


register(Method(name="dpo", title="DPO (random negative)", run=run, plan=plan, sections=("dpo",), order=35,
                doc=__doc__))
