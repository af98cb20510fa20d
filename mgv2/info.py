"""Parameter counts and memory of a model config, built on the meta device (no weights)."""

from __future__ import annotations

from mgv2.config import ModelConfig

BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def model_info(cfg: ModelConfig) -> dict:
    """Parameters per part and the memory to hold them; nothing is allocated or read."""
    from mgv2.model import build_model

    model = build_model(cfg, pad_token_id=0, device="meta")
    parts = {name: sum(p.numel() for _, p in plist) for name, plist in model.part_parameters().items()}
    total = sum(parts.values())
    trainable = sum(p.numel() for p in model.trainable_parameters().values())
    return {
        "name": cfg.name,
        "parameters": {
            "vision": parts["vision"] + parts["ln_vision"],
            "projector": parts["projector"],
            "llm": parts["llm"],
            "lora": parts["lora"],
            "trainable": trainable,
            "total": total,
        },
        "trainable_parts": list(cfg.trainable),
        "image_tokens": cfg.num_image_tokens,
        "memory_gib": {k: total * b / 2**30 for k, b in BYTES.items()},
    }


def format_info(info: dict) -> str:
    p = info["parameters"]
    lines = [f"model {info['name']}: {info['image_tokens']} image tokens per image", ""]
    lines += [f"  {k:<10} {v:>16,}  ({v / 1e6:,.1f} M)" for k, v in p.items()]
    lines += ["", f"  trainable parts: {', '.join(info['trainable_parts'])}", "", "  memory to hold the weights:"]
    lines += [f"    {k:<5} {v:8.2f} GiB" for k, v in info["memory_gib"].items()]
    return "\n".join(lines)
