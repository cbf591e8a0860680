"""The run record (sprec_lib.runs): committed runs read the same through it, and it alone knows the layout."""

import json
import math
import re
from pathlib import Path

import pytest

from sprec_lib import results
from sprec_lib.config import run_config
from sprec_lib.runs import Run, RunSpec, finished_runs, open_run, recipe_order

ROOT = Path(__file__).resolve().parents[1]
PINNED = json.loads((ROOT / "tests" / "fixtures" / "committed_runs.json").read_text())


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
    return a == b


# The one row that changed, on purpose: the old reader took the first evaluation of the final stage
# in file-time order, which after a clone may be a re-evaluation on the validation split
# ("it3-dpo-grounded-5-valid", 512 rows) instead of the iteration's test evaluation ("it3").
FIXED = {"results/investigations/ml-1m-tiny/sprec-dpolr5e-6-seed0": "it3"}
# CDs_and_Vinyl's dpo, sdpo and sprec were re-run when its tiny pretraining became 1,200 steps (issue 14):
# their pins went with the old runs. The old SFT moved, unchanged, to investigations/ (pinned there,
# with the two validation-split evaluations added to its metrics; its label is read from the folder name).
# MovieLens's, Goodreads's and Steam's T = 3 SPRec runs moved, unchanged, to investigations/ as sprec-T3 when
# tiny went to T = 5 (issue 18; results.relabel_run); their pins moved with them.


def test_committed_runs_read_as_before():
    """Every committed run, re-read through the record, gives the table rows, labels and curves
    pinned (tests/fixtures/committed_runs.json) before the record existed (but for :data:`FIXED`)."""
    seen = {}
    for root in ("results/runs", "results/investigations"):
        runs = finished_runs(ROOT / root)
        for row, run in zip(results.run_rows(runs).to_dict("records"), runs):
            seen[run.folder.relative_to(ROOT).as_posix()] = (row, run)
    assert set(seen) >= set(PINNED), f"runs gone: {sorted(set(PINNED) - set(seen))}"
    for key, pinned in PINNED.items():
        row, run = seen[key]
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k != "run"}
        assert set(row) == set(pinned["row"]), key
        if key in FIXED:
            assert row["rows"] == run.metrics()[FIXED[key]]["rows"] == 1000 and pinned["row"]["rows"] == 512
            continue
        bad = {k: (row[k], pinned["row"][k]) for k in row if not _same(row[k], pinned["row"][k])}
        assert not bad, f"{key}: {bad}"
        assert sorted(run.metrics()) == pinned["metric_labels"], key
        if "curve" in pinned:
            curve = results.iteration_curves(run).to_dict("records")
            assert [c["iteration"] for c in curve] == [c["iteration"] for c in pinned["curve"]], key
            for got, want in zip(curve, pinned["curve"]):
                assert all(_same(None if isinstance(v, float) and math.isnan(v) else v, want[k])
                           for k, v in got.items()), key


def test_order_comes_from_the_recipe_not_file_times():
    labels = ["it10", "it2-dpo", "sft-constrained-5", "it2", "it1", "pretrain", "it2-negatives", "sft", "it2-sft", "dpo"]
    assert sorted(labels, key=recipe_order) == [
        "pretrain", "sft", "sft-constrained-5", "dpo", "it1", "it2-negatives", "it2-sft", "it2-dpo", "it2", "it10"]


def test_a_run_describes_itself(tmp_path):
    spec = RunSpec(str(tmp_path / "ml-1m"), "sprec", seed=3, variant="nosft", overrides=("sprec.sft_step=false",))
    cfg = spec.config()
    run = Run(spec.folder(tmp_path / "runs"), cfg, variant="nosft")
    assert run.folder == tmp_path / "runs" / "ml-1m-tiny" / "sprec-nosft-seed3"
    assert (run.label, run.method, run.seed, run.dataset) == ("sprec-nosft", "sprec", 3, "ml-1m")
    doc = json.loads((run.folder / "config.json").read_text())
    assert doc["spec"] == {"method": "sprec", "variant": "nosft", "label": "sprec-nosft", "seed": 3,
                           "dataset": "ml-1m", "profile": "tiny"}
    assert doc["machine"]["cpu_capability"] and doc["machine"]["torch_threads"] >= 1
    assert {"cpu_vendor", "cpu_model", "cpu_isa"} <= set(doc["machine"])
    # Stages and evaluations in the order they happened, whatever the files' times say.
    for stage in ("pretrain", "sft", "it1-sft", "it1-dpo"):
        run.mark_done(stage)
    for label in ("sft", "it1"):
        run.record_metrics(label, {"stage": label if label == "sft" else "it1-dpo", "rows": 1})
    for p in (run.folder / "metrics").glob("*.json"):  # a clone gives every file one time
        p.touch()
    assert run.stages == ["pretrain", "sft", "it1-sft", "it1-dpo"] and run.labels == ["sft", "it1"]
    assert json.loads((run.folder / "manifest.json").read_text()) == {
        "stages": ["pretrain", "sft", "it1-sft", "it1-dpo"], "evaluations": ["sft", "it1"]}
    assert not run.is_finished and open_run(run.folder) is None and run.final_stage is None
    with pytest.raises(FileNotFoundError, match="has not finished"):
        run.final_metrics()
    run.finish("it1-dpo")
    assert run.is_finished and run.final_stage == "it1-dpo" and run.final_metrics()["stage"] == "it1-dpo"
    assert open_run(run.folder).label == "sprec-nosft"
    # The export is itself a run record, with the same description.
    exported = run.export(tmp_path / "results" / "x")
    assert exported.label == "sprec-nosft" and exported.labels == ["sft", "it1"] and exported.final_stage == "it1-dpo"
    # Reopened with another config: refused.
    with pytest.raises(ValueError, match="different config"):
        Run(run.folder, run_config("tiny", dataset=cfg.dataset, method="sprec", seed=4))


def test_a_resumed_run_says_which_asked_settings_it_does_not_take(tmp_path):
    """A run resumes with its own measure-only and speed settings (NEUTRAL_SWITCHES) and says so,
    naming each: a measurement asked for on the command line is otherwise silently not made."""
    import warnings

    cfg = run_config("tiny", dataset="/x/Steam", method="sprec", seed=0)
    Run(tmp_path / "r", cfg)
    asked = run_config("tiny", ["sprec.eval_sft_steps=true"], dataset="/x/Steam", method="sprec", seed=0)
    with pytest.warns(UserWarning, match=r"sprec\.eval_sft_steps=True \(the run has False\)"):
        assert Run(tmp_path / "r", asked).cfg.sprec.eval_sft_steps is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same settings: nothing to say
        Run(tmp_path / "r", cfg)


def test_only_runs_py_knows_the_layout():
    """No module but sprec_lib/runs.py names a run folder's marker or manifest files, or parses a
    run folder's name."""
    pattern = re.compile(r"""["'](FINISHED|DONE|manifest\.json)["']|rsplit\(["']-seed""")
    offenders = []
    for path in sorted((ROOT / "sprec_lib").rglob("*.py")):
        if path.name == "runs.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_module_level_imports_form_no_circle():
    """The package's modules import one another one way: the graph of module-level ``from .x
    import`` / ``from . import x`` statements (imports inside functions excluded: those are
    deliberate late imports) has no cycle."""
    import ast

    pkg = ROOT / "sprec_lib"

    def name(path):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in pkg.rglob("*.py")}
    graph = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    for cand in (f"{target}.{alias.name}", target):
                        if cand in modules and cand != mod:
                            deps.add(cand)
                            break
        graph[mod] = deps
    # A package's __init__ importing its own submodules is how a package exposes them, not a circle.
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            if m.startswith(d + ".") or d.startswith(m + "."):
                continue
            if state.get(d) == "open":
                cycle.append(stack + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycle, f"import circles: {cycle}"


def test_every_relative_import_names_a_module_of_the_package():
    """Late imports (inside functions) run only when their function does: a wrong one (``from
    .assets`` in a subpackage) would pass every import-time check. Each must name a real module or
    a name its package defines."""
    import ast
    import importlib

    pkg = ROOT / "sprec_lib"
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                try:
                    module = importlib.import_module(target)
                except ImportError as e:
                    bad.append(f"{rel}:{node.lineno}: {target} ({e})")
                    continue
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{target}.{alias.name}")
                        except ImportError:
                            bad.append(f"{rel}:{node.lineno}: {target} has no {alias.name}")
    assert not bad, "\n".join(bad)


def test_the_machine_record_tells_apart_cpus_with_one_capability_string():
    """Two AVX512 CPUs (one with AMX) trained one stage to different losses, so a run records the
    vendor, model and kernel-deciding flags of the first processor in /proc/cpuinfo."""
    from sprec_lib.cpu import parse_cpuinfo

    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile avx512_vnni\n\n"
            "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: other\nflags\t\t: avx2\n")
    assert parse_cpuinfo(text) == {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+",
                                   "isa": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]}
    assert parse_cpuinfo("vendor_id : AuthenticAMD\nflags : sse2 avx2 fma avx512f\n") == {
        "vendor": "AuthenticAMD", "model": "", "isa": ["avx2", "fma", "avx512f"]}
    assert parse_cpuinfo("") == {"vendor": "", "model": "", "isa": []}
    # Only the first processor's block counts: a field it lacks is not taken from the next one.
    assert parse_cpuinfo("vendor_id : A\nflags : avx2\n\nvendor_id : B\nmodel name : second\nflags : amx_tile\n") == {
        "vendor": "A", "model": "", "isa": ["avx2"]}
