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
from sprec_lib.data.synthetic import make_synthetic

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


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_items=30, sizes=(16, 4, 4))


@pytest.fixture(scope="module")
def tok(ds):
    return models.train_tokenizer(ds, 512)


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
def completion_logp(model, tok, prompt: str, completion: str) -> float:
    """Sum of log p(completion + EOS | prompt), with a plain forward (no trl code)."""
    model.eval()
    n = len(tok(prompt)["input_ids"])
    ids = torch.tensor([tok(prompt + completion + tok.eos_token)["input_ids"]])
    assert ids[0, :n].tolist() == tok(prompt)["input_ids"]  # the prompt's tokens are a prefix
    logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logp[n - 1 :].sum().item()


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
        def train_with(trainer, out_dir, checkpoint_minutes):
            trainer.add_callback(callback)
            return original(trainer, out_dir, checkpoint_minutes)
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

    def train_with(trainer, out_dir, checkpoint_minutes):
        trainer.add_callback(Term())
        return original(trainer, out_dir, checkpoint_minutes)

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
