"""Checkpoints: the released MiniGPT-v2 ``.pth`` format, and mgv2's own folders.

Released format (SPEC §6): the file's ``["model"]`` entry holds the projector, the LoRA
A/B matrices under old peft names (no ``.default.``) and ``rotary_emb.inv_freq`` buffers.
The official loader uses ``strict=False`` and ignores the result; this one maps every key,
reports every missing and unexpected key, and refuses shape mismatches.

mgv2 folder::

    config.yaml            the ModelConfig (paths to the frozen base weights)
    model.safetensors      trained non-LoRA tensors (projector; vision / LLM when trained)
    adapter/               LoRA in peft's adapter format (adapter_config.json + safetensors)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mgv2.config import ModelConfig, save_yaml
from mgv2.errors import CheckpointError
from mgv2.io import atomic_dir

ADAPTER = "default"
_OLD_LORA = re.compile(r"^(llama_model\..*\.lora_[AB])\.weight$")
_ROTARY = re.compile(r"\.rotary_emb\.inv_freq$")


@dataclass
class LoadReport:
    """What a checkpoint load did, key by key."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file should have held
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # in the file, not needed by design
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.ignored:
            lines.append(f"  ignored by design ({len(self.ignored)}): {_short(self.ignored)}")
        if self.missing:
            lines.append(f"  MISSING ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  UNEXPECTED ({len(self.unexpected)}): {_short(self.unexpected)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _torch_load(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; check the path given to --checkpoint / config")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad file; report them as one error
        raise CheckpointError(
            f"{path} is not a loadable torch checkpoint ({type(err).__name__}: {err}). mgv2 loads pickles "
            "only with weights_only=True; a file that needs arbitrary code is refused."
        ) from err


def official_to_mgv2_key(key: str) -> str:
    """Old peft name -> current peft name: ``...lora_A.weight`` -> ``...lora_A.default.weight``."""
    m = _OLD_LORA.match(key)
    return f"{m.group(1)}.{ADAPTER}.weight" if m else key


def mgv2_to_official_key(key: str) -> str:
    return key.replace(f".{ADAPTER}.weight", ".weight") if ".lora_" in key else key


def _check_rotary(model, key: str, value: torch.Tensor, report: LoadReport) -> None:
    """The released file carries inv_freq buffers; transformers recomputes them.  They are
    ignored, but a disagreement (another rope_theta) is worth saying."""
    report.ignored.append(key)
    llm_cfg = getattr(model.llama_model, "config", None)
    if llm_cfg is None or report.notes:
        return
    head_dim = llm_cfg.hidden_size // llm_cfg.num_attention_heads
    theta = getattr(llm_cfg, "rope_theta", None) or llm_cfg.rope_parameters.get("rope_theta", 10000.0)
    ours = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if value.shape != ours.shape or not torch.allclose(value.float(), ours, rtol=1e-3):
        report.notes.append(
            f"{key} differs from the LLM's rotary frequencies (rope_theta {theta}); the file was made "
            "for another rope setting"
        )


def load_official_checkpoint(model, path: str | Path, *, allow_missing: bool = False) -> LoadReport:
    """Load a released MiniGPT-v2 checkpoint (``ckpt["model"]``) into ``model``.

    Every tensor of the file must map onto a model key with the same shape, and every
    projector / LoRA tensor of the model must be in the file (unless ``allow_missing``).
    """
    path = Path(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a MiniGPT-v2 checkpoint: expected a dict with a 'model' state dict, found {keys}"
        )
    state = ckpt["model"]
    ours = model.state_dict()
    report = LoadReport(str(path))
    to_load: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in state.items():
        if _ROTARY.search(key):
            _check_rotary(model, key, value, report)
            continue
        mk = official_to_mgv2_key(key)
        if mk not in ours:
            report.unexpected.append(key)
            continue
        if tuple(ours[mk].shape) != tuple(value.shape):
            mismatched.append(f"{key}: file {tuple(value.shape)}, model {tuple(ours[mk].shape)}")
            continue
        to_load[mk] = value
    expected = [k for k in ours if k.startswith("llama_proj.") or ".lora_" in k]
    report.missing = [mgv2_to_official_key(k) for k in expected if k not in to_load]
    if mismatched:
        raise CheckpointError(
            f"{path} does not fit this model; shape mismatches:\n  " + "\n  ".join(mismatched[:10])
            + "\nIs this a MiniGPT-v2 checkpoint for this config (projector width, LLM hidden size, lora.r)?"
        )
    if report.unexpected:
        raise CheckpointError(
            f"{path} holds {len(report.unexpected)} tensor(s) this model has no place for: "
            f"{_short(report.unexpected)}. Check lora.target_modules / the model config, or the file is "
            "from another model."
        )
    if report.missing and not allow_missing:
        raise CheckpointError(
            f"{path} lacks {len(report.missing)} tensor(s) the model needs: {_short(report.missing)}. "
            "Is it a stage-1/2/3 MiniGPT-v2 checkpoint with LoRA on the configured modules?"
        )
    with torch.no_grad():
        for k, v in to_load.items():
            ours[k].copy_(v.to(ours[k].dtype))
    report.loaded = sorted(to_load)
    return report


# ---------------------------------------------------------------------------------------------
# mgv2 folders


def _saved_tensors(model) -> dict[str, torch.Tensor]:
    """Trained tensors that are not LoRA (LoRA goes to the peft adapter)."""
    parts = model.part_parameters()
    keep = {"projector"} | {p for p in ("vision", "ln_vision", "llm") if p in model.trainable_parts}
    if model.save_frozen_vision:
        keep |= {"vision", "ln_vision"}
    return {n: p.detach().to("cpu").contiguous() for part in keep for n, p in parts[part]}


def checkpoint_metadata(model, fmt: str = "mgv2") -> dict[str, str]:
    """The safetensors header of an mgv2 checkpoint: its format and the settings that change what
    the saved tensors mean without changing their shapes (``merge_layout``: a row-merge
    projector loaded into a square-merge model would fit and read the wrong patches;
    ``image_pos_embed``: "coords" adds no tensor, so only the header tells it from "none")."""
    return {"format": fmt, "merge_layout": model.merge_layout, "image_pos_embed": model.image_pos_kind}


def check_metadata(model, meta: dict[str, str] | None, where: Path) -> None:
    """Refuse a checkpoint whose header says it was trained with another ``merge_layout`` or
    ``image_pos_embed`` (checkpoints written before a key existed: row-merge, the only layout
    then; their image_pos_embed is told by the tensors, "coords" did not exist)."""
    meta = meta or {}
    ours = {"merge_layout": model.merge_layout, "image_pos_embed": model.image_pos_kind}
    for key, saved in (("merge_layout", meta.get("merge_layout", "row")), ("image_pos_embed", meta.get("image_pos_embed"))):
        if saved is not None and saved != ours[key]:
            raise CheckpointError(
                f"{where} was trained with {key}: {saved}, this model config has {key}: {ours[key]}; "
                f"load it with the config.yaml saved beside it (or set {key}={saved})"
            )


def save_checkpoint(model, cfg: ModelConfig, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write an mgv2 checkpoint folder atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tensors = _saved_tensors(model)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={**checkpoint_metadata(model), **(extra or {})})
        if hasattr(model.llama_model, "peft_config"):
            model.llama_model.save_pretrained(str(tmp / "adapter"))
        save_yaml(cfg.with_absolute_paths(), tmp / "config.yaml")
    return out_dir


def load_checkpoint_folder(model, folder: str | Path) -> LoadReport:
    """Load an mgv2 checkpoint folder into ``model`` (strict over the file's keys)."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder} is not an mgv2 checkpoint folder (no model.safetensors)")
    report = LoadReport(str(folder))
    with safe_open(str(weights), framework="pt") as f:
        check_metadata(model, f.metadata(), weights)
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    ours = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)}, model {tuple(ours[k].shape)}" for k, v in state.items()
           if k in ours and tuple(ours[k].shape) != tuple(v.shape)]
    report.unexpected = [k for k in state if k not in ours]
    if bad or report.unexpected:
        raise CheckpointError(
            f"{weights} does not fit this model. Shape mismatches: {bad[:5]}; unknown keys: "
            f"{_short(report.unexpected)}. Load it with the config.yaml saved beside it."
        )
    report.missing += [k for k in ("llama_proj.weight", "image_pos_embed") if k in ours and k not in state]
    with torch.no_grad():
        for k, v in state.items():
            ours[k].copy_(v.to(ours[k].dtype))
    report.loaded += sorted(state)
    adapter = folder / "adapter"
    if adapter.is_dir():
        report.loaded += _load_adapter(model, adapter)
    elif hasattr(model.llama_model, "peft_config"):
        report.missing.append("adapter/ (LoRA weights)")
    if report.missing:
        raise CheckpointError(f"{folder} lacks {report.missing}; the checkpoint is incomplete")
    return report


def _load_adapter(model, adapter: Path) -> list[str]:
    from peft import set_peft_model_state_dict

    files = list(adapter.glob("adapter_model.safetensors"))
    if not files:
        raise CheckpointError(f"{adapter} has no adapter_model.safetensors")
    state = load_file(str(files[0]))
    if not hasattr(model.llama_model, "peft_config"):
        raise CheckpointError(f"{adapter} holds LoRA weights but the model config has lora.enabled: false")
    result = set_peft_model_state_dict(model.llama_model, state, adapter_name=ADAPTER)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"{adapter}: LoRA tensors with no place in the model: {_short(unexpected)}")
    lora_keys = [k for k in model.state_dict() if ".lora_" in k]
    if len(state) != len(lora_keys):
        raise CheckpointError(
            f"{adapter} has {len(state)} LoRA tensors, the model has {len(lora_keys)}; check lora.target_modules"
        )
    return sorted(state)


def load_any_checkpoint(model, path: str | Path) -> LoadReport:
    """An mgv2 folder or a released ``.pth``, told apart by what is on disk."""
    path = Path(path)
    if path.is_dir():
        return load_checkpoint_folder(model, path)
    return load_official_checkpoint(model, path)


def export_merged(model, cfg: ModelConfig, tokenizer, out_dir: str | Path) -> Path:
    """Merge LoRA into the LLM and write a folder that loads without peft:
    ``llm/`` (transformers folder + tokenizer), ``model.safetensors`` (vision, ln_vision,
    projector) and ``config.yaml`` pointing at them."""
    import copy
    import dataclasses

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        llm = copy.deepcopy(model.llama_model)
        if hasattr(llm, "merge_and_unload"):
            llm = llm.merge_and_unload()
        llm.save_pretrained(str(tmp / "llm"))
        tokenizer.save_pretrained(str(tmp / "llm"))
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in model.state_dict().items()
            if k.startswith(("visual_encoder.", "ln_vision.", "llama_proj.", "image_pos_embed"))
        }
        save_file(tensors, str(tmp / "model.safetensors"), metadata=checkpoint_metadata(model, "mgv2-merged"))
        merged_cfg = dataclasses.replace(
            cfg,
            llm=dataclasses.replace(cfg.llm, path="llm", tokenizer="llm"),
            lora=dataclasses.replace(cfg.lora, enabled=False),
            vision=dataclasses.replace(cfg.vision, checkpoint=None),
            trainable=["projector"],
            checkpoint=".",
            base_dir=None,
        )
        save_yaml(merged_cfg, tmp / "config.yaml")
    return out_dir
