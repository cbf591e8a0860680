"""The pretrained-LLM chapter (``notebooks/08_pretrained``, issue 17): the paper's claims with a
pretrained model (the ``small`` profile: SmolLM2-135M-Instruct with LoRA) beside the model trained
from scratch (``tiny``) and beside the paper's numbers.

* :data:`LABELS`: the chapter's methods, SFT, DPO, S-DPO, SPRec and SPRec-RN (the variant ``rn`` of
  :data:`sprec_lib.experiments.ABLATIONS`); :func:`specs` names their runs.
* :func:`obtain`: the finished runs of a profile, exported under ``results/runs`` or local (exported
  when found), the missing ones listed with the command that makes each; trains them only if asked.
* :func:`testable_claims`: the claims of :mod:`sprec_lib.claims` whose every part is one of these
  methods (the others need runs this chapter does not make: DMPO, the other ablations).
* :func:`noise_rows`: the runs on which the book's noise rule measures one run's training noise.
* :func:`negatives`: how popular SPRec's negatives are, iteration by iteration (section 4.2).
* :func:`answers`: the issue's three questions, answered from the runs, or "pending";
  :func:`orratio_by_answer` splits ORRatio by whether the answers named a title or were grounded.
* :func:`folders`, :func:`stacked_rows`, :func:`placeholders`, :func:`table_record`: the page's
  plumbing (dataset names to folders; two profiles' run rows; pending verdicts for a dataset and
  profile without runs; the table as plain values for :func:`sprec_lib.book.record`).

The tables beside the paper's are :func:`sprec_lib.claims.profiles_beside_paper` and
:func:`sprec_lib.claims.setups_beside`.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from . import claims, experiments
from .paths import RESULTS, resolve

PROFILE, DATASETS, SEEDS = "small", ("MovieLens", "Goodreads"), (0,)  # what the chapter reads (issue 17's runs)
METHODS = ("sft", "dpo", "sdpo", "sprec")  # plain runs of the registry's recipes
VARIANTS = {"rn": experiments.ABLATIONS["rn"]}  # SPRec's variants: SPRec-RN (random negatives)
LABELS = (*METHODS, *(f"sprec-{v}" for v in VARIANTS))  # the rows of the chapter's tables, in order
SPREC_LABELS = ("sprec", *(f"sprec-{v}" for v in VARIANTS))  # the runs that iterate (curves, negatives)
METRICS = ("HR@5", "NDCG@5", "DivRatio@1", "ORRatio@1", "MGU@1")  # the columns of Table 1
CURVE_METRICS = ("HR@5", "NDCG@5", "DivRatio@1", "ORRatio@1", "MGU@1", "valid_ratio")


def folders(datasets: Iterable[str]) -> dict[str, str]:
    """Each dataset's name and folder (from the repository root, as the runs name it): a name of
    :data:`sprec_lib.paths.DATASETS`, whether or not its folder is on this machine (its committed runs
    are read all the same), or a folder, named by its last part."""
    from .paths import DATASETS, dataset_folder, portable_path

    out = {}
    for item in datasets:
        folder = dataset_folder(item)
        out[item if item in DATASETS else folder.name] = portable_path(folder)
    return out


def specs(data_dirs: Iterable[str], profile: str, seeds=(0,)) -> list[experiments.RunSpec]:
    """The chapter's runs of one profile: SFT, DPO, S-DPO, SPRec and SPRec-RN on each dataset
    folder and seed."""
    out = []
    for data_dir in data_dirs:
        out += experiments.specs(data_dir, METHODS, seeds, profile)
        out += experiments.specs(data_dir, ["sprec"], seeds, profile, variants=VARIANTS)
    return out


@dataclass
class Found:
    """What :func:`obtain` found: ``pairs`` (spec, run) of the finished runs, the specs ``asked`` and
    those ``missing``, and ``log``: what looking for them printed (stale copies, missing runs)."""

    pairs: list = field(default_factory=list)
    asked: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    log: str = ""

    def notes(self) -> list[str]:
        """The runs found made with other settings than the spec's, and not used (from ``log``)."""
        return [line for line in self.log.splitlines() if "made with other settings" in line]

    def rows(self) -> pd.DataFrame:
        """:func:`sprec_lib.results.run_rows` of the finished runs (empty without any)."""
        from .results import run_rows

        return run_rows([run for _, run in self.pairs])


def obtain(specs: list, train: bool = False, quick: bool = False) -> Found:
    """:func:`sprec_lib.experiments.obtain` for each spec, what it prints kept in ``log``: the
    committed copy, else a finished local run (exported first), else, with ``train``, a run
    trained now (quick runs are always made: seconds each)."""
    log = io.StringIO()
    found = Found(asked=list(specs))
    for spec in specs:
        with contextlib.redirect_stdout(log):
            run = experiments.obtain(spec, train=train, quick=quick)
        if run is None:
            found.missing.append(spec)
        else:
            found.pairs.append((spec, run))
    found.log = log.getvalue()
    return found


def stacked_rows(*found: Found) -> pd.DataFrame:
    """The run rows of several :class:`Found`, each run once (two profiles' runs; in quick mode the
    same runs twice)."""
    frames = [f.rows() for f in found]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True).drop_duplicates("run", ignore_index=True) if frames else pd.DataFrame()


def table_record(side: pd.DataFrame, profiles: Iterable[str]) -> dict:
    """:func:`sprec_lib.claims.profiles_beside_paper` as ``{dataset: {method: {metric: {profile or
    "paper": value or None}}}}``, for :func:`sprec_lib.book.record` (None: no run, or no such row
    in the paper)."""
    out: dict = {}
    for r in side.to_dict("records"):
        cell = {p: (None if math.isnan(r[p]) else r[p]) for p in [*dict.fromkeys(profiles), "paper"]}
        out.setdefault(r["dataset"], {}).setdefault(r["method"], {})[r["metric"]] = cell
    return out


def testable_claims(labels: Iterable[str] = LABELS) -> list[claims.Claim]:
    """The Table-1 and ablation claims whose every part (and base) is a method of ``labels``: with
    the chapter's runs, (a1) DPO, (b) SPRec and (e) SPRec-RN."""
    labels = set(labels)
    return [c for c in [*claims.CLAIMS.values(), *claims.ABLATION_CLAIMS.values()]
            if c.base in labels and all(p.label in labels for p in c.parts)]


def placeholders(rows: pd.DataFrame, datasets: Iterable[str], profiles: Iterable[str]) -> pd.DataFrame:
    """``rows`` with a row naming each (dataset, profile) that has no run, so that
    :func:`sprec_lib.claims.check_claims` judges its claims ("pending") instead of leaving them out;
    ordered by dataset, then profile, as given."""
    datasets, profiles = list(datasets), list(dict.fromkeys(profiles))
    have = set(zip(rows["dataset"], rows["profile"])) if len(rows) else set()
    extra = [{"dataset": d, "profile": p, "label": "", "seed": 0, "run": None, "rows": None}
             for d in datasets for p in profiles if (d, p) not in have]
    both = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True) if extra else rows.copy()
    # in the order asked (dataset, then profile), so that the verdicts' columns come out in it
    order = {(d, p): i for i, (d, p) in enumerate((d, p) for d in datasets for p in profiles)}
    key = [order.get(k, len(order)) for k in zip(both["dataset"], both["profile"])]
    return both.assign(_order=key).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def noise_rows(rows: pd.DataFrame, profiles: Iterable[str], quick: bool = False, root=RESULTS) -> pd.DataFrame:
    """The runs on which :func:`sprec_lib.claims.book_rule` measures one run's training noise (the
    spread over seeds of every method with several): ``rows``, and outside quick mode every
    committed run of ``profiles`` (``results/runs/<dataset>-<profile>``): the claims page measures it
    on the same 3-seed groups. The chapter's own runs have one seed."""
    from .results import finished_runs, run_rows

    frames = [rows] if len(rows) else []
    root = resolve(root)
    if not quick and root.is_dir():
        for profile in dict.fromkeys(profiles):
            for group in sorted(root.glob(f"*-{profile}")):
                found = run_rows(finished_runs(group))
                if len(found):
                    frames.append(found)
    if not frames:
        return pd.DataFrame()
    both = pd.concat(frames, ignore_index=True)
    return both.drop_duplicates("run") if "run" in both else both


def negatives(pairs: list) -> pd.DataFrame:
    """:func:`sprec_lib.results.negatives_table` of every iterating run of ``pairs`` (SPRec,
    SPRec-RN), stacked with its dataset, profile, label and seed: one row per iteration and kind of
    title (``positive``, ``self``, ``random``). An export keeps the table
    (``negatives_popularity.json``); a local run's is computed from its negatives and its dataset
    folder when both are there."""
    from .data.sprec_format import read_sprec_folder
    from .results import NEGATIVES_SUMMARY, negatives_table

    datasets: dict = {}
    frames, seen = [], set()
    for spec, run in pairs:
        if spec.label not in SPREC_LABELS or run.folder in seen:
            continue
        seen.add(run.folder)
        ds = None
        folder = resolve(spec.data_dir)
        if not (run.folder / NEGATIVES_SUMMARY).exists() and folder.is_dir():
            if folder not in datasets:
                datasets[folder] = read_sprec_folder(folder)
            ds = datasets[folder]
        table = negatives_table(run, ds)
        if table is not None and len(table):
            frames.append(table.assign(dataset=spec.dataset, profile=spec.profile, label=spec.label, seed=spec.seed))
    columns = ["dataset", "profile", "label", "seed", "iteration", "kind", "titles", "head_share", "top3_share", "distinct",
               "catalogue_share"]  # NaN in an export made before it was kept
    return pd.concat(frames, ignore_index=True).reindex(columns=columns) if frames else pd.DataFrame(columns=columns)


# -- the three questions ---------------------------------------------------------------

QUESTIONS = {
    "sft_collapse": "Is SFT less popularity-collapsed than with the model trained from scratch?",
    "dpo_orratio": "Does DPO with random negatives move ORRatio the way §4.1 predicts (up)?",
    "sprec_hr": "Does SPRec keep HR@5?",
}
PENDING = claims.PENDING
ANSWER_COLUMNS = ["question", "dataset", "profile", "answer", "value", "base", "paper", "difference", "low", "high",
                  "text"]


def _num(v, digits: int = 3, sign: str = "") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{sign}.{digits}f}"


def _interval_text(r) -> str:
    return f"95% interval [{_num(r['low'], sign='+')}, {_num(r['high'], sign='+')}], {r['rule']}"


def _sft_collapse(rows, datasets, profile, compare, paper, rule, row_data) -> list[dict]:
    metric = "ORRatio@1"
    diff = claims.profile_difference(rows, "sft", metric, profile, compare, rule, row_data).set_index("dataset")
    out = []
    for dataset in datasets:
        bigrec = paper[(paper["dataset"] == claims.paper_dataset(dataset)) & (paper["method"] == "sft")
                       & (paper["metric"] == metric)]["value"]
        theirs = float(bigrec.iloc[0]) if len(bigrec) else math.nan
        row = {"question": "sft_collapse", "dataset": dataset, "profile": profile, "paper": theirs}
        if dataset not in diff.index:
            sft = rows[(rows["dataset"] == dataset) & (rows["label"] == "sft")] if len(rows) else pd.DataFrame()
            mean = {p: float(sft[sft["profile"] == p][metric].mean()) if len(sft) and (sft["profile"] == p).any()
                    else math.nan for p in (profile, compare)}
            lacking = profile if math.isnan(mean[profile]) else compare
            known = "; ".join(f"{p}'s SFT: {metric} {_num(v)}" for p, v in mean.items() if not math.isnan(v))
            out.append({**row, "answer": PENDING, "value": mean[profile], "base": mean[compare],
                        "text": f"{dataset}: pending, no {lacking} SFT run yet ({known + '; ' if known else ''}"
                                f"the paper's BIGRec: {_num(theirs)})."})
            continue
        d = diff.loc[dataset]
        answer = "yes" if d["evidence"] < 0 else "no" if d["evidence"] > 0 else "within noise"
        closer = abs(d["value"] - theirs) < abs(d["base"] - theirs) if not math.isnan(theirs) else None
        words = {"yes": f"less collapsed than {compare}'s, clear of the noise",
                 "no": f"more collapsed than {compare}'s, clear of the noise",
                 "within noise": f"within the noise of {compare}'s"}[answer]
        near = "" if closer is None else (" and closer to the paper's" if closer else " and no closer to the paper's")
        text = (f"{dataset}: {profile}'s SFT gives {_num(d['value'])} of its top-1 slots to its three favourite items "
                f"({metric}), {compare}'s {_num(d['base'])}, the paper's BIGRec {_num(theirs)}: {words}{near} "
                f"(difference {_num(d['difference'], sign='+')}, {_interval_text(d)}).")
        out.append({**row, "answer": answer, "value": d["value"], "base": d["base"], "difference": d["difference"],
                    "low": d["low"], "high": d["high"], "text": text})
    return out


def orratio_by_answer(data: dict | None, k: int = 1) -> dict | None:
    """ORRatio@k over the answers that named a catalogue title (``named``) and over the others, which
    evaluation grounded to their nearest titles (``grounded``): ``{kind: {"rows", "ORRatio@k"}}``
    (NaN for a kind without rows), from per-row data with ``valid`` flags
    (:func:`sprec_lib.claims.load_row_data`); None without them. Each kind's ORRatio is its own
    three favourite items' share of its own top-k slots (:func:`sprec_lib.metrics.ranking_metrics`).
    It tells a method that concentrates its answers from one whose answers stop being titles.
    Where the rows carry each answer's kind (an export's ``answer``,
    :func:`sprec_lib.evaluation.answer_kinds`), ``kinds`` counts them."""
    from .metrics import ranking_metrics

    if not data or "valid" not in data:
        return None
    out = {}
    for kind, flag in (("named", True), ("grounded", False)):
        topk = [top for top, valid in zip(data["topk"], data["valid"]) if bool(valid) == flag]
        value = ranking_metrics(topk, [0] * len(topk), [[]] * len(topk), {}, [], k)["ORRatio"] if topk else math.nan
        out[kind] = {"rows": len(topk), f"ORRatio@{k}": value}
    if "answer" in data:
        from .evaluation import ANSWER_KINDS

        out["kinds"] = {kind: sum(a == kind for a in data["answer"]) for kind in ANSWER_KINDS}
    return out


def _format_note(rows: pd.DataFrame, dataset: str, profile: str, label: str, base: str = "sft",
                 row_data=None) -> str:
    """A sentence on how often ``label``'s answers and its start's are catalogue titles (valid_ratio,
    the mean over the profile's runs): the popularity metrics count the titles a generation is
    grounded to, so a method whose answers stop being titles moves them too. With ``row_data``
    (:func:`sprec_lib.claims.load_row_data`) and runs whose rows carry the flags, more sentences on
    the first seed's run against its own SFT start: what the answers that are not titles are (a
    title's name with a wrong year, and where grounding sent those), and ORRatio@1 split by answer
    (:func:`orratio_by_answer`). Empty without both runs."""
    if not len(rows) or "valid_ratio" not in rows:
        return ""
    here = rows[(rows["dataset"] == dataset) & (rows["profile"] == profile)]
    by = here.groupby("label")["valid_ratio"].mean()
    if label not in by or base not in by:
        return ""
    text = (f" Its answers name a catalogue title in {by[label]:.1%} of the test rows (valid_ratio; its SFT start: "
            f"{by[base]:.1%}); the others are grounded to their nearest titles, which the popularity metrics count too.")
    runs = here[here["label"] == label].sort_values("seed")
    if row_data is None or not len(runs) or "run" not in runs:
        return text
    mine, start = orratio_by_answer(row_data(runs["run"].iloc[0])), orratio_by_answer(row_data(runs["run"].iloc[0], base))
    if mine is None or start is None:
        return text
    seed = int(runs["seed"].iloc[0])
    if "kinds" in mine and "kinds" in start:
        def slips(o):
            wrong = o["kinds"]["wrong year"] + o["kinds"]["wrong year, grounded elsewhere"]
            share = wrong / o["grounded"]["rows"] if o["grounded"]["rows"] else math.nan
            return wrong, share

        (wrong, share), (wrong0, share0) = slips(mine), slips(start)
        meant = mine["kinds"]["wrong year"] / wrong if wrong else math.nan
        text += (f" Of those {mine['grounded']['rows']} (seed {seed}), {wrong} ({_pct(share)}) are a catalogue title's name "
                 f"with a wrong year (its SFT start: {wrong0} of {start['grounded']['rows']}, {_pct(share0)}), and "
                 f"grounding sends {_pct(meant)} of them to the title of that name.")

    def kind(name):
        a, b = mine[name], start[name]
        return f"{_num(a['ORRatio@1'])} ({a['rows']} rows; its SFT start's: {_num(b['ORRatio@1'])}, {b['rows']} rows)"

    return text + (f" Split by answer (seed {seed}), ORRatio@1 is {kind('named')} among the answers that name a title, "
                   f"and {kind('grounded')} among the grounded ones.")


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _part_answers(checks, question, claim_id, label, metrics, datasets, profile, compare, lead, yes, no,
                  rows: pd.DataFrame | None = None, row_data=None) -> list[dict]:
    """An answer from :func:`sprec_lib.claims.check_claims`'s parts ``(claim_id, label, metric)``:
    yes when every part holds, no when one is contrary, pending when one is missing, else within noise.
    With ``rows``, the text says how often the answers were catalogue titles (:func:`_format_note`)."""
    def parts(dataset, p):
        c = checks[(checks["dataset"] == dataset) & (checks["profile"] == p) & (checks["id"] == claim_id)
                   & (checks["method"] == label) & checks["metric"].isin(metrics)] if len(checks) else checks
        return c.set_index("metric").reindex([m for m in metrics if m in set(c["metric"])]) if len(c) else c

    def said(c):
        return "; ".join(f"{m} {_num(r['difference'], sign='+')} ({_interval_text(r)}): {r['outcome']}"
                         for m, r in c.iterrows())

    def answer(c):
        outcomes = set(c["outcome"]) if len(c) else {claims.MISSING}
        if claims.MISSING in outcomes:
            return PENDING
        if claims.CONTRARY in outcomes:
            return "no"
        return "yes" if outcomes == {claims.HOLDS} else "within noise"

    out = []
    for dataset in datasets:
        mine, theirs = parts(dataset, profile), parts(dataset, compare)
        verdict = answer(mine)
        other = (f" ({compare}: {said(theirs)})" if answer(theirs) != PENDING else f" ({compare}: no run)") \
            if compare != profile else ""
        if verdict == PENDING:
            text = f"{dataset}: pending, the {profile} runs are not all here yet{other}."
        else:
            words = {"yes": yes, "no": no, "within noise": "within the noise"}[verdict]
            note = "" if rows is None else _format_note(rows, dataset, profile, label, row_data=row_data)
            text = f"{dataset}: {lead} {said(mine)}: {words}{other}.{note}"
        first = mine.iloc[0] if len(mine) else {}
        out.append({"question": question, "dataset": dataset, "profile": profile, "answer": verdict,
                    "difference": first.get("difference", math.nan), "low": first.get("low", math.nan),
                    "high": first.get("high", math.nan), "text": text})
    return out


def answers(rows: pd.DataFrame, checks: pd.DataFrame, datasets: Iterable[str], profile: str, compare: str,
            paper: pd.DataFrame | None = None, rule: claims.NoiseRule = claims.RULE,
            row_data=claims.load_row_data) -> pd.DataFrame:
    """The issue's three questions (:data:`QUESTIONS`) on each dataset, for ``profile`` against
    ``compare`` (and the paper), one row per question and dataset: ``answer`` (yes, no, within
    noise, or pending while runs are missing) and ``text``, a sentence with the numbers.

    * ``sft_collapse``: SFT's ORRatio@1 under ``profile`` against ``compare``'s, paired by seed,
      under the noise rule (:func:`sprec_lib.claims.profile_difference`); yes when clearly lower;
    * ``dpo_orratio``: claim (a1)'s ORRatio parts (our DPO against its SFT start), from ``checks``
      (:func:`sprec_lib.claims.check_claims`); yes when they hold;
    * ``sprec_hr``: claim (b)'s HR@5 part (SPRec not clearly below its SFT start); yes when it holds."""
    paper = claims.paper_numbers() if paper is None else paper
    datasets = list(datasets)
    out = _sft_collapse(rows, datasets, profile, compare, paper, rule, row_data)
    out += _part_answers(checks, "dpo_orratio", "a1", "dpo", ["ORRatio@1", "ORRatio@5"], datasets, profile, compare,
                         f"{profile}'s DPO with random negatives against its SFT start:",
                         "up, as §4.1 predicts", "down, against §4.1's prediction", rows, row_data)
    out += _part_answers(checks, "sprec_hr", "b", "sprec", ["HR@5"], datasets, profile, compare,
                         f"{profile}'s SPRec against its SFT start:", "kept (not clearly lower)", "lost (clearly lower)",
                         rows, row_data)
    frame = pd.DataFrame(out, columns=ANSWER_COLUMNS)
    frame.insert(1, "asked", frame["question"].map(QUESTIONS))
    return frame
