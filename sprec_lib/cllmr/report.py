"""The CLLMR chapter's runs, tables, verdicts and figures (``notebooks/07_cllmr``).

* :func:`book_specs`: the runs the chapter reads: the three systems and the SSE->MLP ablation per
  seed, and the sensitivity sweeps (noise, rank) of CLLMR. The "without counterfactual inference"
  ablation needs no run of its own: it is the factual score of the same CLLMR model
  (:mod:`sprec_lib.cllmr.train`), so :func:`rows` derives the ``cllmr-nocf`` rows from the ``cllmr`` runs.
* :func:`obtain`: the finished runs, exported under ``results/cllmr`` (committed) or local under
  ``runs/cllmr`` (exported when found), training the missing ones if asked.
* :func:`mean_std`, :func:`relative_gains` (ours beside the paper's +6.26% Recall@10 and +12.80%
  NDCG@10), :func:`popularity_table`, :func:`verdicts` (the book's noise rule,
  :class:`sprec_lib.claims.NoiseRule`: with 3 seeds or more a difference holds when it has the
  claimed sign in every seed and its mean exceeds the seeds' std; with fewer it is not judged,
  except a sweep point, held against one run's training noise: :func:`sweep_verdicts`).
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
# Ours, not the paper's: CLLMR with side vectors that carry no information (a random unit vector per
# item). Its gain over the backbone that survives them is not the LLM's: it is the rest of CLLMR's
# machinery (for SSE, the interaction matrix's truncated SVD as its prior). One seed, as the sweeps.
CONTROLS = {"random-side": ("side.profiles=random",)}


RESULTS_ROOT = "results/cllmr"  # exported runs, committed: what the chapter reads on a fresh clone
RUNS_ROOT = "runs/cllmr"  # local run folders with their training state (ignored by git)


@dataclass(frozen=True)
class Spec:
    """One run of the chapter: a system, ``--set`` assignments, a variant name, a seed; ``settings``:
    the assignments every run of the chapter shares (``side.profiles=title-genres``)."""

    dataset: str
    system: str
    seed: int
    assignments: tuple[str, ...] = ()
    variant: str | None = None
    settings: tuple[str, ...] = ()

    def config(self, quick: bool = False) -> CllmrConfig:
        return cllmr_config([f"data.dataset={self.dataset}", *self.settings, *self.assignments], quick=quick,
                            system=self.system, seed=self.seed)

    @property
    def label(self) -> str:
        return label_of(self.config(), self.variant)

    def folder(self, root) -> Path:
        return Path(root) / self.dataset / f"{self.label}-seed{self.seed}"

    def command(self, root=RUNS_ROOT) -> str:
        assignments = (*self.settings, *self.assignments)
        sets = (" --set " + " ".join(assignments)) if assignments else ""
        variant = f" --variant {self.variant}" if self.variant else ""
        return (f"sprec cllmr train --dataset {self.dataset} --system {self.system} --seed {self.seed}{sets}{variant} "
                f"--out {self.folder(root)}")


def book_specs(dataset: str, seeds, sweeps: bool = True, settings=(), controls: bool = False) -> list[Spec]:
    """The chapter's runs, the cheap ones first: the three systems and the SSE->MLP ablation per
    seed, then (``sweeps``) CLLMR at each other noise and rank, then (``controls``) the
    :data:`CONTROLS` at the first seed."""
    settings = tuple(settings)
    specs = [Spec(dataset, system, s, settings=settings) for s in seeds for system in ("backbone", "rlmrec-con", "cllmr")]
    specs += [Spec(dataset, "cllmr", s, ("sse.encoder=mlp",), settings=settings) for s in seeds]
    if sweeps:
        for name, (key, values, default) in SWEEPS.items():
            specs += [Spec(dataset, "cllmr", s, (f"{key}={v}",), f"{name}{v}", settings) for s in seeds for v in values
                      if v != default]
    if controls:
        specs += [Spec(dataset, "cllmr", s, assignments, name, settings) for name, assignments in CONTROLS.items()
                  for s in list(seeds)[:1]]
    return specs


def obtain(specs: list[Spec], train: bool = False, quick: bool = False, results_root=RESULTS_ROOT,
           runs_root=RUNS_ROOT, cache_dir=None, log=print) -> tuple[dict, list[Spec]]:
    """``(metrics per spec that has a finished run, the specs still missing)``. For each spec, the
    first of: its exported copy under ``results_root``; its finished local run under ``runs_root``
    (exported first, so that it can be committed); with ``train``, training it there (resuming an
    unfinished folder), then exporting it. A run made with other settings is not used, and said so.
    Quick runs (seconds each) are always trained, under ``runs_root``, and never read or exported
    to ``results_root``: plumbing, not results. Relative roots are read from the repository root."""
    from ..paths import resolve

    found, missing, shared = {}, [], {}
    for spec in specs:
        run = _obtain(spec, train, quick, resolve(results_root), resolve(runs_root), cache_dir, log, shared)
        if run is None:
            missing.append(spec)
        else:
            found[spec] = run.metrics()
    return found, missing


def _obtain(spec: Spec, train: bool, quick: bool, results_root: Path, runs_root: Path, cache_dir, log, shared: dict):
    from ..runs import reuse_or_make
    from .train import train as train_run

    cfg, local = spec.config(quick), spec.folder(runs_root)

    def make():
        log(f"training {spec.label} seed {spec.seed} -> {local}")
        return train_run(cfg, local, inputs=_inputs(cfg, shared, cache_dir), variant=spec.variant, log=lambda m: None,
                         progress=False)

    return reuse_or_make(spec.folder(results_root), local, open_folder=_open, fits=lambda run: run.made_with(cfg),
                         make=make, export=lambda run, dest: run.export(dest), may_make=train, quick=quick, log=log)


def _inputs(cfg: CllmrConfig, shared: dict, cache_dir):
    """What :func:`sprec_lib.cllmr.train.prepare` makes for ``cfg``, with the data and the item
    vectors loaded once for all the runs of one :func:`obtain` call (in ``shared``): loading the
    data and the sentence encoder cost more than a quick run trains."""
    from .data import load_implicit
    from .side_info import side_vectors
    from .train import prepare

    if cfg.data not in shared:
        shared[cfg.data] = load_implicit(cfg.data, cache_dir)
    data, vectors, fingerprint = shared[cfg.data], None, None
    if cfg.uses_side_info:
        key = (cfg.data, cfg.side)
        if key not in shared:
            shared[key] = side_vectors(data.titles, data.genres, cfg.side, cache_dir, progress=False)
        vectors, fingerprint = shared[key]
    return prepare(cfg, data=data, item_vectors=vectors, cache_dir=cache_dir, progress=False, side_texts_sha256=fingerprint)


def _open(folder: Path) -> CllmrRun | None:
    return CllmrRun(folder) if (folder / "config.json").exists() else None


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
    """``mean ± std`` over seeds per ``by`` (std with ddof 1; a single seed shows its value alone;
    "—" where a label has no value, e.g. the backbone's side-representation rank)."""
    def fmt(x: pd.Series) -> str:
        x = x.dropna()
        if x.empty:
            return "—"
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


def verdicts(table: pd.DataFrame, rule=None, sweeps: bool = True) -> pd.DataFrame:
    """Each claim's parts (up: ``label`` above ``base`` on ``metric``) under the noise rule, and the
    claim's verdict: reproduced (every part holds), not reproduced (a part is clearly against),
    inconclusive (within noise), too few seeds, or pending (no runs). ``sweeps``: judge the noise
    and rank optima too."""
    from ..claims import RULE

    rule = rule or RULE
    out = []
    for claim, parts in CLAIMS:
        for label, base, metric in parts:  # no one-seed noise here (sigma None): fewer seeds are not judged
            out.append({"claim": claim, "part": f"{label} > {base}", "metric": metric,
                        **_held_against_noise(table, label, base, metric, rule, sigma=None)})
    out += sweep_verdicts(table, rule) if sweeps else []
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


NOISE_FROM = ("cllmr", "cllmr-mlp")  # the trained CLLMR models whose seeds measure one run's training noise


def training_noise(table: pd.DataFrame, metric: str, rule, labels=NOISE_FROM) -> float | None:
    """One run's standard deviation of ``metric`` from training alone: the seeds' variance pooled over
    ``labels`` that have ``rule.min_seeds`` seeds or more (ddof 1 each); None when none has. Two
    seeds of one system differ by their initialisation, negatives, batches and noise, and are
    scored on the same test users: the spread of ``metric`` across them is what a setting with no
    effect would show against the default at one seed (the ``cllmr-nocf`` rows are left out: they
    score the very same models)."""
    dof, total = 0, 0.0
    for label in labels:
        x = table.loc[table["label"] == label, metric].dropna() if len(table) else pd.Series(dtype=float)
        if len(x) >= rule.min_seeds:
            dof, total = dof + len(x) - 1, total + float(((x - x.mean()) ** 2).sum())
    return math.sqrt(total / dof) if dof else None


def sweep_verdicts(table: pd.DataFrame, rule, metric: str = "Recall@20") -> list[dict]:
    """The paper's optimum (noise 0.01, rank 32) against each other value of its sweep. With the
    rule's seeds (3), the seeds rule; with fewer (the sweeps run at seed 0 on a CPU), the mean paired
    difference over the n seeds against ``z * sqrt(2 / n) * sigma``, ``sigma`` the training noise of
    one CLLMR run (:func:`training_noise`, from the main table's seeds): the book's one-seed rule
    (``NoiseRule.run_std``), where the test users add nothing beyond what the seeds' spread on the
    same users already holds. Ours: the paper states no noise rule for its sweeps."""
    out = []
    sigma = training_noise(table, metric, rule)
    for name, (_, values, default) in SWEEPS.items():
        claim = f"{name} {default} is the best of {', '.join(map(str, values))} ({metric})"
        for v in values:
            if v != default:
                out.append({"claim": claim, "part": f"{name} {default} > {name} {v}", "metric": metric,
                            **_held_against_noise(table, "cllmr", f"cllmr-{name}{v}", metric, rule, sigma)})
    return out


def _held_against_noise(table: pd.DataFrame, label: str, base: str, metric: str, rule, sigma: float | None) -> dict:
    """``label − base`` on ``metric``, paired by seed: the seeds rule with enough seeds, else (given
    ``sigma``) the mean difference over the n seeds against ``z * sqrt(2 / n) * sigma`` (``noise``:
    that half-width); with its ``outcome``."""
    has = lambda x: len(table) and (table["label"] == x).any()  # noqa: E731
    d = _difference(table, label, base, metric, rule) if has(label) and has(base) else {"seeds": 0, "evidence": None}
    if d["evidence"] is None and d["seeds"] > 0 and sigma is not None:
        half = rule.z * math.sqrt(2 / d["seeds"]) * sigma
        d["noise"] = half  # the half-width the difference is held against
        d["evidence"] = int(np.sign(d["difference"])) if abs(d["difference"]) > half else 0
    outcome = ("missing" if d["seeds"] == 0 else "too few seeds" if d["evidence"] is None else
               "holds" if d["evidence"] > 0 else "contrary" if d["evidence"] < 0 else "within noise")
    return {**d, "outcome": outcome}


CONTROL_CLAIM = "CLLMR's gain needs its side information: random side vectors lose it (ours)"
CONTROL_LABELS = ["backbone", "cllmr-mlp", "cllmr", "cllmr-random-side"]


def control_verdicts(table: pd.DataFrame, rule=None, metrics=("Recall@20", "NDCG@20")) -> pd.DataFrame:
    """The control of :data:`CONTROLS`: CLLMR with the LLM's side vectors against CLLMR with random
    ones, each part held against one run's training noise as a sweep point is (one seed); the
    claim's verdict as :func:`verdicts` gives it.
    *Reproduced* would say the side information carries CLLMR's gain; *not reproduced* that random
    vectors do as well or better."""
    from ..claims import RULE

    rule = rule or RULE
    out = []
    for metric in metrics:
        sigma = training_noise(table, metric, rule) if len(table) else None
        out.append({"claim": CONTROL_CLAIM, "part": "cllmr > cllmr-random-side", "metric": metric,
                    **_held_against_noise(table, "cllmr", "cllmr-random-side", metric, rule, sigma)})
    frame = pd.DataFrame(out)
    return frame.drop(columns="evidence").assign(verdict=_verdict(frame["outcome"]))


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


def side_texts_used(found: dict) -> dict[str, int]:
    """How many of the runs in ``found`` (spec -> metrics) used each version of the side texts: their
    fingerprint (:func:`sprec_lib.cllmr.side_info.texts_fingerprint`), "unrecorded" for runs made
    before runs recorded it; runs without side information are left out."""
    out: dict[str, int] = {}
    for spec, m in found.items():
        if spec.config().uses_side_info:
            key = m.get("side_texts_sha256") or "unrecorded"
            out[key] = out.get(key, 0) + 1
    return out


def setup_table(cfg: CllmrConfig, data: dict | None = None, side_texts: dict[str, int] | None = None) -> pd.DataFrame:
    """What this chapter's runs are, beside what CLLMR's paper reports (its summary in
    ``shared/papers``; RLMRec where the paper builds on it): the page states its own sizes, and
    (``side_texts``, from :func:`side_texts_used`) which versions of the side texts its runs used."""
    profiles = {"title-genres": "MiniLM (all-MiniLM-L6-v2) of 'title. Genres: ...', no generation",
                "random": "a random unit vector per item (a control: no information)"}.get(
        cfg.side.profiles, f"SmolLM2-135M-Instruct profiles from title and genres (<= {cfg.side.max_new_tokens} tokens), MiniLM-embedded")
    size = (f"{data['users']:,} users, {data['items']:,} items, {data['train']:,}/{data['valid']:,}/{data['test']:,} "
            "train/valid/test positives" if data else "")
    b, t, s = cfg.backbone, cfg.train, cfg.sse
    rows_ = [
        ("data", f"{cfg.data.dataset}, ratings >= {cfg.data.min_rating}, per-user 3:1:1 split; {size}",
         "Amazon-book, Yelp, Steam as RLMRec prepared them"),
        ("side information", profiles, "GPT-3.5 profiles from item text and reviews (RLMRec), text-embedding-ada-002"),
        ("user side information", "mean of the user's training items' vectors", "LLM user profiles from their reviews (RLMRec)"),
        ("backbone", (f"LightGCN as RLMRec runs it (torch.sparse; layers summed), {b.embedding_size}-d, {b.layers} "
                      f"layers, edge keep rate {b.keep_rate}"),
         "several backbones (CLLMR is a plug-in); RLMRec's LightGCN: 32-d, 3 layers"),
        ("training", (f"Adam lr {t.lr}, batch {t.batch_size}, validation every {t.eval_every} epochs, patience "
                      f"{t.patience} on valid Recall@{cfg.eval.early_stop_k}"), "RLMRec's trainer (the same)"),
        ("alignment", f"InfoNCE, weight {cfg.align.kd_weight}, temperature {cfg.align.kd_temperature}",
         "RLMRec-Con's (the same)"),
        ("SSE", f"rank {s.rank}, hidden {s.hidden}, noise {s.noise}, VAE weight {s.vae_weight}, KL weight {s.kl_weight}",
         "rank 32, hidden 32, noise 0.01; the loss weights are not reported"),
        ("counterfactual score", "MACR-style: (<e_u, e_i> - c) * sigmoid(P_i), c the mean matching over training pairs",
         "TE - NDE over a causal graph (exposure, LLM propensity, score); its estimator is not reported"),
        ("evaluation", f"full ranking, training items masked, Recall and NDCG at {', '.join(map(str, cfg.eval.ks))}",
         "the same (RLMRec's protocol)"),
    ]
    if side_texts:
        rows_.insert(2, ("side texts used (fingerprint: runs)", ", ".join(f"{k}: {n}" for k, n in side_texts.items()) + (
            "; 'unrecorded': runs made before the runs recorded it (ML-1M's profiles were generated again on "
            "2026-12-03, on another CPU, where greedy decoding can pick another token at a near tie)"
            if "unrecorded" in side_texts and cfg.side.profiles == "llm" else ""), "one set of GPT-3.5 profiles"))
    return pd.DataFrame(rows_, columns=["", "this page", "CLLMR's paper"]).set_index("")


def label_means(table: pd.DataFrame, columns=METRICS) -> dict:
    """``{label: {column: mean over seeds}}`` (the numbers behind :func:`mean_std`, for the record)."""
    return {label: {c: float(v) for c, v in row.items()} for label, row in
            table.groupby("label", sort=False)[list(columns)].mean().iterrows()}


def verdict_lines(checks: pd.DataFrame) -> list[str]:
    """One Markdown line per claim: its verdict, then each part's mean difference ± the seeds' std
    (or, for a sweep point with fewer seeds, the training-noise half-width it is held against) and
    its outcome."""
    out = []

    def spread(r) -> str:
        noise = getattr(r, "noise", math.nan)
        if isinstance(noise, float) and not math.isnan(noise):
            return f" (against ± {noise:.4f}, one run's training noise)"
        return f" ± {r.spread:.4f}" if not math.isnan(r.spread) else ""

    for claim, part in checks.groupby("claim", sort=False):
        details = "; ".join(
            f"{r.part} on {r.metric}: {r.difference:+.4f}" + spread(r)
            + f" over {r.seeds} seed{'s' if r.seeds != 1 else ''} ({r.outcome})" if r.seeds else f"{r.part} on {r.metric}: no runs"
            for r in part.itertuples())
        out.append(f"* **{part['verdict'].iloc[0]}**: {claim}. {details}.")
    return out
