"""Naming, finding and training the runs behind the book's tables (sprec_lib.experiments)."""

import shlex

import pytest

from sprec_lib import experiments
from sprec_lib.cli import build_parser
from sprec_lib.experiments import RunSpec, obtain
from sprec_lib.runs import Run, write_json


def test_names_commands_and_variants():
    spec = RunSpec("data/ml-1m", "sprec", seed=2, variant="nosft", overrides=("sprec.sft_step=false",))
    assert spec.name == "sprec-nosft-seed2" and spec.group() == "ml-1m-tiny" and spec.label == "sprec-nosft"
    cmd = shlex.split(spec.command())
    # The printed command is one the CLI parses into the same config.
    args = build_parser().parse_args(cmd[1:])
    assert args.method == "sprec" and args.seed == 2 and args.set == ["sprec.sft_step=false"]
    assert args.out == "runs/ml-1m-tiny/sprec-nosft-seed2"
    assert spec.config().sprec.sft_step is False and spec.config().profile == "tiny"
    specs = experiments.specs("d", ["sprec"], [0, 1], variants=experiments.ABLATIONS)
    assert [s.name for s in specs[:4]] == ["sprec-seed0", "sprec-nosft-seed0", "sprec-nodpo-seed0", "sprec-rn-seed0"]
    assert len(specs) == 8
    ratio = experiments.ratio_variants((0.0, 0.5))
    assert list(ratio) == ["n1024", "ratio0.5-n1024"]
    # Ratio 0 and N = 1 are one recipe (SPRec on the study settings), so one run serves both sweeps.
    same = RunSpec("d", "sprec", overrides=ratio["n1024"]).config().sprec
    assert ratio["n1024"] == experiments.n_negative_variants((1,))["n1024"] == experiments.NEGATIVE_STUDY
    assert (same.negatives, same.random_ratio, same.n_negatives, same.train_rows) == ("self", 0.0, 1, 1024)
    cfg = RunSpec("d", "sprec", variant="ratio0.5-n1024", overrides=ratio["ratio0.5-n1024"]).config()
    assert (cfg.sprec.negatives, cfg.sprec.random_ratio, cfg.sprec.train_rows, cfg.sprec.iterations) == ("mix", 0.5, 1024, 5)
    assert RunSpec("d", "sprec", overrides=experiments.n_negative_variants((3,))["neg3-n1024"]).config().sprec.n_negatives == 3


def finished(folder, spec, hr=0.5):
    run = Run(folder, spec.config())
    write_json({"valid_ratio": 1.0, "rows": 10, "stage": "sft", "@5": {"HR": hr}}, run.metrics_path("sft"))
    write_json({"method": spec.method, "final_stage": "sft"}, run.folder / "FINISHED")
    return run


def test_obtain_prefers_the_export_then_the_local_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    spec = RunSpec(str(tmp_path / "ml-1m"), "sft", seed=1)
    # Nothing there and no training: None, and the command that makes it.
    assert obtain(spec, train=False) is None
    assert "missing sft-seed1 on ml-1m: sprec train" in capsys.readouterr().out
    # A finished local run is exported to results/runs, then used.
    local = finished(tmp_path / "runs" / "ml-1m-tiny" / "sft-seed1", spec, hr=0.25)
    run = obtain(spec, train=False)
    exported = tmp_path / "results" / "runs" / "ml-1m-tiny" / "sft-seed1"
    assert run.folder == local.folder and (exported / "metrics" / "sft.json").is_file()
    # From now on the export wins (a fresh clone has only it).
    write_json({"valid_ratio": 1.0, "rows": 10, "stage": "sft", "@5": {"HR": 0.75}}, exported / "metrics" / "sft.json")
    assert obtain(spec, train=False).folder == exported
    # A run made with another config is reported and not used.
    other = RunSpec(spec.data_dir, "sft", seed=1, overrides=("sft.lr=0.5",))
    assert obtain(other, train=False) is None
    out = capsys.readouterr().out
    assert "made with other settings; not used" in out


def test_thread_count_and_dataset_path_do_not_matter(tmp_path):
    spec = RunSpec("/somewhere/ml-1m", "sft")
    run = finished(tmp_path / "r", RunSpec("/elsewhere/ml-1m", "sft", overrides=("model.torch_threads=1",)))
    assert experiments.matches(run, spec)
    assert not experiments.matches(run, RunSpec("/somewhere/ml-1m", "sft", seed=5))


def test_an_empty_sweep_asks_for_no_run():
    assert experiments.specs("d/ml-1m", ["sprec"], (0, 1), variants={}) == []
    assert [s.variant for s in experiments.specs("d/ml-1m", ["sprec"], (0,))] == [""]
    assert len(experiments.specs("d/ml-1m", ["sprec"], (0,), variants=experiments.SWEEPS["random_ratio"]([0.5, 1.0]))) == 2


def test_speed_switches_do_not_matter(tmp_path):
    """A run made with the stock prompt layout (before shared_prompt became the preference stages'
    default) still answers today's spec; a real setting of the same section still counts."""
    cfg = RunSpec("d/ml-1m", "dmpo").config()
    assert cfg.dpo.shared_prompt and cfg.sdpo.shared_prompt and cfg.sprec.dpo.shared_prompt
    assert cfg.dmpo.stage.shared_prompt and cfg.rosepo.stage.shared_prompt
    assert not cfg.sft.shared_prompt and not cfg.sprec.sft.shared_prompt  # the shared SFT stage's key stays
    old = finished(tmp_path / "d", RunSpec("d/ml-1m", "dmpo", overrides=(
        "dmpo.stage.shared_prompt=false", "dmpo.stage.fast_head=false", "sft.token_metrics=every_step")))
    assert experiments.matches(old, RunSpec("d/ml-1m", "dmpo"))
    assert not experiments.matches(old, RunSpec("d/ml-1m", "dmpo", overrides=("dmpo.stage.beta=0.5",)))


def test_settings_a_method_does_not_read_do_not_make_its_run_stale(tmp_path):
    run = finished(tmp_path / "r", RunSpec("d/ml-1m", "sft", overrides=("sprec.dpo.lr=1e-9", "dpo.beta=3")))
    assert experiments.matches(run, RunSpec("d/ml-1m", "sft"))
    assert not experiments.matches(run, RunSpec("d/ml-1m", "sft", overrides=("sft.lr=1e-9",)))
    dpo = finished(tmp_path / "p", RunSpec("d/ml-1m", "dpo", overrides=("sprec.dpo.lr=1e-9",)))
    assert experiments.matches(dpo, RunSpec("d/ml-1m", "dpo"))
    assert not experiments.matches(dpo, RunSpec("d/ml-1m", "dpo", overrides=("dpo.beta=3",)))
    sprec = finished(tmp_path / "s", RunSpec("d/ml-1m", "sprec", overrides=("dpo.beta=3",)))
    assert experiments.matches(sprec, RunSpec("d/ml-1m", "sprec"))
    assert not experiments.matches(sprec, RunSpec("d/ml-1m", "sprec", overrides=("sprec.dpo.lr=1e-9",)))


def test_a_stale_quick_run_is_remade(tmp_path, monkeypatch):
    from sprec_lib.data.sprec_format import write_sprec_folder
    from sprec_lib.data.synthetic import make_synthetic
    from sprec_lib.pipeline import dataset_hash

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    data = write_sprec_folder(make_synthetic(n_items=30, sizes=(32, 8, 8), seed=4), tmp_path / "syn")
    spec = RunSpec(str(data), "sft", seed=0, overrides=("model.torch_threads=1",))
    folder = tmp_path / "runs" / "quick" / f"syn-tiny-{dataset_hash(data)[:8]}" / "sft-seed0"
    stale = RunSpec(str(data), "sft", seed=0, overrides=("sft.weight_decay=0.5",))
    Run(folder, stale.config(quick=True))
    write_json({"method": "sft", "final_stage": "sft"}, folder / "FINISHED")
    run = obtain(spec, train=False, quick=True, cache_dir=tmp_path / "cache")
    assert run.folder == folder and experiments.matches(run, spec, quick=True) and run.metrics()["sft"]["rows"] == 8


def test_book_specs_and_missing_runs(tmp_path, monkeypatch, capsys):
    from sprec_lib.cli import main

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    all_specs = experiments.book_specs(["a/ds1", "a/ds2"], seeds=(0, 1), sweeps={"a/ds1": (0,)})
    # Table 1: 2 datasets x M methods (the registry's Table-1 methods) x 2 seeds; ablations: 3
    # variants x 2 seeds x 2 datasets (SPRec counted once); sweeps on ds1 only: 5 ratios + 4 values
    # of N, one seed, sharing one run (ratio 0 = N 1).
    m = len(experiments.table1_methods())
    assert m >= 4 and len(all_specs) == 2 * m * 2 + 12 + 8
    assert len({s.name + s.data_dir for s in all_specs}) == len(all_specs)
    # The order to run them in: SFT, S-DPO and SPRec seed by seed, then Table 2, the sweeps, the rest.
    first, ablations, sweeps, rest = all_specs[:12], all_specs[12:24], all_specs[24:32], all_specs[32:]
    assert {s.method for s in first} == {"sft", "sdpo", "sprec"} and [s.seed for s in first] == [0] * 6 + [1] * 6
    assert {s.variant for s in ablations} == {"nosft", "nodpo", "rn"} and {s.data_dir for s in ablations} == {"a/ds1", "a/ds2"}
    assert {s.data_dir for s in sweeps} == {"a/ds1"} and {s.seed for s in sweeps} == {0} and "n1024" in {s.variant for s in sweeps}
    assert not {s.method for s in rest} & {"sft", "sdpo", "sprec"} and len(rest) == 2 * (m - 3) * 2
    spec = RunSpec("a/ds1", "sft", seed=0)
    assert not experiments.is_done(spec)
    finished(tmp_path / "results" / "runs" / "ds1-tiny" / "sft-seed0", spec)
    assert experiments.is_done(spec) and not experiments.is_done(RunSpec("a/ds1", "sft", seed=1))
    (tmp_path / "ds1").mkdir()
    assert main(["runs", "missing", "--datasets", str(tmp_path / "ds1"), "--sweeps", str(tmp_path / "ds1"), "--seeds", "0"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == m + 3 + 8 - 1 and f"{m + 10} runs missing" in out.err  # sft-seed0 is done
    assert all(line.startswith("sprec train --dataset ") for line in lines)
    assert not any("--method sft " in line for line in lines)
    # As a lane's queue: the same commands, each followed by the export of the run it makes.
    assert main(["runs", "missing", "--datasets", str(tmp_path / "ds1"), "--sweeps", str(tmp_path / "ds1"), "--seeds", "0",
                 "--format", "lane"]) == 0
    queue = capsys.readouterr().out.splitlines()
    assert [q.split(" && ")[0] for q in queue] == lines
    for q, line in zip(queue, lines):
        out_folder = line.split(" --out ")[1].split()[0]
        assert q.endswith(f" && sprec results {out_folder} --gather > /dev/null")
    # The small profile: the runs of its one chapter (08_pretrained), five methods at seed 0, not the whole grid.
    assert main(["runs", "missing", "--datasets", str(tmp_path / "ds1"), "--profile", "small"]) == 0
    small = capsys.readouterr().out.splitlines()
    assert [line.split(" --out ")[1].split()[0].split("/")[-1] for line in small] == [
        "sft-seed0", "dpo-seed0", "sdpo-seed0", "sprec-seed0", "sprec-rn-seed0"]
    assert all("--profile small --seed 0 " in line for line in small)


def test_the_grid_goes_to_a_scheduler_once_per_run(tmp_path, monkeypatch):
    """The job array of a small grid: one task per missing run, each command once; the JSON records
    say the same; the time limit comes from the dry run's estimate."""
    import shlex as _shlex

    from sprec_lib.data.sprec_format import write_sprec_folder
    from sprec_lib.data.synthetic import make_synthetic

    import shutil
    from pathlib import Path

    bench = Path(experiments.__file__).resolve().parents[1] / "benchmarks" / "results" / "sprec_iteration-tiny.json"
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(bench, tmp_path / "benchmarks" / "results")  # the estimates' basis, in the repository root
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    write_sprec_folder(make_synthetic(n_items=30, sizes=(40, 10, 10), seed=2), tmp_path / "synth")
    todo = experiments.specs("synth", ["sft", "sprec"], [0, 1])
    records = experiments.grid(todo)
    assert [r["command"] for r in records] == [s.command() for s in todo]
    assert all(r["estimate_s"] and r["estimate_s"] > 0 for r in records)
    script = experiments.slurm_array(records, parallel=2)
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --cpus-per-task=1" in script and "--gres" not in script
    body = script.split("COMMANDS=(\n", 1)[1].split("\n)", 1)[0].splitlines()
    commands = [_shlex.split(line.strip())[0] for line in body]
    assert len(commands) == 4
    for spec in todo:
        assert sum(c.startswith(spec.command() + " ") for c in commands) == 1
    assert all(c.endswith("--set model.torch_threads=1") for c in commands)
    # Every task parses back into the CLI's own arguments.
    args = build_parser().parse_args(_shlex.split(commands[3])[1:])
    assert (args.method, args.seed, args.out) == ("sprec", 1, "runs/synth-tiny/sprec-seed1")


def test_gather_exports_runs_from_wherever_they_were_written(tmp_path, monkeypatch):
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    spec = RunSpec(str(tmp_path / "ml-1m"), "sprec", seed=2, variant="nosft", overrides=("sprec.sft_step=false",))
    run = Run(tmp_path / "scratch" / "node7" / "anything", spec.config(), variant="nosft")
    run.record_metrics("sft", {"valid_ratio": 1.0, "rows": 10, "stage": "sft", "@5": {"HR": 0.5}})
    run.finish("sft")
    Run(tmp_path / "scratch" / "unfinished", spec.config())  # not finished: left alone
    exported = experiments.gather(tmp_path / "scratch")
    assert exported == [tmp_path / "results" / "runs" / "ml-1m-tiny" / "sprec-nosft-seed2"]
    assert Run(exported[0]).label == "sprec-nosft" and Run(exported[0]).final_stage == "sft"


def _record(label, *stages, dataset="d1", seed=0):
    """A grid record with hand-made stages: (estimate_s, shared key or None, status)."""
    return {"dataset": dataset, "label": label, "seed": seed, "command": f"sprec train {label}", "folder": f"runs/{label}",
            "stages": [{"stage": f"s{i}", "estimate_s": est, "shared": key, "status": status}
                       for i, (est, key, status) in enumerate(stages)]}


def test_lanes_are_packed_to_finish_in_time_sharing_stages():
    """Worked by hand: two lanes, 100 s each. A shared stage is paid once, by the first run that
    needs it; a later run on the other lane waits for it; cached stages are free; a run that fits
    nowhere is deferred and a shorter one after it still fills a lane; no estimate, no place."""
    todo, cached = "to run", "reused from the cache"
    records = [
        _record("r1", (30, "p1", todo), (10, "s1", todo), (5, None, todo)),          # lane A 0 -> 45
        _record("r2", (30, "p1", todo), (10, "s2", todo), (20, None, todo)),         # A: 45 -> 75; B: waits for p1 to 30, -> 60
        _record("r3", (50, "p2", cached), (40, None, todo), dataset="d2"),         # A: 45 -> 85; B: 60 -> 100
        _record("r4", (30, "p1", todo), (10, "s1", todo), (30, None, todo)),         # A: 85 -> 115 (late); B: 60 -> 90
        _record("r5", (50, None, todo)),                                             # A: 135, B: 140: deferred
        _record("r6", (10, None, todo), (99, None, "done in the run folder")),       # A: 85 -> 95
        _record("r7", (None, None, todo)),                                           # no estimate
    ]
    packed = experiments.pack_lanes(records, lanes=2, hours=100 / 3600)
    spans = [[(r["label"].split()[1], r["start_s"], r["end_s"]) for r in lane] for lane in packed["lanes"]]
    assert spans == [[("r1", 0, 45), ("r3", 45, 85), ("r6", 85, 95)], [("r2", 0, 60), ("r4", 60, 90)]]
    assert [r["label"] for r in packed["deferred"]] == ["r5"] and [r["label"] for r in packed["unknown"]] == ["r7"]
    assert packed["lanes"][0][0]["folder"] == "runs/r1"
    # slowdown scales every estimate: r1 alone takes 90 s, and r2 (shared p1 done at 60) ends at 120 on lane B.
    slow = experiments.pack_lanes(records[:2], lanes=2, hours=1, slowdown=2)
    assert [[(r["start_s"], r["end_s"]) for r in lane] for lane in slow["lanes"]] == [[(0, 90)], [(0, 120)]]
    # One lane: everything in order, as long as the time lasts.
    one = experiments.pack_lanes(records, lanes=1, hours=1)
    assert [r["label"].split()[1] for r in one["lanes"][0]] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert one["lanes"][0][-1]["end_s"] == 45 + 30 + 40 + 30 + 50 + 10
    # Together on one lane: every stage to run once, shared ones once (p1 30 + s1 10 + s2 10), the
    # cached p2 and the finished stage free, r7 (no estimate) left out.
    cost = experiments.lane_hours(records)
    own = 5 + 20 + 40 + 30 + 50 + 10
    assert cost["hours"] == pytest.approx((own + 50) / 3600) and cost["shared_hours"] == pytest.approx(50 / 3600)
    assert (cost["runs"], cost["unknown"]) == (7, 1)
    for bad in ({"lanes": 0, "hours": 1}, {"lanes": 1, "hours": 0}, {"lanes": 1, "hours": 1, "slowdown": -1}):
        try:
            experiments.pack_lanes(records, **bad)
        except ValueError:
            continue
        raise AssertionError(f"pack_lanes accepted {bad}")


def test_runs_plan_writes_queues_that_fit(tmp_path, monkeypatch, capsys):
    """`sprec runs plan`: the missing runs of a synthetic folder dealt to two queue files, each line
    a run and its export, every run at most once, nothing placed past the time given."""
    import shutil
    from pathlib import Path

    from sprec_lib.cli import main
    from sprec_lib.data.sprec_format import write_sprec_folder
    from sprec_lib.data.synthetic import make_synthetic

    bench = Path(experiments.__file__).resolve().parents[1] / "benchmarks" / "results" / "sprec_iteration-tiny.json"
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(bench, tmp_path / "benchmarks" / "results")
    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_sprec_folder(make_synthetic(n_items=30, sizes=(40, 10, 10), seed=2), tmp_path / "synth")
    args = ["runs", "plan", "--datasets", str(tmp_path / "synth"), "--seeds", "0", "--sweeps", str(tmp_path / "synth") + ":0",
            "--out", str(tmp_path / "q")]
    assert main([*args, "--hours", "100"]) == 0
    out = capsys.readouterr().out
    lines = [line for name in ("q-A.txt", "q-B.txt") for line in (tmp_path / name).read_text().splitlines()]
    missing = experiments.book_specs(["synth"], seeds=(0,), sweeps={"synth": (0,)})  # the CLI's portable path
    placed = [line.split(" && ")[0] for line in lines]
    assert len(placed) == len(set(placed)) and set(placed) <= {s.command() for s in missing}
    assert {"sft-seed0", "sdpo-seed0", "sprec-seed0"} <= {p.split(" --out ")[1].split()[0].split("/")[-1] for p in placed}
    for line in lines:
        folder = line.split(" --out ")[1].split()[0]
        assert line.endswith(f" && sprec results {folder} --gather > /dev/null")
    assert "q-A.txt" in out and "do not fit" in out
    # No time, no runs: the queues are written empty and every run is deferred.
    assert main([*args, "--hours", "0.0001"]) == 0
    assert (tmp_path / "q-A.txt").read_text() == (tmp_path / "q-B.txt").read_text() == ""
    import re

    again = capsys.readouterr()
    deferred, asked = map(int, re.search(r"(\d+) of (\d+) missing runs do not fit", again.out).groups())
    unknown = re.search(r"(\d+) run\(s\) left out for want of an estimate", again.err)
    assert asked == len(missing) and deferred + (int(unknown[1]) if unknown else 0) == asked
