"""The CUDA-path benchmark's plumbing, on the CPU with the tiny shape (benchmarks/cuda_path.py)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sprec" / "MovieLens"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is not on this machine")
def test_cuda_path_benchmark_times_sft_dpo_and_generation(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cuda_path

    out = tmp_path / "cuda_path.json"
    res = cuda_path.main(["--dataset", str(DATA), "--shape", "tiny", "--steps", "2", "--gen-rows", "3",
                          "--gen-tokens", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    for part in ("sft", "dpo"):
        p = res["parts"][part]
        assert p["steps"] == 2 and p["steps_timed"] == 1 and p["seconds_per_step"] == p["step_seconds"][1]
        assert p["tokens_per_s"] == pytest.approx(p["tokens_per_step"] / p["seconds_per_step"])
        # a step is batch x accumulation rows, each at least a few tokens long and at most max_length
        rows = res["stage_configs"][part]["batch_size"] * res["stage_configs"][part]["grad_accum"]
        assert rows * 10 < p["tokens_per_step"] < rows * 2 * 512
    gen = res["parts"]["generation"]
    assert gen["prompts"] == 3 and gen["new_tokens"] == 12 and gen["new_tokens_per_s"] == pytest.approx(12 / gen["seconds"])
    assert "sft_nf4" not in res["parts"]  # NF4 runs on CUDA only (unless --nf4 yes)
    assert res["dims"]["num_key_value_heads"] == res["dims"]["num_attention_heads"]  # the tiny shape
    assert cuda_path.LLAMA_1B["num_key_value_heads"] == 8 and cuda_path.LLAMA_1B["vocab_size"] == 128256
