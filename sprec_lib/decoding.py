"""Decoding a recommendation from the model: free greedy generation, and title-constrained beam search.

Free decoding (the paper). The public code (``eval/inference.py``, ``train/data_generate.py``)
decodes greedily with left padding, ``max_new_tokens`` 32 for evaluation and 128 for self-play
negatives, and parses the first quoted title out of the text afterwards. :func:`generate_free`
does the same, but by default stops a sequence at the title's closing quote (``stop_at_quote``):
the parsed title is identical, and the tokens after it, which were thrown away anyway, are not
computed. Prompts are sorted by length into batches (the public code batches in file order), so
less padding is computed; results come back in the input order. Greedy decoding of a row does not
depend on the other rows of its batch up to floating-point noise (tested).

Constrained decoding (D3, "Decoding Matters", which SPRec reports as an alternative evaluation):
beam search in which every step may only extend the generated prefix along a prefix trie over the
token ids of every catalogue title's completion (``"<title>"`` + the wording's tail + EOS), with
``length_penalty=0`` so that beams are ranked by their summed log-probability. Every beam is a real
item; the top-K items are the K beams in order. transformers 5.24 still supports
``prefix_allowed_tokens_fn`` with beam search (it becomes a ``PrefixConstrainedLogitsProcessor``,
which masks the log-softmax scores to -inf outside the allowed set), so it is used as is.

Tokenisation assumption of the trie. The trie holds ``tokenizer(completion, add_special_tokens=
False)``, but the model sees the completion after the prompt. The two agree when
``tokenizer(prompt + completion) == tokenizer(prompt) + tokenizer(completion, no special tokens)``,
which holds when the prompt ends in a pre-tokenizer split point: our prompts end in ``"\\n"``, and
both the tiny byte-level BPE (GPT-2 split) and Llama 3's split keep ``"\\n"`` apart from the ``"``
that opens the completion. :func:`tokenization_is_additive` checks it; the tests check it on many
prompts and titles with the tiny tokenizer, and :func:`constrained_beam_search` warns if the first
prompt of a call breaks it.

Resuming a long decode (:class:`DecodeJournal`). Every function here takes an optional journal:
each finished batch's generated ids go to a file as the batch ends, and a decode run again with
the same journal skips the batches on file. On a CPU the ``small`` profile's test-split evaluation
decodes for 13-20 minutes, which a stopped lane or a machine taken back used to lose whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from .prompts import completion

__all__ = [
    "DecodeJournal",
    "QuoteStop",
    "TitleTrie",
    "constrained_beam_search",
    "constrained_greedy",
    "cut_at_closing_quote",
    "generate_beams",
    "generate_free",
    "tokenization_is_additive",
]


# --- helpers -------------------------------------------------------------------------------------


def cut_at_closing_quote(text: str) -> str:
    """``text`` up to and including its second ``"`` (the title's closing quote); unchanged if none."""
    start = text.find('"')
    end = text.find('"', start + 1) if start >= 0 else -1
    return text if end < 0 else text[: end + 1]


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextmanager
def _eval_mode(model):
    """``model.eval()`` for decoding (no dropout); the previous train/eval mode is restored afterwards,
    so that decoding inside a training loop (self-play) leaves the model as it found it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def _left_padding(tokenizer):
    """Left padding for batched generation; the tokenizer's padding side is restored afterwards."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _length_batches(tokenizer, prompts: Sequence[str], batch_size: int, bucket: bool = True) -> list[list[int]]:
    """Indices of ``prompts`` in batches of similar token length (longest first, so that running out
    of memory happens at once); ties keep the input order. ``bucket=False``: input order, as the
    paper's code batches."""
    if not bucket:
        return [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _encode(tokenizer, texts: list[str], device):
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


# Generation settings that turn off sampling whatever the model's generation_config says (Llama 3.2
# Instruct ships temperature 0.6 / top_p 0.9, which greedy decoding would only warn about).
_NO_SAMPLING = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class DecodeJournal:
    """The finished batches of one decode, kept in a file as each batch ends, so that a decode cut
    short (a stopped lane, a killed process) resumes at its first unfinished batch.

    ``identity`` names the model (the pipeline passes the checksums of its files, from the stage's
    ``DONE``). The file's first line is the decode's key: a hash of ``identity``, the prompts, the
    batching and the decoding settings; a file with another key (another model, other prompts,
    other settings) is started afresh, so a batch is only ever read back into the decode that made
    it. A resumed decode batches the prompts as before and runs only the batches not on file, so its
    output is an uninterrupted decode's: the batches run are the same batches, and greedy and beam
    decoding are deterministic. A last line cut short by a kill is dropped. :meth:`discard` removes
    the file once the decode's result is saved elsewhere. ``log`` hears of a decode resumed."""

    def __init__(self, path: str | Path, identity: str, log=lambda message: None):
        self.path, self.identity, self.log = Path(path), identity, log
        self.done: dict[tuple[int, ...], list] = {}
        self.resumed = 0  # batches read back by the last start()

    def start(self, settings: dict) -> None:
        """Read back the batches of the decode ``settings`` describes, if the file holds that
        decode; then rewrite the file as its header and those batches (a torn last line dropped)."""
        key = hashlib.sha256(json.dumps({"identity": self.identity, **settings}, sort_keys=True,
                                        default=repr).encode()).hexdigest()
        self.done = {}
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
        if lines and _json_or_none(lines[0]) == {"key": key}:
            for line in lines[1:]:
                entry = _json_or_none(line)
                if not isinstance(entry, dict) or "rows" not in entry or "ids" not in entry:
                    break  # a line cut short by a kill (the last one written)
                self.done[tuple(entry["rows"])] = entry["ids"]
        self.resumed = len(self.done)
        if self.resumed:
            self.log(f"resuming the decode: {self.resumed} finished batch(es) read back from {self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(x) + "\n" for x in [{"key": key}, *(
            {"rows": list(rows), "ids": ids} for rows, ids in self.done.items())]), encoding="utf-8")
        os.replace(tmp, self.path)

    def get(self, rows: list[int]) -> list | None:
        return self.done.get(tuple(rows))

    def add(self, rows: list[int], ids: list) -> None:
        """Append one finished batch (its rows' indices and generated ids), flushed to disk."""
        self.done[tuple(rows)] = ids
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"rows": list(map(int, rows)), "ids": ids}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def discard(self) -> None:
        """Remove the file (and its folder, once empty)."""
        self.path.unlink(missing_ok=True)
        self.done = {}
        try:
            self.path.parent.rmdir()
        except OSError:  # other decodes' files are there, or it is gone already
            pass


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def _generate_batches(model, tokenizer, prompts: Sequence[str], batch_size: int, desc: str, progress: bool,
                      bucket: bool = True, per_batch=lambda prompt_len: {}, journal: DecodeJournal | None = None,
                      settings: dict | None = None, **generate_kwargs):
    """The one batched-generation loop: yields ``(indices, generated ids)`` per batch of prompts.

    Prompts are batched by length (:func:`_length_batches`), left-padded, and decoded in eval mode
    under ``torch.no_grad`` (not ``inference_mode``: self-play decodes inside a training loop, and
    inference tensors cached by a module would break backward later), sampling off. The generated
    ids are the part after the (padded) prompt. ``per_batch(prompt_len)`` gives the generate
    arguments that depend on the batch's prompt length (stopping criteria, trie constraints).

    ``journal``: batches already on file are yielded from it, and each batch decoded here is added
    to it; ``settings`` are the caller's decoding choices that ``generate_kwargs`` do not show
    (they are part of the journal's key, with the prompts, the batching and ``generate_kwargs``)."""
    if not prompts:
        return
    device = _model_device(model)
    batches = _length_batches(tokenizer, prompts, batch_size, bucket)
    if journal is not None:
        journal.start({"desc": desc, "prompts": hashlib.sha256("\x00".join(prompts).encode()).hexdigest(),
                       "rows": len(prompts), "batch_size": batch_size, "bucket": bucket, "generate": generate_kwargs,
                       "settings": settings or {}})
    with torch.no_grad(), _eval_mode(model), _left_padding(tokenizer):
        for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            if journal is not None and (kept := journal.get(idx)) is not None:
                yield idx, torch.tensor(kept, dtype=torch.long)
                continue
            enc = _encode(tokenizer, [prompts[i] for i in idx], device)
            prompt_len = enc["input_ids"].shape[1]
            seqs = model.generate(**enc, pad_token_id=_pad_id(tokenizer), **generate_kwargs, **per_batch(prompt_len),
                                  **_NO_SAMPLING)
            generated = seqs[:, prompt_len:]
            if journal is not None:
                journal.add(idx, generated.tolist())
            yield idx, generated


# --- free decoding ------------------------------------------------------------------------------


class QuoteStop(StoppingCriteria):
    """Stop each sequence once its generated text holds ``n_quotes`` double quotes (the title's closing one).

    Works per row: returns a bool tensor with one entry per row of ``input_ids`` (transformers 5's
    StoppingCriteria contract), for greedy rows and beam-search beams alike. It decodes the
    generated part (``input_ids[:, prompt_len:]``) rather than looking for a quote token, because a
    BPE token can merge the quote with its neighbours (``)"`` is one token in the tiny tokenizer).
    """

    def __init__(self, tokenizer, prompt_len: int, n_quotes: int = 2):
        self.tokenizer, self.prompt_len, self.n_quotes = tokenizer, prompt_len, n_quotes

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([t.count('"') >= self.n_quotes for t in texts], dtype=torch.bool, device=input_ids.device)


def generate_free(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    stop_at_quote: bool = True,
    progress: bool = True,
    bucket: bool = True,
    journal: DecodeJournal | None = None,
) -> list[str]:
    """Greedy continuation of each prompt (text only, special tokens skipped), in the input order.

    ``bucket``: batch prompts of similar length together (less padding); ``False`` batches them in
    input order, as the paper's code does (the benchmark's paper-code-style variant).

    ``stop_at_quote``: stop a row at the title's closing quote and cut the text right after it (the
    token holding the quote may carry more characters). Without it, every row runs to EOS or
    ``max_new_tokens`` as the paper's code does (32 in evaluation, 128 for self-play negatives).
    The model decodes in eval mode under ``torch.no_grad`` (not ``inference_mode``: self-play
    decodes inside a training loop, and inference tensors cached by a module would break backward
    later); its train/eval mode is restored afterwards. ``journal``: resume a decode cut short
    (:class:`DecodeJournal`).
    """
    out: list[str] = [""] * len(prompts)
    batches = _generate_batches(model, tokenizer, prompts, batch_size, "generate", progress, bucket,
                                per_batch=_quote_stop(tokenizer, stop_at_quote), journal=journal,
                                settings={"stop_at_quote": stop_at_quote}, max_new_tokens=max_new_tokens, num_beams=1)
    for idx, generated in batches:
        for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            out[i] = cut_at_closing_quote(text) if stop_at_quote else text
    return out


def generate_beams(
    model,
    tokenizer,
    prompts: Sequence[str],
    num_beams: int,
    max_new_tokens: int = 32,
    batch_size: int = 4,
    stop_at_quote: bool = True,
    length_penalty: float = 0.0,
    progress: bool = True,
    journal: DecodeJournal | None = None,
) -> list[list[str]]:
    """Unconstrained beam search: ``num_beams`` continuations per prompt, best first.

    For SPRec with N > 1 negatives (2N beams, the N most probable distinct titles kept by the
    caller). ``length_penalty=0`` ranks beams by summed log-probability ("most probable");
    transformers' default (1.0) would divide by length. A beam stops at its title's closing quote
    when ``stop_at_quote``, and its text is cut there. ``journal``: as :func:`generate_free`.
    """
    out: list[list[str]] = [[] for _ in prompts]
    batches = _generate_batches(model, tokenizer, prompts, batch_size, "beam search", progress,
                                per_batch=_quote_stop(tokenizer, stop_at_quote), journal=journal,
                                settings={"stop_at_quote": stop_at_quote}, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, num_return_sequences=num_beams, length_penalty=length_penalty)
    for idx, generated in batches:
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[i] = [cut_at_closing_quote(t) if stop_at_quote else t for t in texts[j * num_beams : (j + 1) * num_beams]]
    return out


def _quote_stop(tokenizer, stop_at_quote: bool):
    """``per_batch`` arguments of :func:`_generate_batches`: stop each row at its closing quote."""
    if not stop_at_quote:
        return lambda prompt_len: {}
    return lambda prompt_len: {"stopping_criteria": StoppingCriteriaList([QuoteStop(tokenizer, prompt_len)])}


# --- constrained decoding -----------------------------------------------------------------------


class _Node:
    __slots__ = ("children", "item")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.item: int | None = None  # the item id whose token sequence ends here


class TitleTrie:
    """A prefix trie over token-id sequences, each ending at an item id.

    Built by :meth:`from_catalogue` over every title's completion plus EOS. A sequence added twice
    (a duplicate title, or two titles that tokenise identically) keeps its first item id, as the
    paper's title -> id map does.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], item_ids: Sequence[int] | None = None, eos_id: int | None = None):
        self.root = _Node()
        self.eos_id = eos_id
        self.max_depth = 0
        self.n_sequences = 0
        ids = range(len(sequences)) if item_ids is None else item_ids
        for seq, item in zip(sequences, ids, strict=True):
            if len(seq) == 0:
                raise ValueError("TitleTrie: an empty token sequence")
            node = self.root
            for tok in seq:
                node = node.children.setdefault(int(tok), _Node())
            if node.item is None:
                node.item = int(item)
                self.n_sequences += 1
            self.max_depth = max(self.max_depth, len(seq))
        self._allowed_cache: dict[tuple[int, ...], list[int]] = {}
        self.example: str | None = None  # one completion text, for the tokenisation check

    @classmethod
    def from_catalogue(cls, catalogue, tokenizer, wording) -> "TitleTrie":
        """The trie of ``completion(title, wording)`` token ids (no special tokens) + EOS, per item id."""
        texts = [completion(t, wording) for t in catalogue.titles]
        eos = tokenizer.eos_token_id
        seqs = [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        trie = cls(seqs, range(len(seqs)), eos_id=eos)
        trie.example = texts[0] if texts else None
        return trie

    def __len__(self) -> int:
        """The number of distinct sequences (items reachable by decoding)."""
        return self.n_sequences

    def node(self, prefix: Sequence[int]) -> _Node | None:
        node = self.root
        for tok in prefix:
            node = node.children.get(int(tok))
            if node is None:
                return None
        return node

    def children(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (empty if ``prefix`` is not in the trie or ends a sequence)."""
        node = self.node(prefix)
        return [] if node is None else list(node.children)

    def is_terminal(self, prefix: Sequence[int]) -> bool:
        node = self.node(prefix)
        return node is not None and node.item is not None

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """:meth:`children`, or ``[eos_id]`` where there are none, so that a dead beam (one that
        took a -inf token because fewer continuations than beams existed) simply ends; it is
        dropped by :meth:`item_of`."""
        key = tuple(int(t) for t in prefix)
        hit = self._allowed_cache.get(key)
        if hit is None:
            hit = self.children(key) or ([self.eos_id] if self.eos_id is not None else [])
            self._allowed_cache[key] = hit
        return hit

    def item_of(self, generated: Sequence[int]) -> int | None:
        """The item id of the first complete sequence along ``generated`` (padding after it ignored);
        None if ``generated`` leaves the trie or stops before a sequence ends."""
        node = self.root
        for tok in generated:
            node = node.children.get(int(tok))
            if node is None:
                return None
            if node.item is not None:
                return node.item
        return None


def tokenization_is_additive(tokenizer, prompt: str, text: str) -> bool:
    """Whether ``tokenizer(prompt + text)`` is ``tokenizer(prompt)`` followed by ``tokenizer(text)``
    without special tokens (the assumption under which the trie matches what the model sees)."""
    whole = tokenizer(prompt + text, add_special_tokens=True)["input_ids"]
    parts = tokenizer(prompt, add_special_tokens=True)["input_ids"] + tokenizer(text, add_special_tokens=False)["input_ids"]
    return whole == parts


def constrained_beam_search(
    model,
    tokenizer,
    prompts: Sequence[str],
    trie: TitleTrie,
    num_beams: int,
    batch_size: int = 8,
    length_penalty: float = 0.0,
    progress: bool = True,
    journal: DecodeJournal | None = None,
) -> list[list[int]]:
    """Per prompt, the item ids of the ``num_beams`` beams of trie-constrained beam search, best first.

    As D3: HF beam search with ``prefix_allowed_tokens_fn`` (each step restricted to the trie's
    children of the generated prefix), ``length_penalty=0``, ``num_return_sequences=num_beams``,
    up to the trie's depth in new tokens. Duplicate ids are dropped (keeping the first); a beam
    that is not a complete title (possible only when fewer titles than beams exist) is dropped, so
    a list may be shorter than ``num_beams``. ``num_beams=1`` is greedy decoding under the trie.
    ``journal``: as :func:`generate_free`.
    """
    out: list[list[int]] = [[] for _ in prompts]
    if not prompts:
        return out
    if trie.eos_id is None:
        raise ValueError("constrained_beam_search: the trie has no eos_id (build it with TitleTrie.from_catalogue)")
    _warn_if_not_additive(tokenizer, prompts[0], trie)

    def constrain(prompt_len: int) -> dict:
        return {"prefix_allowed_tokens_fn": lambda batch_id, sent: trie.allowed(sent[prompt_len:].tolist())}

    beam_kwargs = {"num_return_sequences": num_beams, "length_penalty": length_penalty} if num_beams > 1 else {}
    batches = _generate_batches(model, tokenizer, prompts, batch_size, "constrained beam search", progress,
                                per_batch=constrain, journal=journal, settings={"trie": [len(trie), trie.max_depth]},
                                max_new_tokens=trie.max_depth, num_beams=num_beams,
                                eos_token_id=trie.eos_id, **beam_kwargs)
    for idx, generated in batches:
        gen = generated.tolist()
        for j, i in enumerate(idx):
            ranked: list[int] = []
            for g in gen[j * num_beams : (j + 1) * num_beams]:
                item = trie.item_of(g)
                if item is not None and item not in ranked:
                    ranked.append(item)
            out[i] = ranked
    return out


def constrained_greedy(model, tokenizer, prompts: Sequence[str], trie: TitleTrie, batch_size: int = 16,
                       progress: bool = True) -> list[int | None]:
    """One catalogue item per prompt: greedy decoding under the trie (self-play negatives that are
    always real items). None only if decoding failed to complete a title (not expected)."""
    beams = constrained_beam_search(model, tokenizer, prompts, trie, num_beams=1, batch_size=batch_size, progress=progress)
    return [b[0] if b else None for b in beams]


def _warn_if_not_additive(tokenizer, prompt: str, trie: TitleTrie) -> None:
    if trie.example is not None and not tokenization_is_additive(tokenizer, prompt, trie.example):
        warnings.warn(
            "constrained decoding: the tokenizer splits prompt+completion differently from prompt and "
            "completion apart, so the title trie does not match what the model sees after the prompt",
            stacklevel=3,
        )
