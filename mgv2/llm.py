"""The language model: ``transformers.LlamaForCausalLM`` from a local folder or from numbers,
with LoRA through peft.  Nothing here downloads anything."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mgv2.config import LLMConfig, LoRAConfig
from mgv2.errors import CheckpointError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# LLMConfig field -> transformers LlamaConfig attribute, checked against a loaded folder.
_ARCH_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
}


def llama_config(cfg: LLMConfig) -> LlamaConfig:
    """The transformers config for the architecture numbers in ``cfg``."""
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=None,
        attn_implementation="sdpa",
    )


def init_coordinate_tokens(model, token_ids: list[int], std: float = 0.02) -> None:
    """Ordered init of the coordinate tokens ``<0>..<100>`` (``token_ids[v]`` = id of ``<v>``):
    input embedding and lm_head row of value v = a sin-cos code of v (periods from 2 to ~400
    coordinate units) scaled to per-entry std ``std``, so neighbouring values start with
    similar embeddings and similar logits.  Used for random-init LLMs only (``coord_init``)."""
    import math

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    dim = emb.shape[1]
    half = dim // 2
    periods = torch.logspace(math.log10(2.0), math.log10(400.0), half, dtype=torch.float64)
    values = torch.arange(len(token_ids), dtype=torch.float64).reshape(-1, 1)
    phase = 2 * math.pi * values / periods.reshape(1, -1)
    code = torch.cat((phase.sin(), phase.cos()), dim=1)
    if code.shape[1] < dim:
        code = torch.cat((code, torch.zeros(len(token_ids), dim - code.shape[1], dtype=code.dtype)), dim=1)
    code = (code / code.std() * std).to(emb.dtype)
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=emb.device)
    with torch.no_grad():
        emb[ids] = code.to(emb.device)
        if head.data_ptr() != emb.data_ptr():
            head[ids] = code.to(head.device)


def check_arch(cfg: LLMConfig, loaded, where: str) -> None:
    """Refuse a folder whose architecture differs from the config (a wrong path is the
    usual cause, and a silent mismatch would only show as nonsense output)."""
    wrong = []
    for ours, theirs in _ARCH_FIELDS.items():
        got = getattr(loaded, theirs, None)
        if got is not None and got != getattr(cfg, ours):
            wrong.append(f"llm.{ours}: config {getattr(cfg, ours)}, folder {got}")
    if wrong:
        raise CheckpointError(
            f"the LLM in {where} does not match the model config ({'; '.join(wrong)}). "
            "Point llm.path at the right folder or set these numbers in the config."
        )


def build_llm(cfg: LLMConfig, path: Path | None, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """A LlamaForCausalLM: loaded from ``path`` when given, else randomly initialised from
    ``cfg`` (on any device, ``meta`` included)."""
    if path is None:
        with torch.device(device):
            model = LlamaForCausalLM(llama_config(cfg))
        return model.to(dtype)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"llm.path {path} is not a transformers model folder (no config.json). Point it at a local "
            "Llama-2-7b-chat-hf folder, or run `mgv2 convert gguf` for SmolLM2."
        )
    kwargs: dict = {"dtype": dtype, "local_files_only": True}
    if cfg.load_in_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
    try:
        model = LlamaForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not load the LLM from {path}: {err}") from err
    check_arch(cfg, model.config, str(path))
    return model if cfg.load_in_8bit else model.to(device)


def add_lora(llm, cfg: LoRAConfig):
    """Wrap ``llm`` in a peft LoRA model (adapter name ``default``), never merged."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, lora)
