"""The CLLMR chapter's runs, tables, verdicts and figures (``notebooks/07_cllmr``).

* :func:`book_specs`: the runs the chapter reads: the three systems and the SSE->MLP ablation per
  seed, and the sensitivity sweeps (noise, rank) of CLLMR. The "without counterfactual inference"
  ablation needs no run of its own: it is the factual score of the same CLLMR model
  (:mod:`sprec_lib.cllmr.train`), so :func:`rows` derives the ``cllmr-nocf`` rows from the ``cllmr`` runs.
* :func:`obtain`: the finished runs under a root (``results/cllmr``), training the missing ones if asked.
* :func:`mean_std`, :func:`relative_gains` (ours beside the paper's +6.26% Recall@10 and +12.80%
  NDCG@10), :func:`popularity_table`, :func:`verdicts` (the book's noise rule,
  :class:`sprec_lib.claims.NoiseRule`: with 3 seeds or more a difference holds when it has the
  claimed sign in every seed and its mean exceeds the seeds' std; with fewer it is not judged).
* :func:`plot_spectrum`: the side representations' normalised singular values, MLP against SSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import CllmrConfig, cllmr_config
from .run import CllmrRun, label_of

PAPER_GAINS = {"Recall@10": 6.26, "NDCG@10": 12.80}  # % over the best baseline, the paper's headline ("up to")
METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")
SWEEPS = {"noise": ("sse.noise", (0.001, 0.01, 0.1, 0.5), 0.01), "rank": ("sse.rank", (16, 32, 64), 32)}


@dataclass(frozen=True)
class Spec:
    """One run of the chapter: a system, ``--set`` assignments, a variant name, a seed."""

    dataset: str
    system: str
    seed: int
    assignments: tuple[str, ...] = ()
    variant: str | None = None

    def config(self, quick: bool = False) -> CllmrConfig:
        return cllmr_config([f"data.dataset={self.dataset}", *self.assignments], quick=quick,
                            system=self.system, seed=self.seed)

    @property
    def label(self) -> str:
        return label_of(self.config(), self.variant)

    def folder(self, root) -> Path:
        return Path(root) / self.dataset / f"{self.label}-seed{self.seed}"

    def command(self, root="results/cllmr") -> str:
        sets = (" --set " + " ".join(self.assignments)) if self.assignments else ""
        variant = f" --variant {self.variant}" if self.variant else ""
        return (f"sprec cllmr train --dataset {self.dataset} --system {self.system} --seed {self.seed}{sets}{variant} "
                f"--out {self.folder(root)}")


def book_specs(dataset: str, seeds, sweeps: bool = True) -> list[Spec]:
    specs = [Spec(dataset, system, s) for s in seeds for system in ("backbone", "rlmrec-con", "cllmr")]
    specs += [Spec(dataset, "cllmr", s, ("sse.encoder=mlp",)) for s in seeds]
    if sweeps:
        for name, (key, values, default) in SWEEPS.items():
            specs += [Spec(dataset, "cllmr", s, (f"{key}={v}",), f"{name}{v}") for s in seeds for v in values if v != default]
    return specs


def obtain(specs: list[Spec], root, train: bool = False, quick: bool = False, cache_dir=None, log=print):
    """``(metrics per spec that has a finished run, the specs still missing)``; with ``train``, the
    missing ones are trained first (into ``root``; quick runs belong under ``runs/quick``)."""
    found, missing = {}, []
    for spec in specs:
        folder = spec.folder(root)
        run = CllmrRun(folder) if (folder / "config.json").exists() else None
        if (run is None or not run.is_finished) and train:
            from .train import train as train_run

            log(f"training {spec.label} seed {spec.seed} -> {folder}")
            run = train_run(spec.config(quick), folder, cache_dir=cache_dir, variant=spec.variant, log=lambda m: None,
                            progress=False)
        if run is not None and run.is_finished:
            found[spec] = run.metrics()
        else:
            missing.append(spec)
    return found, missing


def rows(found: dict) -> pd.DataFrame:
    """One row per (label, seed): the headline test metrics, the popularity columns, the side
    representations' effective rank, the sweep setting; plus a ``cllmr-nocf`` row (the factual
    score) for every counterfactual ``cllmr`` run."""
    out = []
    for spec, m in found.items():
        cfg = spec.config()
        base = {"label": m["label"], "seed": m["seed"], "system": m["system"], "noise": cfg.sse.noise, "rank": cfg.sse.rank,
                "effective_rank": m["spectrum"].get("side", {}).get("effective_rank", math.nan),
                "epochs": m["epochs"], "seconds_per_epoch": m["seconds_per_epoch"]}
        out.append({**base, "score": m["headline"], **_flat(m["test"])})
        if m["headline"] == "counterfactual":
            out.append({**base, "label": f"{m['label']}-nocf", "score": "factual", **_flat(m["scores"]["factual"]["test"])})
    return pd.DataFrame(out)


def _flat(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "users"}


def mean_std(table: pd.DataFrame, columns=METRICS, by: str = "label") -> pd.DataFrame:
    """``mean ± std`` over seeds per ``by`` (std with ddof 1; a single seed shows its value alone)."""
    def fmt(x: pd.Series) -> str:
        return f"{x.mean():.4f}" + (f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else "")
    return table.groupby(by, sort=False)[list(columns)].agg(fmt)


def relative_gains(table: pd.DataFrame, metrics=("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")) -> pd.DataFrame:
    """CLLMR's relative gain (%) over the better of the backbone and RLMRec-Con (seed means), beside
    the paper's headline gains."""
    means = table.groupby("label")[list(metrics)].mean()
    rows_ = []
    for metric in metrics:
        baselines = means.loc[[b for b in ("backbone", "rlmrec-con") if b in means.index], metric]
        if "cllmr" not in means.index or baselines.empty:
            continue
        best = baselines.idxmax()
        rows_.append({"metric": metric, "best baseline": best, "baseline": baselines[best], "cllmr": means.loc["cllmr", metric],
                      "ours (%)": 100 * (means.loc["cllmr", metric] / baselines[best] - 1),
                      "paper (%)": PAPER_GAINS.get(metric, math.nan)})
    return pd.DataFrame(rows_).set_index("metric") if rows_ else pd.DataFrame()


def popularity_table(table: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """Factual against counterfactual CLLMR: head share, coverage and accuracy at ``k`` (mean ± std)."""
    part = table[table["label"].isin(["cllmr", "cllmr-nocf"])]
    cols = [f"HeadShare@{k}", f"Coverage@{k}", f"Recall@{k}", f"NDCG@{k}"]
    return mean_std(part, cols, by="score") if len(part) else pd.DataFrame()


def _difference(table: pd.DataFrame, label: str, base: str, column: str, rule) -> dict:
    a = table[table["label"] == label].set_index("seed")[column]
    b = table[table["label"] == base].set_index("seed")[column]
    diffs = (a - b).dropna()
    n = len(diffs)
    if n >= rule.min_seeds:  # the book's seeds rule (sprec_lib.claims)
        from ..claims import seeds_evidence

        e = seeds_evidence(diffs)
        return {k: e[k] for k in ("difference", "spread", "seeds", "evidence")}
    return {"difference": float(diffs.mean()) if n else math.nan,
            "spread": float(diffs.std(ddof=1)) if n > 1 else math.nan, "seeds": n, "evidence": None}


CLAIMS = [
    ("CLLMR beats the backbone and RLMRec-Con on Recall@20 and NDCG@20",
     [("cllmr", base, m) for base in ("backbone", "rlmrec-con") for m in ("Recall@20", "NDCG@20")]),
    ("SSE keeps a higher effective rank than the MLP projector",
     [("cllmr", "cllmr-mlp", "effective_rank"), ("cllmr", "rlmrec-con", "effective_rank")]),
    ("the counterfactual step helps", [("cllmr", "cllmr-nocf", m) for m in ("Recall@20", "NDCG@20")]),
]


def verdicts(table: pd.DataFrame, rule=None) -> pd.DataFrame:
    """Each claim's parts (up: ``label`` above ``base`` on ``metric``) under the noise rule, and the
    claim's verdict: reproduced (every part holds), not reproduced (a part is clearly against),
    inconclusive (within noise), too few seeds, or pending (no runs)."""
    from ..claims import RULE

    rule = rule or RULE
    out = []
    for claim, parts in CLAIMS:
        for label, base, metric in parts:
            d = _difference(table, label, base, metric, rule) if len(table) else {"seeds": 0, "evidence": None}
            outcome = ("missing" if d["seeds"] == 0 else "too few seeds" if d["evidence"] is None else
                       "holds" if d["evidence"] > 0 else "contrary" if d["evidence"] < 0 else "within noise")
            out.append({"claim": claim, "part": f"{label} > {base}", "metric": metric, **d, "outcome": outcome})
    out += sweep_verdicts(table, rule)
    frame = pd.DataFrame(out)
    verdict = frame.groupby("claim", sort=False)["outcome"].agg(_verdict)
    return frame.drop(columns="evidence").assign(verdict=frame["claim"].map(verdict))


def _verdict(outcomes: pd.Series) -> str:
    s = set(outcomes)
    if "contrary" in s:
        return "not reproduced"
    if "missing" in s:
        return "pending"
    if "too few seeds" in s:
        return "too few seeds"
    return "reproduced" if s == {"holds"} else "inconclusive (within noise)"


def sweep_verdicts(table: pd.DataFrame, rule, metric: str = "Recall@20") -> list[dict]:
    """The paper's optimum (noise 0.01, rank 32) against each other value of its sweep."""
    out = []
    for name, (_, values, default) in SWEEPS.items():
        claim = f"{name} {default} is the best of {', '.join(map(str, values))} ({metric})"
        best = table[table["label"] == "cllmr"]
        for v in values:
            if v == default:
                continue
            other = table[table["label"] == f"cllmr-{name}{v}"]
            both = pd.concat([best.assign(label="best"), other.assign(label="other")])
            d = _difference(both, "best", "other", metric, rule) if len(other) and len(best) else {"seeds": 0, "evidence": None}
            outcome = ("missing" if d["seeds"] == 0 else "too few seeds" if d["evidence"] is None else
                       "holds" if d["evidence"] > 0 else "contrary" if d["evidence"] < 0 else "within noise")
            out.append({"claim": claim, "part": f"{name} {default} > {name} {v}", "metric": metric, **d, "outcome": outcome})
    return out


def sweep_table(table: pd.DataFrame, metric: str = "Recall@20") -> dict[str, pd.DataFrame]:
    """Per sweep, ``metric`` (mean ± std) at each value; the default value is the ``cllmr`` run."""
    out = {}
    for name, (_, values, default) in SWEEPS.items():
        labels = {v: "cllmr" if v == default else f"cllmr-{name}{v}" for v in values}
        part = table[table["label"].isin(labels.values())]
        part = part.assign(**{name: part["label"].map({lab: v for v, lab in labels.items()})})
        out[name] = mean_std(part, [metric, "effective_rank"], by=name) if len(part) else pd.DataFrame()
    return out


def plot_spectrum(found: dict, seed: int | None = None):
    """The items' side representations' singular values (divided by the largest), one line per
    label that has them, with each one's effective rank in the legend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for spec, m in found.items():
        side = m["spectrum"].get("side")
        if side is None or spec.variant is not None or (seed is not None and spec.seed != seed):
            continue
        s = np.asarray(side["singular_values"])
        ax.plot(np.arange(1, len(s) + 1), s / s[0], marker=".",
                label=f"{m['label']} seed {m['seed']} (effective rank {side['effective_rank']:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest")
    ax.set_title("side representations of the items")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
