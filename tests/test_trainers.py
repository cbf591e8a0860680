"""Tests for sprec_lib.trainers on a really tiny Llama (64 wide, 2 layers, 512 tokens): a few steps each.

The log-probs that check the trainers are computed independently of trl (a plain forward, full logits,
``log_softmax``) on text tokenized here, unless a test is about a collated batch itself.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from sprec_lib import losses, models, prompts, trainers
from sprec_lib.config import ModelConfig, StageConfig
from helpers import completion_logp

TINY = ModelConfig(
    profile="tiny",
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    vocab_size=512,
    max_positions=256,
    lora=False,
    lora_targets=("q_proj", "v_proj"),
)
CFG = StageConfig(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, warmup_steps=0, logging_steps=1, max_length=256, beta=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(tok, seed=0, lora=False):
    model = models.build_tiny_model(TINY, tok, seed)
    if lora:
        model = models.add_lora(model, TINY)
        # Stand in for an adapter trained by SFT: a fresh adapter (lora_B = 0) equals the base model
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def title(ds, i):
    return prompts.completion(ds.catalogue.titles[i], ds.wording)


def sft_rows(ds, n=8):
    return [
        {"prompt": prompts.prompt(s, ds.catalogue, ds.wording), "completion": prompts.target_completion(s, ds.catalogue, ds.wording)}
        for s in ds.train[:n]
    ]


def dpo_rows(ds, n=8):
    return [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": title(ds, 3 + i % 4)} for i, r in enumerate(sft_rows(ds, n))]


def sdpo_rows(ds, n=8, k=3):
    return [{**r, "rejected": [title(ds, 3 + (i + j) % 7) for j in range(k)]} for i, r in enumerate(dpo_rows(ds, n))]


@torch.no_grad()
def batch_logps(model, batch) -> torch.Tensor:
    """Sum of completion-token log-probs of each sequence of a collated preference batch (plain forward)."""
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logp * batch["completion_mask"][:, 1:]).sum(1)


def history(out_dir):
    return json.loads((out_dir / "log_history.json").read_text())


def losses_logged(out_dir):
    return [h["loss"] for h in history(out_dir) if "loss" in h]


def check_returned(model):
    assert not model.training
    assert "forward" not in vars(model)  # trl's fused-LM-head patch undone


# -- pretraining and SFT ------------------------------------------------------------------------


def test_pretrain_packs_and_lowers_loss(ds, tok, tmp_path):
    texts = [r["prompt"] + r["completion"] for r in sft_rows(ds, 12)] + [title(ds, i) for i in range(20)]
    cfg = dataclasses.replace(CFG, epochs=6, batch_size=2)
    trainer = trainers.make_pretrain_trainer(tiny_model(tok), tok, texts, cfg, tmp_path, seed=0)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    assert len(lengths) < len(texts) and max(lengths) <= cfg.max_length  # packed into blocks
    packed_docs = sum(len(s) for s in trainer.train_dataset["seq_lengths"])
    assert packed_docs == len(texts)  # bfd: every text whole, none truncated
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainers._train(trainer, tmp_path)
    check_returned(model)
    loss = losses_logged(tmp_path)
    assert loss[-1] < loss[0] - 0.5
    # Texts packed in one row do not see each other: the packed log-likelihood is the sum of the texts'
    ids, starts = batch["input_ids"][0], (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    labels = batch["labels"][0, 1:]  # -100 on each text's first token

    def loglik(**inputs):
        logp = model(**inputs).logits[0, :-1].log_softmax(-1)
        mask = labels != -100
        return logp.gather(-1, ids[1:, None]).squeeze(-1)[mask].sum().item()

    with torch.no_grad():
        packed = loglik(input_ids=ids[None], position_ids=batch["position_ids"])
        leaking = loglik(input_ids=ids[None])  # one causal sequence: later texts see earlier ones
        separate = 0.0
        for a, b in zip(starts, starts[1:] + [len(ids)]):
            logp = model(input_ids=ids[None, a:b]).logits[0, :-1].log_softmax(-1)
            separate += logp.gather(-1, ids[a + 1 : b, None]).sum().item()
    assert len(starts) > 2
    assert packed == pytest.approx(separate, rel=1e-5)
    assert abs(leaking - separate) > 1.0  # (the check can tell)


def test_sft_lowers_training_loss(ds, tok, tmp_path):
    rows = sft_rows(ds, 8)
    model = trainers.sft(tiny_model(tok), tok, rows, dataclasses.replace(CFG, epochs=5), tmp_path, seed=0, eval_rows=rows[:4])
    check_returned(model)
    loss = losses_logged(tmp_path)
    assert len(loss) == 10 and loss[-1] < loss[0] - 0.5
    assert any("eval_loss" in h for h in history(tmp_path))


def test_sft_loss_on_all_vs_completion(ds, tok, tmp_path):
    rows = sft_rows(ds, 2)
    labels = {}
    for loss_on in ("all", "completion"):
        trainer = trainers.make_sft_trainer(tiny_model(tok), tok, rows, dataclasses.replace(CFG, loss_on=loss_on), tmp_path, 0)
        example = trainer.train_dataset[0]
        batch = trainer.data_collator([{"input_ids": example["input_ids"], "labels": example["labels"]}])
        ids, labels[loss_on] = batch["input_ids"][0], batch["labels"][0]
        n_prompt = len(tok(rows[0]["prompt"])["input_ids"])
        assert tok.decode(ids[n_prompt:]) == rows[0]["completion"] + tok.eos_token  # EOS appended
        if loss_on == "all":
            assert torch.equal(labels[loss_on], ids)
        else:
            assert (labels[loss_on][:n_prompt] == -100).all()
            assert torch.equal(labels[loss_on][n_prompt:], ids[n_prompt:])
    assert not torch.equal(labels["all"], labels["completion"])
    with pytest.raises(ValueError, match="loss_on"):
        trainers.make_sft_trainer(tiny_model(tok), tok, rows, dataclasses.replace(CFG, loss_on="prompt"), tmp_path, 0)


def test_same_seed_same_weights(ds, tok, tmp_path):
    def run(kind, seed, sub):
        model = tiny_model(tok)
        cfg = dataclasses.replace(CFG, epochs=2, batch_size=2)
        if kind == "sft":
            return trainers.sft(model, tok, sft_rows(ds, 6), cfg, tmp_path / sub, seed)
        return trainers.dpo(model, tok, dpo_rows(ds, 6), cfg, tmp_path / sub, seed)

    for kind in ("sft", "dpo"):
        a, b, c = run(kind, 0, f"{kind}a").state_dict(), run(kind, 0, f"{kind}b").state_dict(), run(kind, 1, f"{kind}c").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed orders the data differently


# -- DPO and S-DPO ------------------------------------------------------------------------------


def test_dpo_raises_margin(ds, tok, tmp_path):
    rows = dpo_rows(ds, 8)
    model = tiny_model(tok)

    def margin(m):
        return sum(completion_logp(m, tok, r["prompt"], r["chosen"]) - completion_logp(m, tok, r["prompt"], r["rejected"]) for r in rows) / len(rows)

    before = margin(model)
    model = trainers.dpo(model, tok, rows, dataclasses.replace(CFG, epochs=3), tmp_path, seed=0)
    check_returned(model)
    assert margin(model) > before + 1.0
    log = history(tmp_path)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 0
    assert log[-2]["rewards/margins"] > 0


def test_sdpo_collator_layout():
    collator = trainers.DataCollatorForSoftmaxPreference(pad_token_id=0)
    batch = collator(
        [
            {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [[4, 4], [5]]},
            {"prompt_ids": [6], "chosen_ids": [7, 7], "rejected_ids": [[8], [9, 9, 9]]},
        ]
    )
    # block j holds completion j (0: chosen, 1..K: rejected) of every row
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 0],
        [6, 7, 7, 0],
        [1, 2, 4, 4],
        [6, 8, 0, 0],
        [1, 2, 5, 0],
        [6, 9, 9, 9],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 1, 1],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_sdpo_loss_matches_hand_computation(ds, tok, tmp_path):
    k, rows = 3, sdpo_rows(ds, 8, k=3)
    model = tiny_model(tok)
    start = copy.deepcopy(model)
    trainer = trainers.make_sdpo_trainer(model, tok, rows, CFG, tmp_path, seed=0)
    assert trainer.num_negatives == k
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == (k + 1) * 4
    # At the start the policy is the reference: every reward is 0, S = K, loss = log(1 + K)
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(k + 1), abs=1e-6)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(math.log(k + 1), abs=1e-6)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(trainer.state.log_history[1])
    # After training: the trainer's loss on the first 4 rows equals losses.sdpo_loss of log-probs computed here
    policy = trainer.model

    def logps(m, rs):
        chosen = torch.tensor([completion_logp(m, tok, r["prompt"], r["chosen"]) for r in rs])
        rejected = torch.tensor([[completion_logp(m, tok, r["prompt"], c) for c in r["rejected"]] for r in rs])
        return chosen, rejected

    pc, pr = logps(policy, rows[:4])
    rc, rr = logps(start, rows[:4])
    expected = losses.sdpo_loss(pc, pr, rc, rr, CFG.beta).mean().item()
    with torch.no_grad():
        got = trainer.compute_loss(policy, batch).item()
    assert got == pytest.approx(expected, abs=1e-5)
    assert abs(got - math.log(k + 1)) > 1e-3


def test_sdpo_with_one_negative_trains_like_dpo(ds, tok, tmp_path):
    rows = dpo_rows(ds, 8)
    cfg = dataclasses.replace(CFG, epochs=2)
    a = trainers.dpo(tiny_model(tok), tok, rows, cfg, tmp_path / "dpo", 0)
    b = trainers.sdpo(tiny_model(tok), tok, [{**r, "rejected": [r["rejected"]]} for r in rows], cfg, tmp_path / "sdpo", 0)
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=0, atol=1e-6)
    for ha, hb in zip(history(tmp_path / "dpo"), history(tmp_path / "sdpo")):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
            if key in ha:
                assert hb[key] == pytest.approx(ha[key], abs=1e-5)


def test_sdpo_rejects_ragged_negatives(ds, tok, tmp_path):
    rows = sdpo_rows(ds, 4, k=2)
    rows[1]["rejected"] = rows[1]["rejected"][:1]
    with pytest.raises(ValueError, match="rejected"):
        trainers.make_sdpo_trainer(tiny_model(tok), tok, rows, CFG, tmp_path, 0)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "peft"])
@pytest.mark.parametrize("kind", ["dpo", "sdpo"])
def test_reference_is_the_starting_model(ds, tok, tmp_path, kind, lora):
    """The reference log-probs the trainer uses are the starting model's, before and after training."""
    model = tiny_model(tok, lora=lora)
    rows = dpo_rows(ds, 8) if kind == "dpo" else sdpo_rows(ds, 8, k=2)
    make = trainers.make_dpo_trainer if kind == "dpo" else trainers.make_sdpo_trainer
    trainer = make(model, tok, rows, dataclasses.replace(CFG, epochs=2, lr=1e-2), tmp_path, seed=0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    if lora:  # the "ref" adapter was just added; the model the stage starts from is its "default" adapter
        with trainers.use_adapter(model, "default"):
            start = batch_logps(model, batch)
    else:
        start = batch_logps(model, batch)

    def reference():
        ref = trainer.ref_model if trainer.ref_model is not None else trainer.model
        chosen, rejected = trainer.compute_ref_log_probs(ref, batch)
        return torch.cat([chosen, rejected.T.reshape(-1)]) if kind == "sdpo" else torch.cat([chosen, rejected])

    torch.testing.assert_close(reference(), start, rtol=0, atol=1e-5)
    trainer.train()
    torch.testing.assert_close(reference(), start, rtol=0, atol=1e-5)
    assert (batch_logps(trainer.model, batch) - start).abs().max() > 0.1  # the policy moved
    if lora:
        with trainers.use_adapter(trainer.model, "ref"):
            assert torch.equal(batch_logps(trainer.model, batch), start)
        with trainer.model.disable_adapter():  # not the base model: the adapter the stage started from
            assert (batch_logps(trainer.model, batch) - start).abs().max() > 0.01
    else:
        assert trainer.ref_model is not model and torch.equal(batch_logps(trainer.ref_model, batch), start)
        assert not any(p.requires_grad for p in trainer.ref_model.parameters())


@pytest.mark.parametrize("kind", ["dpo", "sdpo"])
def test_peft_stage_removes_ref_adapter(ds, tok, tmp_path, kind):
    model = tiny_model(tok, lora=True)
    rows = dpo_rows(ds, 4) if kind == "dpo" else sdpo_rows(ds, 4, k=2)
    stage = trainers.dpo if kind == "dpo" else trainers.sdpo
    trained = stage(model, tok, rows, dataclasses.replace(CFG, epochs=1), tmp_path / "run", seed=0)
    assert trained is model
    check_returned(trained.get_base_model())
    assert list(trained.peft_config) == ["default"]
    assert not any(".ref." in name for name, _ in trained.named_parameters())
    assert any(p.requires_grad for n, p in trained.named_parameters() if "lora_" in n)
    lora_dropout = {m.p for n, m in trained.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n}
    assert lora_dropout == {TINY.lora_dropout}  # trl zeroes dropout while training; the stage puts it back
    trained.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


def test_stages_chain_and_return_plain_models(ds, tok, tmp_path):
    """SFT then DPO on one model; a deep copy of the result runs its own weights.

    trl patches ``model.forward`` with a closure over the model; a deep copy of a patched model would
    run the original's forward. The stages undo the patch before they return.
    """
    model = tiny_model(tok)
    assert trainers.sft(model, tok, sft_rows(ds, 4), CFG, tmp_path / "sft", 0) is model
    assert trainers.dpo(model, tok, dpo_rows(ds, 4), CFG, tmp_path / "dpo", 0) is model
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.model.norm.weight.mul_(2.0)
        ids = torch.tensor([tok(sft_rows(ds, 1)[0]["prompt"])["input_ids"]])
        assert not torch.allclose(model(input_ids=ids).logits, clone(input_ids=ids).logits)


# -- checkpoints inside a stage -----------------------------------------------------------------


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", ["sft", "dpo", "sdpo"])
def test_stage_resumes_from_its_checkpoint_to_the_same_weights(ds, tok, tmp_path, kind, monkeypatch):
    """Kill a stage at the start of its 4th of 6 steps (checkpoints after every step); run it again
    in the same folder: it resumes from ``checkpoint-3`` and ends with the weights and losses of an
    uninterrupted run. Dropout stays on in SFT, so the restored RNG state matters there."""
    cfg = dataclasses.replace(CFG, epochs=3, batch_size=2, lr=1e-2)  # 4 rows / 2 per batch x 3 epochs
    rows = {"sft": sft_rows, "dpo": dpo_rows, "sdpo": sdpo_rows}[kind](ds, 4)
    train = getattr(trainers, kind)

    def stage(out, **kw):
        model = tiny_model(tok)
        for module in model.modules():
            if hasattr(module, "attention_dropout"):  # Llama's attention reads it at every forward
                module.attention_dropout = 0.1
        return train(model, tok, rows, cfg, out, 0, **kw)

    whole = stage(tmp_path / "whole", checkpoint_minutes=None)
    assert not list((tmp_path / "whole").glob("checkpoint-*"))

    class Steps(trainers.TrainerCallback):
        def __init__(self, stop_at=None):
            self.stop_at, self.trained = stop_at, []

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == self.stop_at:
                raise Interrupt
            self.trained.append(state.global_step + 1)

    original = trainers._train

    def with_callback(callback):
        def train_with(trainer, out_dir, checkpoint_minutes, **kwargs):
            trainer.add_callback(callback)
            return original(trainer, out_dir, checkpoint_minutes, **kwargs)
        monkeypatch.setattr(trainers, "_train", train_with)
        return callback

    with_callback(Steps(stop_at=3))
    with pytest.raises(Interrupt):
        stage(tmp_path / "cut", checkpoint_minutes=0)
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-3"]  # only the latest kept
    assert trainers.last_checkpoint(tmp_path / "cut").name == "checkpoint-3"

    second = with_callback(Steps())
    resumed = stage(tmp_path / "cut", checkpoint_minutes=0)
    assert second.trained == [4, 5, 6]  # steps 1-3 came from the checkpoint
    assert not list((tmp_path / "cut").glob("checkpoint-*"))  # deleted once the stage has finished
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.allclose(a["model.norm.weight"], tiny_model(tok).state_dict()["model.norm.weight"])  # it trained
    assert losses_logged(tmp_path / "cut") == pytest.approx(losses_logged(tmp_path / "whole"), abs=1e-6)
    assert len(losses_logged(tmp_path / "whole")) == 6


def test_sigterm_saves_a_checkpoint_and_the_stage_resumes_exactly(ds, tok, tmp_path, monkeypatch):
    """SIGTERM during step 2 of 6, with no checkpoint due for an hour: the stage saves
    ``checkpoint-2`` at the end of that step and stops with StageInterrupted (not after 10 minutes'
    work is lost); run again, it resumes there and ends with an uninterrupted run's weights."""
    import os
    import signal

    from sprec_lib.runs import StageInterrupted

    cfg = dataclasses.replace(CFG, epochs=3, batch_size=2, lr=1e-2)
    rows = sft_rows(ds, 4)
    whole = trainers.sft(tiny_model(tok), tok, rows, cfg, tmp_path / "whole", 0, checkpoint_minutes=None)

    class Term(trainers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # during the second step
                os.kill(os.getpid(), signal.SIGTERM)

    original = trainers._train

    def train_with(trainer, out_dir, checkpoint_minutes, **kwargs):
        trainer.add_callback(Term())
        return original(trainer, out_dir, checkpoint_minutes, **kwargs)

    monkeypatch.setattr(trainers, "_train", train_with)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StageInterrupted, match="SIGTERM.*checkpoint-2"):
        trainers.sft(tiny_model(tok), tok, rows, cfg, tmp_path / "cut", 0, checkpoint_minutes=60)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-2"]
    monkeypatch.setattr(trainers, "_train", original)
    resumed = trainers.sft(tiny_model(tok), tok, rows, cfg, tmp_path / "cut", 0, checkpoint_minutes=60)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert losses_logged(tmp_path / "cut") == pytest.approx(losses_logged(tmp_path / "whole"), abs=1e-6)


def _checkpoint_decisions(rank, world, port, due_on_rank, out):
    """One process of :func:`test_checkpoint_decision_is_rank_zeros`: the callback's decision on
    this rank, when only rank ``due_on_rank``'s clock says a checkpoint is due."""
    import types

    from transformers import TrainerControl

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        callback = trainers.CheckpointEvery(minutes=0.0 if rank == due_on_rank else 1e6)
        control = TrainerControl()
        callback.on_step_end(types.SimpleNamespace(device=torch.device("cpu")), None, control)
        out[rank] = control.should_save
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("due_on_rank, saves", [(0, True), (1, False)])
def test_checkpoint_decision_is_rank_zeros(due_on_rank, saves):
    """Under several processes all save at the same step, when rank 0's clock says so: its decision
    is broadcast (two CPU processes over gloo)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        # fork, not spawn: a spawned process would import this module, and trl with it, again.
        mp.start_processes(_checkpoint_decisions, args=(2, port, due_on_rank, out), nprocs=2, join=True,
                           start_method="fork")
        decisions = dict(out)
    assert decisions == {0: saves, 1: saves}


# -- speed switches: the LM head where the loss needs it, token metrics, bf16 ---------------------


def _make(kind, model, tok, ds, cfg, out):
    if kind == "dpo":
        return trainers.make_dpo_trainer(model, tok, dpo_rows(ds, 8), cfg, out, 0)
    if kind == "sdpo":
        return trainers.make_sdpo_trainer(model, tok, sdpo_rows(ds, 8, k=3), cfg, out, 0)
    return trainers.make_sft_trainer(model, tok, sft_rows(ds, 8), dataclasses.replace(cfg, loss_on=kind.split("-")[1]), out, 0)


class _CountRows:
    """Stands in for trl's ChunkedLogProbFunction and records how many positions each call scores."""

    def __init__(self, real):
        self.real, self.rows = real, []

    def apply(self, hidden, *args):
        self.rows.append(hidden.shape[0])
        return self.real.apply(hidden, *args)


def _loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kernel", ["chunked", "logits"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "peft"])
@pytest.mark.parametrize("kind", ["dpo", "sdpo", "sft-completion", "sft-all"])
def test_fast_head_same_loss_and_gradients(ds, tok, tmp_path, kind, lora, kernel, monkeypatch):
    """The LM head on the labelled positions only (``fast_head=True``) against trl's CPU head at
    every position (``False``), one batch of the micro model: the same loss to 1e-6, and every
    gradient within ``3e-8 + 1e-6 * max|grad|`` absolute and 1e-6 relative. Measured, trl's chunked
    kernel: the loss bit for bit; every gradient bit for bit but the tied embedding/head matrix's,
    off by at most 9e-8 of max |grad| 0.08, 1e-6 of it (its head part sums the tokens in another
    order). The "logits" kernel (full logits, torch's cross_entropy) sums in another order too."""
    import trl.trainer.utils

    results, counted, real, real_logits = {}, {}, trainers.ChunkedLogProbFunction, trainers._logits_head
    for fast in (False, True):
        spy = _CountRows(real)

        def logits_spy(hidden, *args, spy=spy):
            spy.rows.append(hidden.shape[0])
            return real_logits(hidden, *args)

        monkeypatch.setattr(trl.trainer.utils, "_ChunkedLogProbFunction", spy)  # trl's head
        monkeypatch.setattr(trainers, "ChunkedLogProbFunction", spy)  # ours
        monkeypatch.setattr(trainers, "_logits_head", logits_spy)
        cfg = dataclasses.replace(CFG, fast_head=fast, token_metrics="every_step", head_kernel=kernel)
        trainer = _make(kind, tiny_model(tok, lora=lora), tok, ds, cfg, tmp_path / str(fast))
        assert trainer.fast_head is fast
        batch = next(iter(trainer.get_train_dataloader()))
        results[fast] = _loss_and_grads(trainer, batch)
        counted[fast] = spy.rows
    labels = (batch["labels"] if kind.startswith("sft") else batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100))
    labelled, positions = int((labels[:, 1:] != -100).sum()), labels[:, 1:].numel()
    calls = 1 if kind.startswith("sft") else 2  # policy, reference
    assert counted[False] == [positions] * calls  # trl's CPU head: every position
    assert counted[True] == [labelled] * calls  # ours: the labelled ones
    assert labelled < positions  # (the check can tell: prompt or padding tokens in the batch)
    (loss_a, grads_a), (loss_b, grads_b) = results[False], results[True]
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=3e-8)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name, a in grads_a.items():
        torch.testing.assert_close(grads_b[name], a, rtol=1e-6, atol=3e-8 + 1e-6 * a.abs().max().item(), msg=name)


@pytest.mark.parametrize("kind", ["dpo", "sdpo", "sft-all"])
def test_fast_head_stage_gives_the_same_losses_and_weights(ds, tok, tmp_path, kind):
    """A whole stage (4 steps), new (the defaults) against stock: the same logged losses and metrics
    to 1e-5; the same weights, each tensor's difference under 1e-3 of how far training moved it (in
    norm). Not elementwise: Adam divides a gradient by its own running size, so an element whose
    gradient is near 0 turns a 1e-7 difference of gradients into a visible fraction of a step
    (measured: the largest elementwise difference 4e-5 at lr 3e-3, in 1 of 30,144 elements; in norm
    at most 8e-5 of the training's move)."""
    runs = {}
    for new in (False, True):
        cfg = dataclasses.replace(CFG, epochs=2, batch_size=4, fast_head=new, token_metrics="every_step")
        out = tmp_path / str(new)
        trainer = _make(kind, tiny_model(tok), tok, ds, cfg, out)
        runs[new] = (trainers._train(trainer, out, checkpoint_minutes=None).state_dict(), history(out))
    (wa, ha), (wb, hb) = runs[False], runs[True]
    start = tiny_model(tok).state_dict()
    for name in wa:
        moved = (wa[name] - start[name]).norm().item()
        assert (wb[name] - wa[name]).norm().item() <= 1e-3 * moved + 1e-7, name
    assert (wa["model.norm.weight"] - start["model.norm.weight"]).norm() > 1e-3  # it trained
    assert len(ha) == len(hb) > 4
    for a, b in zip(ha, hb):
        assert a.keys() == b.keys()
        for key in a:
            if key != "step" and not key.startswith("train_") and "runtime" not in key and "per_second" not in key:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key


def test_token_metrics_on_logged_steps_only(ds, tok, tmp_path, monkeypatch):
    """SFT with ``token_metrics="logged_steps"``: the losses and weights bit for bit those of trl's
    every-step metrics; the metrics are on every log line (steps 1, 3 and 6 of 8), computed on that
    line's step alone."""
    steps, real, real_logits = [], trainers.ChunkedLogProbFunction, trainers._logits_head

    class Spy:  # what the head computes at each call (one call a step here), with either kernel
        @staticmethod
        def apply(*args):
            steps.append(args[-1])
            return real.apply(*args)

    def logits_spy(*args):
        steps.append(args[-1])
        return real_logits(*args)

    monkeypatch.setattr(trainers, "ChunkedLogProbFunction", Spy)
    monkeypatch.setattr(trainers, "_logits_head", logits_spy)
    runs = {}
    for fast_head in (True, False):
        for metrics in ("every_step", "logged_steps"):
            steps.clear()
            cfg = dataclasses.replace(CFG, epochs=4, batch_size=2, logging_steps=3, fast_head=fast_head, token_metrics=metrics)
            out = tmp_path / f"{fast_head}-{metrics}"
            model = trainers.sft(tiny_model(tok), tok, sft_rows(ds, 4), cfg, out, 0, checkpoint_minutes=None)
            runs[fast_head, metrics] = (model.state_dict(), history(out), list(steps))
    for fast_head in (True, False):
        (wa, ha, _), (wb, hb, steps_b) = runs[fast_head, "every_step"], runs[fast_head, "logged_steps"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert [h.get("loss") for h in ha] == [h.get("loss") for h in hb]
        logged = [h for h in hb if "loss" in h]
        assert [h["step"] for h in logged] == [1, 3, 6] and all("entropy" in h and "mean_token_accuracy" in h for h in logged)
        full = ("log_probs", "entropy", "is_top1")
        assert [i + 1 for i, outputs in enumerate(steps_b) if outputs == full] == [1, 3, 6]  # on the logged steps only
        assert [i + 1 for i, outputs in enumerate(steps_b) if outputs == ("log_probs",)] == [2, 4, 5, 7, 8]
        # the first step's line is that step alone in both: the same values
        for key in ("entropy", "mean_token_accuracy"):
            assert logged[0][key] == pytest.approx([h for h in ha if "loss" in h][0][key], abs=1e-6)


def _patch_name(model):
    return vars(model)["forward"].__func__.__code__.co_name


def test_stock_switches_keep_trls_head(ds, tok, tmp_path):
    """fast_head=False and token_metrics="every_step": trl's own patched forward, untouched."""
    cfg = dataclasses.replace(CFG, fast_head=False, token_metrics="every_step")
    for kind in ("dpo", "sdpo", "sft-all"):
        trainer = _make(kind, tiny_model(tok), tok, ds, cfg, tmp_path)
        assert trainer.policy_head is None and _patch_name(trainer.model) == "_fused_forward"
    trainer = _make("dpo", tiny_model(tok), tok, ds, dataclasses.replace(cfg, fast_head=True), tmp_path)
    assert trainer.policy_head.compact and trainer.ref_head.outputs == ("log_probs",)
    assert _patch_name(trainer.model) == _patch_name(trainer.ref_model) == "forward"  # ours (trl's: "_fused_forward")


def test_speed_switches_are_validated():
    from sprec_lib.config import ConfigError, ModelConfig, override

    assert CFG.fast_head is True and CFG.token_metrics == "logged_steps" and ModelConfig().dtype == "float32"
    assert CFG.head_kernel == "logits" and CFG.shared_prompt is False
    with pytest.raises(ConfigError, match="head_kernel"):
        StageConfig(head_kernel="triton")
    with pytest.raises(ConfigError, match="token_metrics"):
        StageConfig(token_metrics="never")
    with pytest.raises(ConfigError, match="dtype"):
        ModelConfig(dtype="float16")
    assert override(ModelConfig(), ["dtype=auto"]).dtype == "auto"
    with pytest.raises(ValueError, match="dtype"):
        trainers.resolve_dtype("float16")
    with pytest.raises(ValueError, match="dtype"):
        trainers.training_args(trainers.SFTConfig, CFG, "/tmp/x", 0, dtype="auto")


def test_resolve_dtype_and_bf16_training(ds, tok, tmp_path):
    """``auto`` resolves to bf16 only where the CPU has native bf16 and it measured faster; a bf16
    SFT stage runs under CPU autocast and trains."""
    cap = trainers.cpu_bf16_capability()
    assert cap["matmul_gflops"]["float32"] > 0 and cap["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    auto = trainers.resolve_dtype("auto")
    native = cap["onednn_bf16"] and (cap["avx512_bf16"] or cap["amx_bf16"])
    assert auto in ("float32", "bfloat16") and (auto == "float32" or native)
    assert trainers.resolve_dtype("float32") == "float32" and trainers.resolve_dtype("bfloat16") == "bfloat16"
    cfg = dataclasses.replace(CFG, epochs=3, batch_size=2)
    trainer = trainers.make_sft_trainer(tiny_model(tok), tok, sft_rows(ds, 4), cfg, tmp_path, 0, dtype="bfloat16")
    assert trainer.args.bf16 and trainer.accelerator.mixed_precision == "bf16"
    model = trainers._train(trainer, tmp_path, checkpoint_minutes=None)
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay fp32
    loss = losses_logged(tmp_path)
    assert loss[-1] < loss[0]


def test_bf16_without_native_support_is_warned_about(monkeypatch):
    """bf16 on a CPU that emulates it (an AVX2 EPYC measured 0.02x fp32) gets a warning naming the
    measured ratio and the way out; native bf16, fp32 and CUDA get none."""
    from sprec_lib import pipeline

    emulated = {"cpu_capability": "AVX2", "avx512_bf16": False, "amx_bf16": False, "onednn_bf16": False,
                "bf16_speedup": 0.0221}
    monkeypatch.setattr(trainers, "_bf16_capability", lambda: emulated)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    warning = trainers.slow_bf16_warning("bfloat16")
    assert "without native bf16 (AVX2)" in warning and "0.02x" in warning and "model.dtype=float32" in warning
    assert trainers.slow_bf16_warning("float32") is None
    monkeypatch.setattr(trainers, "_bf16_capability",
                        lambda: {**emulated, "cpu_capability": "AVX512", "avx512_bf16": True, "onednn_bf16": True})
    assert trainers.slow_bf16_warning("bfloat16") is None
    # The estimates' benchmark: taken on this kind of CPU (no warning), another, or an unrecorded one.
    here = torch.backends.cpu.get_cpu_capability()
    assert pipeline._other_cpu_warning({"cpu": {"cpu_capability": here}}) is None
    assert pipeline._other_cpu_warning(None) is None
    other = pipeline._other_cpu_warning({"cpu": {"cpu_capability": "NOT-" + here}})
    assert f"an NOT-{here} CPU" in other and f"this one is {here}" in other
    assert "a CPU it does not record" in pipeline._other_cpu_warning({})


def test_the_estimates_take_the_benchmark_of_this_kind_of_cpu(tmp_path, monkeypatch):
    """``sprec_iteration-<profile>-<capability>.json`` wins over the plain file on a CPU of that
    capability; on another kind of CPU, or on a GPU machine, the plain file is read."""
    import json

    from sprec_lib import pipeline

    monkeypatch.setenv("SPREC_ROOT", str(tmp_path))
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline._benchmark("tiny") is None
    (folder / "sprec_iteration-tiny.json").write_text(json.dumps({"cpu": {"cpu_capability": "ELSEWHERE"}, "rows": 1}))
    assert pipeline._benchmark("tiny")["cpu"]["cpu_capability"] == "ELSEWHERE"
    (folder / "sprec_iteration-tiny-HERE.json").write_text(json.dumps({"cpu": {"cpu_capability": "HERE"}, "rows": 2}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "HERE")
    bench = pipeline._benchmark("tiny")
    assert bench["rows"] == 2 and bench["path"].endswith("sprec_iteration-tiny-HERE.json")
    assert pipeline._other_cpu_warning(bench) is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "THERE")
    assert pipeline._benchmark("tiny")["rows"] == 1
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "HERE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pipeline._benchmark("tiny")["rows"] == 1


@pytest.mark.parametrize("lora", [False, True], ids=["full", "peft"])
@pytest.mark.parametrize("kind", ["dpo", "sdpo"])
def test_shared_prompt_same_log_probs_and_gradients(ds, tok, tmp_path, kind, lora, monkeypatch):
    """``shared_prompt``: each distinct prompt runs once, its completions against its cached keys
    and values. Against every row run whole (``fast_head`` alone): per-token log-probs to 1e-5
    (measured 5e-7), the loss to 1e-6 (measured: bit for bit), every gradient within 1e-5 of its
    largest (measured 3e-6); for the policy and the reference; the prompt batch holds the distinct
    prompts only."""
    runs, selected = {}, []
    original = trainers.DynamicCache.batch_select_indices

    def spy(cache, indices):  # the prompt's cache, spread over the rows: row -> its prompt
        selected.append(indices.tolist())
        return original(cache, indices)

    monkeypatch.setattr(trainers.DynamicCache, "batch_select_indices", spy)
    for shared in (False, True):
        cfg = dataclasses.replace(CFG, shared_prompt=shared)
        trainer = _make(kind, tiny_model(tok, lora=lora), tok, ds, cfg, tmp_path / str(shared))
        assert trainer.shared_prompt is shared
        batch = next(iter(trainer.get_train_dataloader()))
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        trainer.model.train()
        policy = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                               fused_lm_head=True).log_probs.detach()
        ref = trainer.ref_model if trainer.ref_model is not None else trainer.model
        reference = trainer.compute_ref_log_probs(ref, batch)
        runs[shared] = (policy, reference, *_loss_and_grads(trainer, batch))
        calls = (trainer.policy_head.shared_calls, trainer.ref_head.shared_calls if trainer.ref_head else 0)
        assert sum(calls) == (4 if shared else 0)  # policy twice, reference twice (policy with the ref adapter: peft)
    (pa, ra, la, ga), (pb, rb, lb, gb) = runs[False], runs[True]
    blocks = 2 if kind == "dpo" else 4  # [chosen; rejected] or [chosen; 3 rejected], 4 prompts each
    assert len(selected) == 4 and all(rows == list(range(4)) * blocks for rows in selected)
    torch.testing.assert_close(pb, pa, rtol=0, atol=1e-5)
    assert ((pa != 0) == (pb != 0)).all()  # the same positions scored
    for a, b in zip(ra, rb):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lb, la, rtol=1e-6, atol=1e-6)
    for name, a in ga.items():
        torch.testing.assert_close(gb[name], a, rtol=0, atol=1e-5 * a.abs().max().item(), msg=name)


def test_shared_prompt_runs_whole_rows_when_the_batch_has_no_shared_prompt(ds, tok):
    """A batch of distinct prompts, or a left-padded one: ``_shared_prompt_rows`` declines (None)
    and the head runs every row whole."""
    model = tiny_model(tok)
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 9, 7, 8, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    labels = ids.masked_fill(torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]) == 0, -100)
    assert trainers._shared_prompt_rows(model, ids, mask, labels) is None  # prompts [5, 6] and [5, 9]
    same = ids.clone()
    same[1, 1] = 6
    assert trainers._shared_prompt_rows(model, same, mask, labels) is not None
    left = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert trainers._shared_prompt_rows(model, same, left, labels) is None
