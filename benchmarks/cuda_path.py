"""The `paper` profile's CUDA path, timed without the paper's weights: tokens/s and peak memory of
SFT steps, DPO steps and greedy generation for a model of Llama-3.2-1B-Instruct's shape.

    python benchmarks/cuda_path.py                      # on a GPU: the 1B shape, bf16 (and NF4 if bitsandbytes is there)
    python benchmarks/cuda_path.py --shape tiny --steps 2 --gen-rows 4   # on a CPU: the plumbing

No model hub is reachable on the lent GPU machine, so the model is *randomly initialised* with
Llama-3.2-1B's shape (hidden 2,048, 16 layers, 32 heads with 8 key-value heads, MLP 8,192, vocabulary
128,256, tied embeddings; ``--shape tiny`` is the tiny profile's shape instead) and the tokenizer is
the one the tiny profile trains on the dataset's titles (its ids are all below 8,192: the head still
computes all 128,256 logits, so the head's cost is the real model's). The numbers are timings, not
results: a random model's generations are noise, so generation runs a fixed ``--gen-tokens`` (no
early stop) and the DPO negatives are random catalogue titles.

What runs is the library's own path for the `paper` profile: LoRA as the paper (``models.add_lora``:
r 16, alpha 32, dropout 0.05, all seven projections), the profile's SFT and DPO stage configs
(batch x accumulation, max length 512, fast head, DPO's shared prompt) through
``trainers.make_sft_trainer`` / ``make_dpo_trainer`` (trl), bf16 as the paper's ``bf16=True``
(``training_args``: on CUDA bf16 wherever the GPU supports it) and activation checkpointing on CUDA,
for ``--steps`` optimizer steps after one warm-up step; and ``decoding.generate_free`` for the
generation. ``--nf4`` (default: when ``bitsandbytes`` imports, on CUDA) also runs SFT with the base
model in 4-bit NF4 (bf16 compute), as the paper's QLoRA-style loading does: the random model is saved
and loaded again with a ``BitsAndBytesConfig``.

On the lent GPU machine (``/work/.library/device``: Python 3.12 with torch, transformers, peft,
accelerate, pandas and pyarrow, but not trl or datasets, and no network), carry the wheels and the
data folder; here, in the repository root::

    echo /.whl/ >> .git/info/exclude; echo /.carry/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 peft==0.21.2 \
        tokenizers==0.23.3 accelerate==1.15.0
    mkdir -p .carry && cp -r ../shared/data/sprec/MovieLens .carry/   # never committed: .carry is ignored

then one ``run`` with ``carry=[".whl", ".carry"]`` and the command
``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:.
python3 benchmarks/cuda_path.py --dataset .carry/MovieLens --out $OUT/cuda_path.json`` (about 25 MB
travel; minutes of device time, most of it the machine's start).

Writes ``benchmarks/results/cuda_path.json`` (``--out``): the device, versions, the shape, and per
part the steps, tokens per step (trl's ``num_tokens``), seconds (median step after the first), tokens/s and
peak memory (``torch.cuda.max_memory_allocated``, or the peak resident set on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sprec_lib import decoding, models, trainers  # noqa: E402
from sprec_lib.config import SPRecConfig, run_config  # noqa: E402
from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.pipeline import sft_rows  # noqa: E402
from sprec_lib.prompts import prompt  # noqa: E402
from sprec_lib.runs import versions  # noqa: E402
from sprec_lib.selfplay import negatives_for, preference_rows, sample_rows  # noqa: E402
from sprec_iteration import PeakMemory  # noqa: E402

# Llama-3.2-1B-Instruct's config.json (meta-llama/Llama-3.2-1B-Instruct on the hub).
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def random_model(shape: str, tokenizer, seed: int = 0):
    """A randomly initialised LlamaForCausalLM of Llama-3.2-1B's shape (``"1b"``) or the tiny
    profile's (``"tiny"``), in fp32 (trl's bf16 is autocast over fp32 master weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if shape == "1b":
        dims = LLAMA_1B
    else:
        m = run_config("tiny", dataset="x", method="sft").model
        dims = {"hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size, "num_hidden_layers": m.num_layers,
                "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_heads, "vocab_size": len(tokenizer),
                "max_position_embeddings": m.max_positions, "tie_word_embeddings": True}
    config = LlamaConfig(**dims, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config), dims


def nf4_copy(model, folder: Path):
    """``model`` saved, then loaded again with its linear layers in 4-bit NF4 (bf16 compute)."""
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    model.save_pretrained(folder)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return LlamaForCausalLM.from_pretrained(folder, quantization_config=q, device_map={"": 0})


class StepTimes(TrainerCallback):
    """Seconds of every optimizer step (CUDA synchronised at both ends)."""

    def __init__(self):
        self.seconds, self._t = [], None

    def _now(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        self._t = self._now()

    def on_step_end(self, args, state, control, **kw):
        self.seconds.append(self._now() - self._t)


def time_training(trainer, steps: int) -> dict:
    """Train ``trainer`` (its ``max_steps``): the median step after the first (a warm-up: allocations,
    kernel choice), tokens per step as trl counts them (``num_tokens``: SFT's prompt and completion;
    DPO's prompt with each of the two completions), tokens/s, the peak memory."""
    timer = StepTimes()
    trainer.add_callback(timer)
    with PeakMemory() as mem:
        trainer.train()
    measured = timer.seconds[1:] or timer.seconds
    median = statistics.median(measured)
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history) / len(timer.seconds)
    return {"steps": len(timer.seconds), "steps_timed": len(measured), "seconds_per_step": median,
            "step_seconds": timer.seconds, "tokens_per_step": tokens, "tokens_per_s": tokens / median,
            "peak_memory_mb": mem.mb}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "sprec" / "MovieLens"))
    p.add_argument("--shape", default="1b", choices=["1b", "tiny"])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per stage (the first is a warm-up)")
    p.add_argument("--gen-rows", type=int, default=64, help="prompts generated for (the eval batch size at a time)")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per prompt (the eval's max_new_tokens)")
    p.add_argument("--nf4", default="auto", choices=["auto", "yes", "no"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cuda_path.json"))
    args = p.parse_args(argv)

    cfg = run_config("paper", dataset=args.dataset, method="sprec")
    ds = read_sprec_folder(args.dataset)
    tokenizer = models.train_tokenizer(ds, run_config("tiny", dataset=args.dataset, method="sft").model.vocab_size)
    device = models.device()
    rng = np.random.default_rng(0)
    sft_cfg = dataclasses.replace(cfg.sprec.sft, max_steps=args.steps, logging_steps=max(args.steps, 1))
    dpo_cfg = dataclasses.replace(cfg.sprec.dpo, max_steps=args.steps, logging_steps=max(args.steps, 1))
    rows = sample_rows(ds.train, sft_cfg.batch_size * sft_cfg.grad_accum * args.steps, rng)
    sft_data = sft_rows(rows, ds)
    pair_rows = sample_rows(ds.train, dpo_cfg.batch_size * dpo_cfg.grad_accum * args.steps, rng)
    pairs, _ = preference_rows(pair_rows, negatives_for(pair_rows, ds, SPRecConfig(negatives="random"), rng), ds, 1)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "shape": args.shape, "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": "python benchmarks/cuda_path.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "stage_configs": {"sft": dataclasses.asdict(sft_cfg), "dpo": dataclasses.asdict(dpo_cfg)},
           "parts": {}}
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    out["training_precision"] = "bf16 (trl bf16=True)" if bf16 else "fp32"

    def with_lora(base):
        return models.add_lora(base, cfg.model).to(device)

    with tempfile.TemporaryDirectory() as tmp:
        base, dims = random_model(args.shape, tokenizer)
        out["dims"] = dims
        out["parameters"] = sum(t.numel() for t in base.parameters())
        model = with_lora(base)
        trainer = trainers.make_sft_trainer(model, tokenizer, sft_data, sft_cfg, Path(tmp) / "sft", 0)
        out["parts"]["sft"] = time_training(trainer, args.steps)
        trainer = trainers.make_dpo_trainer(model, tokenizer, pairs, dpo_cfg, Path(tmp) / "dpo", 0)
        out["parts"]["dpo"] = time_training(trainer, args.steps)
        # greedy generation, a fixed number of new tokens (a random model does not stop by itself)
        gen_prompts = [prompt(s, ds.catalogue, ds.wording) for s in ds.test[: args.gen_rows]]
        model.eval()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            decoding.generate_free(model, tokenizer, gen_prompts, max_new_tokens=args.gen_tokens,
                                   batch_size=cfg.eval.batch_size, stop_at_quote=False, bucket=True, progress=False)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        new = len(gen_prompts) * args.gen_tokens
        out["parts"]["generation"] = {"prompts": len(gen_prompts), "new_tokens": new, "seconds": seconds,
                                      "new_tokens_per_s": new / seconds, "peak_memory_mb": mem.mb}
        del model, trainer
        want_nf4 = args.nf4 == "yes" or (args.nf4 == "auto" and torch.cuda.is_available())
        if want_nf4:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as e:
                out["parts"]["sft_nf4"] = {"skipped": f"bitsandbytes does not import: {e}"}
            else:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                model = models.add_lora(nf4_copy(base, Path(tmp) / "base"), cfg.model)
                trainer = trainers.make_sft_trainer(model, tokenizer, sft_data, sft_cfg, Path(tmp) / "sft-nf4", 0)
                out["parts"]["sft_nf4"] = time_training(trainer, args.steps)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['gpu'] or out['device']}, {args.shape} shape ({out['parameters'] / 1e6:.0f}M parameters), "
          f"{out['training_precision']}:")
    for name, part in out["parts"].items():
        if "skipped" in part:
            print(f"  {name:10s} skipped: {part['skipped']}")
        elif "tokens_per_s" in part:
            print(f"  {name:10s} {part['seconds_per_step']:.3f} s/step, {part['tokens_per_s']:,.0f} tokens/s, "
                  f"peak {part['peak_memory_mb']:,.0f} MB")
        else:
            print(f"  {name:10s} {part['new_tokens_per_s']:,.1f} new tokens/s ({part['prompts']} prompts), "
                  f"peak {part['peak_memory_mb']:,.0f} MB")
    print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    main()
