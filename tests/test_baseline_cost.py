"""Smoke test of ``benchmarks/baseline_cost.py``: its main function on a micro dataset and model (one or
two rows, one repeat), and the JSON's structure and invariants. The numbers themselves mean nothing."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from sprec_lib.data.sprec_format import write_sprec_folder
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.quick import QUICK_RUN

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def baseline_cost():
    spec = importlib.util.spec_from_file_location("baseline_cost", ROOT / "benchmarks" / "baseline_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_main_writes_every_stage(tmp_path, baseline_cost, one_thread):
    folder = write_sprec_folder(make_synthetic(n_items=40, sizes=(64, 16, 16), seed=1), tmp_path / "synth")
    model = [a for a in QUICK_RUN if a.startswith("model.")]  # a 2-layer model of width 64
    res = baseline_cost.main(["--dataset", str(folder), "--rows", "2", "--eval-rows", "2", "--repeats", "1",
                              "--sasrec-epochs", "1", "--out", str(tmp_path / "out"), "--tmp", str(tmp_path / "work"),
                              "--set", *model, "d3.num_beams=5"])
    saved = json.loads((tmp_path / "out" / "baseline_cost-tiny.json").read_text())
    assert saved["stages"] == json.loads(json.dumps(res["stages"]))
    assert list(saved["stages"]) == list(baseline_cost.STAGES)  # every stage, in order
    assert (saved["rows"], saved["eval_rows"], saved["repeats"]) == (2, 2, 1)
    for key in ("machine", "versions", "date", "command", "start_model", "memory_measure", "stage_configs"):
        assert saved[key]
    assert saved["machine"]["torch_threads"] == 1 and "--rows 2" in saved["command"]
    for name, s in saved["stages"].items():
        assert s["tokens"] > 0 and s["seconds_median"] > 0, name
        assert math.isclose(s["tokens_per_second"], s["tokens"] / s["seconds_median"]), name
        assert math.isclose(s["ratio_to_sft_seconds"], s["seconds_median"] / saved["stages"]["sft"]["seconds_median"])
        assert len(s["seconds"]) == 1 and 0 <= s["prepare_seconds_median"] <= s["seconds_median"], name
        assert s["peak_mb"] >= 0 and s["process_peak_mb"] > s["peak_mb"], name
        assert len(saved["samples"][name]) == 1
    st = saved["stages"]
    # the same rows everywhere: SFT and RW see the same tokens; S-DPO and DMPO K + 1 sequences a row, DPO 2
    assert st["sft"]["tokens"] == st["rw"]["tokens"] and st["sft"]["sequences"] == 2
    assert st["dpo"]["sequences"] == 2 * 2 and st["rosepo"]["sequences"] == 2 * 2
    k = saved["stage_configs"]["sdpo"]["n_negatives"]
    assert st["sdpo"]["sequences"] == st["dmpo"]["sequences"] == 2 * (k + 1)
    assert st["sdpo"]["tokens"] > st["dpo"]["tokens"]
    assert 0 <= st["rosepo"]["mean_epsilon"] <= 0.5
    assert st["eval_greedy"]["rows"] == st["eval_d3"]["rows"] == 2
