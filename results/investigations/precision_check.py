"""bf16 against fp32, the same SFT recipe and seed (issue 15's quality check): the paired bootstrap of
each metric's difference over the same evaluation rows, from two runs' local predictions.

    python results/investigations/precision_check.py FP32_RUN BF16_RUN LABEL [OTHER_EXPORT]

LABEL: ``sft`` (test split) or ``sft-grounded-5-valid`` (made by ``sprec eval RUN --stage sft --set
eval.split=valid``). OTHER_EXPORT: a committed run of the same config at another thread count
(its exported rows, or none: then only its metrics are compared by hand in the README).
"""
import sys, pandas as pd
from sprec_lib import claims
from sprec_lib.runs import Run
def rows(folder, label):
    r = Run(folder); p = r.predictions_path(label)
    f = pd.read_parquet(p, columns=["target", "topk"])
    return {"target": [None if pd.isna(t) else int(t) for t in f["target"]], "topk": [[int(i) for i in x] for x in f["topk"]]}
fp32_dir, bf16_dir, label = sys.argv[1], sys.argv[2], sys.argv[3]
a, b = rows(bf16_dir, label), rows(fp32_dir, label)
print(f"{label}: {len(a['target'])} rows; bf16 - fp32, {claims.RULE.level:.0%} paired bootstrap ({claims.RULE.n_resamples} resamples)")
for m in ["HR@5", "NDCG@5", "DivRatio@1", "ORRatio@1", "DivRatio@5", "ORRatio@5"]:
    va, vb = claims._statistic(m, a), claims._statistic(m, b)
    import numpy as np
    one = np.ones((1, len(a["target"])))
    lo, hi = claims.paired_bootstrap(m, a, b)
    print(f"  {m:11s} bf16 {va(one)[0]:.4f}  fp32 {vb(one)[0]:.4f}  diff {va(one)[0]-vb(one)[0]:+.4f}  [{lo:+.4f}, {hi:+.4f}]  {'within noise' if lo <= 0 <= hi else 'DIFFERS'}")
if len(sys.argv) > 4:
    c = claims.load_row_data(sys.argv[4])
    if c is None:
        sys.exit(f"{sys.argv[4]}: no exported rows (an export older than the rows/ folder): compare its metrics by hand")
    print(f"\nfp32 at another thread count ({sys.argv[4]}) - fp32 ({fp32_dir}), same config and seed:")
    for m in ["HR@5", "NDCG@5", "DivRatio@1", "ORRatio@1", "DivRatio@5", "ORRatio@5"]:
        vc, vb = claims._statistic(m, c), claims._statistic(m, b)
        lo, hi = claims.paired_bootstrap(m, c, b)
        print(f"  {m:11s} other {vc(one)[0]:.4f}  fp32 {vb(one)[0]:.4f}  diff {vc(one)[0]-vb(one)[0]:+.4f}  [{lo:+.4f}, {hi:+.4f}]  {'within noise' if lo <= 0 <= hi else 'DIFFERS'}")
