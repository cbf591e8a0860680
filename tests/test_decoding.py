"""Free and constrained decoding on a tiny model (random, and overfit to three prompts)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sprec_lib import decoding as D
from sprec_lib.config import ModelConfig
from sprec_lib.data import Catalogue, Dataset
from sprec_lib.data.synthetic import make_synthetic
from sprec_lib.models import build_tiny_model, train_tokenizer
from sprec_lib.prompts import completion, extract_title, prompt

TINY = ModelConfig(profile="tiny", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                   vocab_size=512, max_positions=256, lora=False)
# MovieLens-like titles, so that the BPE learns merges such as ')"' (quote glued to a bracket).
WORDS_A = ["Lost", "Silent", "Golden", "Broken", "Hidden", "Last"]
WORDS_B = ["Garden", "River", "City", "Dream", "Voyage"]
TITLES = tuple(f"The {a} {b} ({1950 + 5 * i + j})" for i, a in enumerate(WORDS_A) for j, b in enumerate(WORDS_B))
TARGETS = [4, 17, 25]  # what the overfit model must answer to the first three training prompts


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def ds():
    base = make_synthetic(n_items=len(TITLES), sizes=(64, 8, 8), seed=0)
    return Dataset("movies", Catalogue(TITLES, base.catalogue.genres), base.splits, base.genres, base.wording)


@pytest.fixture(scope="module")
def tok(ds):
    return train_tokenizer(ds, 512)


@pytest.fixture(scope="module")
def prompts(ds):
    return [prompt(s, ds.catalogue, ds.wording) for s in ds.train[:12]]


@pytest.fixture(scope="module")
def trie(ds, tok):
    return D.TitleTrie.from_catalogue(ds.catalogue, tok, ds.wording)


@pytest.fixture(scope="module")
def random_model(tok):
    return build_tiny_model(TINY, tok, seed=0).eval()


@pytest.fixture(scope="module")
def trained(ds, tok, prompts):
    """The tiny model overfit so that prompt i answers ``"<TITLES[TARGETS[i]]>"`` + newline + EOS."""
    model = build_tiny_model(TINY, tok, seed=0)
    ps = prompts[: len(TARGETS)]
    texts = [p + completion(TITLES[t], ds.wording) + tok.eos_token for p, t in zip(ps, TARGETS)]
    enc = tok(texts, return_tensors="pt", padding=True)  # the tokenizer pads on the right
    labels = enc.input_ids.clone()
    labels[enc.attention_mask == 0] = -100
    for row, p in enumerate(ps):  # loss on the completion only
        labels[row, : len(tok(p).input_ids)] = -100
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ps


# --- pieces ---------------------------------------------------------------------------------------


def test_cut_at_closing_quote():
    assert D.cut_at_closing_quote('"A (1995)", "B"\n') == '"A (1995)"'
    assert D.cut_at_closing_quote('  "A"') == '  "A"'
    assert D.cut_at_closing_quote('"A unfinished') == '"A unfinished'
    assert D.cut_at_closing_quote("no quote") == "no quote"


def test_quote_stop_per_row_on_hand_made_tokens(tok):
    merged = tok.convert_tokens_to_ids(')"')
    assert merged != tok.unk_token_id and tok.decode([merged]) == ')"', "the BPE should merge ')' and '\"'"
    prefix = tok('"x" "y" ### Response:\n', add_special_tokens=False).input_ids  # quotes in the prompt do not count
    body = tok('"The Lost City (1952', add_special_tokens=False).input_ids
    pad = tok.pad_token_id
    rows = [
        prefix + body + [merged],  # closing quote inside the ')"' token
        prefix + body + [pad],  # one quote so far
        prefix + [pad],  # nothing generated
        prefix + tok('"A"', add_special_tokens=False).input_ids,  # closing quote as a token of its own
    ]
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    stop = D.QuoteStop(tok, prompt_len=len(prefix))
    done = stop(ids, None)
    assert done.dtype == torch.bool and done.shape == (4,)
    assert done.tolist() == [True, False, False, True]


def test_trie_against_brute_force(ds, tok, trie):
    seqs = [tok(completion(t, ds.wording), add_special_tokens=False).input_ids + [tok.eos_token_id] for t in ds.catalogue.titles]
    assert len(trie) == len(set(map(tuple, seqs))) == len(TITLES)
    assert trie.max_depth == max(map(len, seqs))
    prefixes = {tuple(s[:n]) for s in seqs for n in range(len(s) + 1)}
    for p in prefixes:
        expected = {s[len(p)] for s in seqs if tuple(s[: len(p)]) == p and len(s) > len(p)}
        assert set(trie.children(p)) == expected
        assert trie.is_terminal(p) == (list(p) in seqs)
        assert set(trie.allowed(p)) == (expected or {tok.eos_token_id})
    for i, s in enumerate(seqs):
        assert trie.item_of(s + [tok.pad_token_id] * 3) == i  # padding after the end is ignored
        assert trie.item_of(s[:-1]) is None  # not finished
    assert trie.children([tok.pad_token_id]) == [] and trie.item_of([tok.pad_token_id]) is None


def test_trie_duplicates_keep_first_id(ds, tok):
    titles = ("Alpha (1990)", "Beta (1991)", "Alpha (1990)", "Gamma")
    cat = Catalogue(titles, ((),) * len(titles))
    trie = D.TitleTrie.from_catalogue(cat, tok, ds.wording)
    assert len(trie) == 3
    alpha = tok(completion("Alpha (1990)", ds.wording), add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert trie.item_of(alpha) == 0
    hand = D.TitleTrie([[5, 6, 7], [5, 6], [5, 6, 7]], [10, 11, 12])
    assert hand.item_of([5, 6, 7]) == 11  # [5, 6] ends first along the way
    assert hand.node([5, 6, 7]).item == 10 and len(hand) == 2
    with pytest.raises(ValueError):
        D.TitleTrie([[]])


def test_prompt_then_completion_tokenises_additively(ds, tok):
    """The trie's assumption: prompt tokens + completion tokens == tokens of prompt + completion."""
    ps = [prompt(s, ds.catalogue, ds.wording) for s in ds.train[:40]]
    extra = ['Toy Story (1995)', 'Shawshank Redemption, The (1994)', '"Quoted" title', '  spaced ', 'Amélie (2001)']
    for p, t in itertools.product(ps, list(TITLES[::3]) + extra):
        assert D.tokenization_is_additive(tok, p, completion(t, ds.wording)), (p[-30:], t)


# --- the random model: structure ------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 10])
def test_constrained_beams_are_distinct_catalogue_items(random_model, tok, prompts, trie, k):
    side = tok.padding_side
    out = D.constrained_beam_search(random_model, tok, prompts[:6], trie, num_beams=k, batch_size=4, progress=False)
    assert tok.padding_side == side
    assert len(out) == 6
    for ids in out:
        assert len(ids) == k and len(set(ids)) == k
        assert all(0 <= i < len(TITLES) for i in ids)


def test_constrained_more_beams_than_titles(ds, random_model, tok, prompts):
    cat = Catalogue(TITLES[:3], ((),) * 3)
    small = D.TitleTrie.from_catalogue(cat, tok, ds.wording)
    out = D.constrained_beam_search(random_model, tok, prompts[:3], small, num_beams=5, batch_size=2, progress=False)
    for ids in out:
        assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids) and set(ids) <= {0, 1, 2}


def test_constrained_greedy_is_first_beam_and_real(random_model, tok, prompts, trie):
    greedy = D.constrained_greedy(random_model, tok, prompts[:6], trie, batch_size=4, progress=False)
    assert all(g is not None and 0 <= g < len(TITLES) for g in greedy)
    beam1 = D.constrained_beam_search(random_model, tok, prompts[:6], trie, num_beams=1, progress=False)
    assert greedy == [b[0] for b in beam1]


def test_generate_free_random_model_shapes(random_model, tok, prompts):
    side = tok.padding_side
    random_model.train()
    out = D.generate_free(random_model, tok, prompts[:5], max_new_tokens=6, batch_size=2, stop_at_quote=False, progress=False)
    assert random_model.training  # the mode is restored (decoding itself ran in eval mode)
    random_model.eval()
    assert tok.padding_side == side
    assert len(out) == 5 and all(isinstance(t, str) for t in out)
    assert D.generate_free(random_model, tok, [], progress=False) == []


# --- the overfit model: correctness ---------------------------------------------------------------


def test_overfit_generate_free_stops_at_closing_quote(ds, trained, tok):
    model, ps = trained
    out = D.generate_free(model, tok, ps, max_new_tokens=32, batch_size=3, stop_at_quote=True, progress=False)
    assert out == [f'"{TITLES[t]}"' for t in TARGETS]
    assert [extract_title(o) for o in out] == [TITLES[t] for t in TARGETS]
    # Without the stop: the whole completion (newline, then EOS, which is skipped).
    full = D.generate_free(model, tok, ps, max_new_tokens=32, batch_size=3, stop_at_quote=False, progress=False)
    assert full == [completion(TITLES[t], ds.wording) for t in TARGETS]


def test_overfit_constrained_ranks_target_first(trained, tok, trie):
    model, ps = trained
    out = D.constrained_beam_search(model, tok, ps, trie, num_beams=5, batch_size=3, progress=False)
    assert [o[0] for o in out] == TARGETS and all(len(set(o)) == 5 for o in out)
    assert D.constrained_greedy(model, tok, ps, trie, progress=False) == TARGETS


def test_overfit_beams_first_is_target(trained, tok):
    model, ps = trained
    beams = D.generate_beams(model, tok, ps, num_beams=3, max_new_tokens=16, batch_size=2, progress=False)
    assert [b[0] for b in beams] == [f'"{TITLES[t]}"' for t in TARGETS] and all(len(b) == 3 for b in beams)


def test_batched_equals_one_by_one_in_input_order(trained, tok, prompts, trie):
    """Left padding and length bucketing change nothing: batches of mixed lengths, shuffled order."""
    model, _ = trained
    ps = [prompts[i] for i in (5, 0, 9, 1, 8, 2, 11, 3)]
    assert len({len(tok(p).input_ids) for p in ps}) > 3  # the batches do need padding
    one = [D.generate_free(model, tok, [p], progress=False)[0] for p in ps]
    assert D.generate_free(model, tok, ps, batch_size=3, progress=False) == one
    assert D.generate_free(model, tok, ps, batch_size=8, progress=False) == one
    one_c = [D.constrained_beam_search(model, tok, [p], trie, num_beams=3, progress=False)[0] for p in ps]
    assert D.constrained_beam_search(model, tok, ps, trie, num_beams=3, batch_size=4, progress=False) == one_c


# --- resuming a decode cut short (DecodeJournal) --------------------------------------------------


class _Interrupted(Exception):
    pass


class _CountingModel:
    """``model`` whose ``generate`` counts its calls and raises once ``fail_after`` of them are done
    (a decode killed between two batches); every other attribute is the model's."""

    def __init__(self, model, fail_after: int | None = None):
        self.model, self.fail_after, self.calls = model, fail_after, 0

    def generate(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise _Interrupted
        self.calls += 1
        return self.model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("kind", ["free", "beams", "constrained"])
def test_a_decode_cut_short_resumes_at_its_first_unfinished_batch(random_model, tok, prompts, trie, tmp_path, kind):
    """12 prompts in batches of 3 (4 batches); the decode is killed after 2 batches and run again
    with a journal on the same file: the second run calls generate for the 2 batches left only, and
    its output is the uninterrupted decode's (run without a journal)."""
    decode = {
        "free": lambda m, **kw: D.generate_free(m, tok, prompts, max_new_tokens=6, batch_size=3, stop_at_quote=False,
                                                 progress=False, **kw),
        "beams": lambda m, **kw: D.generate_beams(m, tok, prompts, num_beams=2, max_new_tokens=5, batch_size=3,
                                                  stop_at_quote=False, progress=False, **kw),
        "constrained": lambda m, **kw: D.constrained_beam_search(m, tok, prompts, trie, num_beams=2, batch_size=3,
                                                                 progress=False, **kw),
    }[kind]
    whole = decode(random_model)
    path = tmp_path / "partial" / f"{kind}.jsonl"
    cut = _CountingModel(random_model, fail_after=2)
    with pytest.raises(_Interrupted):
        decode(cut, journal=D.DecodeJournal(path, "model-a"))
    assert len(path.read_text().splitlines()) == 1 + 2  # the key, then the two finished batches
    heard = []
    again = _CountingModel(random_model)
    journal = D.DecodeJournal(path, "model-a", log=heard.append)
    assert decode(again, journal=journal) == whole
    assert again.calls == 2 and journal.resumed == 2 and len(heard) == 1
    journal.discard()
    assert not path.exists() and not path.parent.exists()  # the partial/ folder went with its last file


def test_a_journal_is_read_back_only_for_the_same_model_and_settings(random_model, tok, prompts, tmp_path):
    path = tmp_path / "eval.jsonl"
    free = lambda m, journal, n=6: D.generate_free(m, tok, prompts, max_new_tokens=n, batch_size=4, stop_at_quote=False,
                                                    progress=False, journal=journal)
    first = _CountingModel(random_model)
    free(first, D.DecodeJournal(path, "model-a"))
    assert first.calls == 3
    for identity, n in [("model-b", 6), ("model-a", 5)]:  # another model's checksums; other settings
        other = _CountingModel(random_model)
        free(other, D.DecodeJournal(path, identity), n)
        assert other.calls == 3  # decoded afresh: nothing read back
    same = _CountingModel(random_model)
    free(same, D.DecodeJournal(path, "model-a"), 5)  # the file now holds the last decode: model-a, 5 tokens
    assert same.calls == 0


def test_a_line_torn_by_a_kill_is_dropped(random_model, tok, prompts, tmp_path):
    path = tmp_path / "eval.jsonl"
    free = lambda m, journal: D.generate_free(m, tok, prompts, max_new_tokens=6, batch_size=4, stop_at_quote=False,
                                              progress=False, journal=journal)
    whole = free(random_model, None)
    with pytest.raises(_Interrupted):
        free(_CountingModel(random_model, fail_after=2), D.DecodeJournal(path, "m"))
    with open(path, "a") as f:
        f.write('{"rows": [0, 1')  # the third batch's line, cut short
    again = _CountingModel(random_model)
    assert free(again, D.DecodeJournal(path, "m")) == whole
    assert again.calls == 1
    assert all(line.endswith("}") for line in path.read_text().splitlines())  # rewritten whole
