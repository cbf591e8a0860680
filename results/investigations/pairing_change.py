"""Which claim parts the change-from-own-start pairing moves (2026-12-05): every ablation (c, d, e)
and baseline-against-SPRec (b2) part of the committed `tiny` runs, checked with
``pairing="seed"`` and with the default ``"own start"``, where some seed's two runs began from
different SFT models; then the verdicts that differ between the two. Under the book's noise rule
(``claims.book_rule``: the pooled training noise of the runs read here), as on the claims page.

    python results/investigations/pairing_change.py [results/runs]
"""
import sys

import pandas as pd

from sprec_lib import claims
from sprec_lib.results import finished_runs, run_rows

rows = run_rows(finished_runs(sys.argv[1] if len(sys.argv) > 1 else "results/runs"))
rows = rows[rows["profile"] == "tiny"]
asked = list(claims.ABLATION_CLAIMS.values()) + [c for c in claims.CLAIMS.values() if c.id == "b2"]
rule = claims.book_rule(rows)
by_seed, own = (claims.check_claims(rows, asked, rule, pairing=p) for p in ("seed", "own start"))
keys = ["dataset", "id", "method", "metric"]
both = by_seed.merge(own, on=keys, suffixes=(" by seed", " own start"))
both = both[both["paired own start"] == "own start"]
pd.set_option("display.width", 250)
print(both[keys + ["seeds own start", "difference by seed", "difference own start", "outcome by seed",
                   "outcome own start"]].round(3).to_string(index=False))
verdicts = pd.DataFrame({"by seed": claims.verdicts(by_seed), "own start": claims.verdicts(own)})
changed = verdicts[verdicts["by seed"] != verdicts["own start"]]
print("\nverdicts that differ:", "none" if changed.empty else "\n" + changed.to_string())
