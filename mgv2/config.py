"""Typed configuration: dataclasses validated on creation; YAML is only their saved form.

Every config class is a frozen-free dataclass whose ``__post_init__`` checks values.  Loading
from YAML goes through :func:`from_dict`, which refuses unknown keys and wrong types with a
message naming the key, the file and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from mgv2.errors import MGV2Error

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_PREFIX = "mgv2:"  # paths starting with this resolve inside the installed package's assets
REPO_DIR = PACKAGE_DIR.parent  # the source checkout (configs/ lives here)
# The model every command opens when none is given: the bundled demo model (issue #6), whose
# weights ship in the package (``checkpoint: mgv2:demo_model``).  The one place that says so.
DEFAULT_MODEL = "configs/model/demo.yaml"


class ConfigError(MGV2Error, ValueError):
    """A configuration value is wrong; the message names the key and the fix."""


def resolve_path(value: str | None, base: Path | None = None) -> Path | None:
    """Resolve a path from a config: ``mgv2:NAME`` -> package assets, ``~`` expanded, relative
    paths against ``base`` (the config file's folder) when given."""
    if value is None:
        return None
    if value.startswith(ASSETS_PREFIX):
        return PACKAGE_DIR / "assets" / value[len(ASSETS_PREFIX) :]
    p = Path(os.path.expanduser(value))
    if not p.is_absolute() and base is not None:
        p = base / p
    return p


# ---------------------------------------------------------------------------------------------
# model


@dataclass
class VisionConfig:
    """EVA ViT-g (SPEC §1) at any size; the defaults are the official ones."""

    img_size: int = 448
    patch_size: int = 14
    width: int = 1408
    depth: int = 39
    heads: int = 16
    mlp_ratio: float = 4.3637
    ln_eps: float = 1e-6
    # The grid the checkpoint's position embedding was trained on (224 px for eva_vit_g.pth);
    # it is resized to ``img_size`` when the checkpoint is loaded.
    checkpoint_img_size: int = 224
    checkpoint: str | None = None  # eva_vit_g.pth (BLIP-2); None = random init
    ln_vision_eps: float = 1e-5
    gradient_checkpointing: bool = False
    # Random init of ``pos_embed`` (no checkpoint): "trunc_normal" (std 0.02, the official) or
    # "sincos" (fixed-formula 2D sin-cos, MAE style, still trained): a from-scratch encoder then
    # knows where each patch is from step 0 (the demo preset).
    pos_embed_init: Literal["trunc_normal", "sincos"] = "trunc_normal"

    def __post_init__(self) -> None:
        _positive(self, "img_size", "patch_size", "width", "depth", "heads", "checkpoint_img_size")
        if self.img_size % self.patch_size:
            raise ConfigError(f"vision.img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"vision.width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError("vision.mlp_ratio must be > 0")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass
class LLMConfig:
    """A LLaMA-architecture decoder.  ``path`` = a local transformers folder (Llama-2-7b-chat-hf,
    a converted SmolLM2); without it the model is built from the numbers below with random
    weights (tiny preset, or the 7B shapes on the meta device for ``mgv2 info``)."""

    path: str | None = None
    tokenizer: str | None = None  # defaults to ``path``
    pad_token: str = "$$"  # SPEC §3: the official code pads with "$$" (id 3997 in Llama-2)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    load_in_8bit: bool = False
    gradient_checkpointing: bool = False
    # Random init only (no ``path``): "sincos" gives the coordinate tokens <0>..<100> ordered
    # input embeddings and output (lm_head) rows, so neighbouring values start out similar
    # (the demo preset); "random" = the transformers init for every token.
    coord_init: Literal["random", "sincos"] = "random"

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"llm.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("llm.num_heads must be a multiple of llm.num_kv_heads")


@dataclass
class LoRAConfig:
    """LoRA through peft (SPEC §1: r 64, alpha 16, dropout 0.05 on q_proj, v_proj)."""

    enabled: bool = True
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        if self.enabled:
            _positive(self, "r", "alpha")
            if not self.target_modules:
                raise ConfigError("lora.target_modules is empty; name the Linear layers to adapt (e.g. [q_proj, v_proj])")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


TRAINABLE_PARTS = ("projector", "lora", "vision", "ln_vision", "llm")
Precision = Literal["fp32", "fp16", "bf16"]
# a training stage's autocast: "auto" = bf16 where the device computes bf16 in hardware (a CUDA GPU
# with bf16, a CPU with AVX512-BF16 or AMX), fp16 on an older GPU, fp32 on other CPUs
AmpPrecision = Literal["fp32", "fp16", "bf16", "auto"]


@dataclass
class ModelConfig:
    name: str = "minigptv2"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    merge_tokens: int = 4  # SPEC §1: 4 consecutive patch tokens of one row -> one LLM token
    # Which patches one LLM token joins: "row" (SPEC §1, what the released weights expect:
    # ``merge_tokens`` consecutive patches of one row, a 1x4 strip) or "square" (a k x k block,
    # k = sqrt(merge_tokens): 2x2 for 4; same token count, so the same cost; for from-scratch
    # models whose boxes need x as finely as y: docs/demo_model.md).
    merge_layout: Literal["row", "square"] = "row"
    # What trains, stated explicitly (SPEC §1: projector + LoRA).  "vision" with
    # ``vision_trainable_blocks`` > 0 trains only the last N blocks.
    trainable: list[str] = field(default_factory=lambda: ["projector", "lora"])
    vision_trainable_blocks: int = 0  # 0 = all blocks when "vision" is trainable
    # fp16 = the official mixed layout (Conv/Linear fp16, norms and embeddings fp32).
    vision_precision: Precision = "fp16"
    llm_precision: Precision = "fp16"
    checkpoint: str | None = None  # a MiniGPT-v2 checkpoint (released .pth or an mgv2 folder)
    max_txt_len: int = 1024
    # Normalisation of the projected image tokens (no parameters): "none" (official) or
    # "center_ln": subtract each image's mean token, then a per-token LayerNorm without affine,
    # scaled by ``image_embed_scale``.  For from-scratch models (the demo preset), where
    # otherwise the image tokens grow one shared, huge, content-free direction and serve as
    # attention sinks (docs/demo_model.md).
    image_embed_norm: Literal["none", "center_ln"] = "none"
    image_embed_scale: float = 1.0
    # Write the vision encoder and ln_vision into every checkpoint even when they are frozen:
    # a frozen RANDOM encoder (demo preset) is part of the model and no file restores it.
    save_frozen_vision: bool = False
    # Where the image sits in the first turn: "official" (SPEC §3: ``[INST] <Img>..</Img> {instruction}
    # [/INST]``, what the released weights expect) or "instruction_first" (``[INST] {instruction}
    # <Img>..</Img> [/INST]``): the causal image tokens then see the instruction, so each can tell
    # whether it is what is asked for (for from-scratch models: docs/demo_model.md).
    prompt_layout: Literal["official", "instruction_first"] = "official"
    # A position embedding added to the projected image tokens (after the normalisation):
    # "none" (official) or "sincos": a trainable [tokens, hidden] table started as the 2D sin-cos
    # table of the LLM token grid (rows x merged columns), so each image token says where it is in
    # a form the LLM can read directly (for from-scratch models: docs/demo_model.md); "coords": no
    # table of its own, each image token gets the LLM's input embeddings of the coordinate tokens
    # ``<x>`` and ``<y>`` of its centre added (tied: they train with the box text's tokens), so a box
    # in the prompt and the image tokens it covers start alike (needs <0>..<100> as single tokens).
    image_pos_embed: Literal["none", "sincos", "coords"] = "none"
    base_dir: str | None = None  # folder relative paths resolve against (set by load_yaml)

    def __post_init__(self) -> None:
        _positive(self, "merge_tokens", "max_txt_len")
        unknown = [p for p in self.trainable if p not in TRAINABLE_PARTS]
        if unknown:
            raise ConfigError(f"trainable: unknown part(s) {unknown}; choose from {list(TRAINABLE_PARTS)}")
        if "lora" in self.trainable and not self.lora.enabled:
            raise ConfigError("trainable names 'lora' but lora.enabled is false; enable LoRA or drop 'lora'")
        if "llm" in self.trainable and self.lora.enabled and "lora" not in self.trainable:
            raise ConfigError("the full LLM trains but LoRA is enabled and frozen; set lora.enabled: false")
        k_row, k_col = self.token_cell
        if self.merge_layout == "square":
            if k_row * k_col != self.merge_tokens or self.vision.grid % k_row:
                raise ConfigError(
                    f"merge_layout square needs merge_tokens a square number whose root divides the patch "
                    f"grid {self.vision.grid}, got merge_tokens {self.merge_tokens}; use 1, 4, 16 or "
                    "merge_layout: row"
                )
        elif self.vision.grid % k_col:
            raise ConfigError(
                f"merge_tokens {self.merge_tokens} must divide the patch grid width {self.vision.grid} "
                "(the 1x4 merge joins patches of one row)"
            )
        if self.vision_trainable_blocks < 0 or self.vision_trainable_blocks > self.vision.depth:
            raise ConfigError(f"vision_trainable_blocks must be in 0..{self.vision.depth}")

    @property
    def token_cell(self) -> tuple[int, int]:
        """(rows, columns) of patches that one LLM image token joins: 1 x ``merge_tokens`` for
        ``merge_layout`` row, k x k (k = sqrt(merge_tokens)) for square."""
        if self.merge_layout == "square":
            k = math.isqrt(self.merge_tokens)
            return k, k
        return 1, self.merge_tokens

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches // self.merge_tokens

    def path(self, value: str | None) -> Path | None:
        return resolve_path(value, Path(self.base_dir) if self.base_dir else None)

    def with_absolute_paths(self) -> ModelConfig:
        """This config with its relative paths (``vision.checkpoint``, ``llm.path``,
        ``llm.tokenizer``, ``checkpoint``) resolved against ``base_dir``: the form a checkpoint's
        ``config.yaml`` is written in, so that it loads from the checkpoint's folder (where the
        relative paths of the YAML it came from mean nothing).  ``mgv2:`` names stay as they are."""

        def absolute(value: str | None) -> str | None:
            if value is None or value.startswith(ASSETS_PREFIX):
                return value
            return str(self.path(value).resolve())

        return dataclasses.replace(
            self,
            vision=dataclasses.replace(self.vision, checkpoint=absolute(self.vision.checkpoint)),
            llm=dataclasses.replace(self.llm, path=absolute(self.llm.path), tokenizer=absolute(self.llm.tokenizer)),
            checkpoint=absolute(self.checkpoint),
            base_dir=None,
        )


# ---------------------------------------------------------------------------------------------
# generic dict <-> dataclass


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{type(obj).__name__}.{n} must be a positive number, got {v!r}")


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # one real arm (X | None): its own message says what is wrong
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (arg,) = get_args(tp)[:1] or (Any,)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, vt = get_args(tp) or (Any, Any)
        return {k: _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-5" (no dot) as text; it is meant as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(names)}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


def to_dict(obj: Any) -> dict:
    d = dataclasses.asdict(obj)
    d.pop("base_dir", None)
    return d


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``key.sub=value`` strings (value parsed as YAML) applied onto a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. llm.path=/models/llama)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def config_file(path: str | Path) -> Path:
    """A config path as given (``mgv2:NAME`` = package assets); a relative path that does not exist
    from the working directory is taken from the source checkout, so ``configs/model/demo.yaml``
    works from any folder."""
    p = resolve_path(str(path))
    if not p.is_absolute() and not p.exists() and (REPO_DIR / p).is_file():
        return REPO_DIR / p
    return p


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read a YAML config file into ``cls`` (plus ``key=value`` overrides)."""
    path = config_file(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; pass a YAML file such as configs/model/tiny.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    data = apply_overrides(data, overrides or [])
    if "base_dir" in {f.name for f in dataclasses.fields(cls)}:
        data.setdefault("base_dir", str(path.resolve().parent))
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_yaml(obj: Any, path: str | Path) -> None:
    from mgv2.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# training (``mgv2 train``; SPEC §5).  A stage is one of these configs, never code.

OptimName = Literal["adamw"]
ScheduleStyle = Literal["cosine", "epoch_cosine", "constant"]
DistributedMode = Literal["ddp", "fsdp"]


@dataclass
class DatasetEntry:
    """One dataset of the mixture: a reader (``tasks.readers.SOURCES[source]``) turns the files
    under ``path`` into records, a task (``tasks.TASKS[task]``) turns each record into samples.

    ``batch_size`` is what ONE iteration of this dataset takes for the whole job (all processes
    together, times ``TrainConfig.batch_scale``); under torchrun each process takes its slice.
    ``ratio`` is the relative chance that an iteration draws this dataset (the official
    ``sample_ratio``)."""

    source: str
    task: str
    name: str = ""  # label in logs; defaults to ``source`` (must be unique in the mixture)
    path: str | None = None  # root folder for the reader, relative to TrainConfig.data_root
    split: str = "train"
    ratio: float = 1.0
    batch_size: int = 1
    images: str | None = None  # picture folder relative to data_root, passed to the reader as images=
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the reader
    # Up to this many records OF THE SAME PICTURE go into one sample as successive turns (one
    # image encoding, several answers with a loss; a record asking what an earlier turn asked,
    # by the task's group_key, e.g. another sentence for the same box, is skipped).  1 = one record
    # per sample (the official recipe); above 1 the dataset is indexed by picture, not by record.
    turns_per_image: int = 1

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("datasets[*].source is empty; name a reader such as refcoco or vqav2")
        if not self.name:
            self.name = self.source
        if not (self.ratio > 0):
            raise ConfigError(f"dataset {self.name}: ratio must be > 0, got {self.ratio}")
        _positive(self, "batch_size")
        if not isinstance(self.turns_per_image, int) or isinstance(self.turns_per_image, bool) or self.turns_per_image < 1:
            raise ConfigError(
                f"dataset {self.name}: turns_per_image must be a whole number >= 1, got {self.turns_per_image!r}"
            )
        known = _known_tasks()
        if known is not None and self.task not in known:
            raise ConfigError(f"dataset {self.name}: unknown task {self.task!r}; choose from {sorted(known)}")
        sources = _known_sources()
        if sources is not None and self.source not in sources:
            raise ConfigError(
                f"dataset {self.name}: unknown source {self.source!r}; tasks.readers.SOURCES has {sorted(sources)}"
            )


def _known_tasks() -> set[str] | None:
    try:
        from tasks import TASKS
    except ImportError:  # pragma: no cover - the tasks package ships with mgv2
        return None
    return set(TASKS)


def _known_sources() -> set[str] | None:
    """The reader names, once ``tasks.readers.SOURCES`` exists (None before that)."""
    try:
        from tasks.readers import SOURCES  # type: ignore[attr-defined]
    except ImportError:
        return None
    return set(SOURCES)


@dataclass
class OptimConfig:
    """AdamW; weight decay applies to matrices only (0 for biases, norms and every 1-D tensor)."""

    name: OptimName = "adamw"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ConfigError("optim.eps must be > 0 and optim.weight_decay >= 0")


@dataclass
class RegionLossConfig:
    """An auxiliary training loss that teaches the image tokens where the first turn points.

    The boxes written in a sample's first turn (the refer answer, the identify question, the
    detection answer) say which part of the picture the turn is about.  Each LLM image token is
    given a target: how much of its cell (or of the box, for a box smaller than the cell) the
    boxes cover, 0..1.  A linear head on the image tokens' hidden states after decoder layer
    ``layer`` is trained to give it (binary cross-entropy, mean over the tokens of a sample),
    and ``weight`` times the sum over samples is added to the answer loss.  The head is a
    training device only: it lives in the trainer, is saved in ``train_state.pt`` for
    ``--resume``, and is not part of the model.  Needs ``prompt_layout: instruction_first``
    (with the image before the instruction no image token can know what is asked)."""

    weight: float = 4.0
    layer: int = 3  # decoder layers run before the head reads the image tokens (1 = after the first)

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError(f"weight must be > 0, got {self.weight} (drop region_loss to turn it off)")
        if self.layer < 1:
            raise ConfigError(f"layer must be >= 1 (the decoder layer after which the head reads), "
                              f"got {self.layer}")


@dataclass
class ScheduleConfig:
    """Learning rate per optimizer step: linear warm-up from ``warmup_start_lr`` to ``lr`` over
    ``warmup_steps``, then

    * ``cosine``: cosine from ``lr`` to ``min_lr`` over the remaining steps (smooth, per step);
    * ``epoch_cosine``: the official LAVIS scheduler: warm-up only inside the first epoch, then
      ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2`` held for each epoch of
      ``iters_per_epoch`` steps (the released stage-3 recipe: 50 epochs x 1000 iterations);
    * ``constant``: ``lr`` after the warm-up.
    """

    lr: float = 1e-5
    min_lr: float = 1e-6
    warmup_start_lr: float = 1e-6
    warmup_steps: int = 1000
    style: ScheduleStyle = "cosine"
    iters_per_epoch: int | None = None  # epoch_cosine only

    def __post_init__(self) -> None:
        if not (self.lr > 0) or self.min_lr < 0 or self.warmup_start_lr < 0:
            raise ConfigError("schedule: lr must be > 0, min_lr and warmup_start_lr >= 0")
        if self.min_lr > self.lr:
            raise ConfigError(f"schedule.min_lr {self.min_lr} is above schedule.lr {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError("schedule.warmup_steps must be >= 0")
        if self.style == "epoch_cosine" and not (self.iters_per_epoch and self.iters_per_epoch > 0):
            raise ConfigError("schedule.style epoch_cosine needs schedule.iters_per_epoch (e.g. 1000)")


@dataclass
class TrainConfig:
    """One training stage.  Stage N starts from stage N-1's final checkpoint
    (``runs/<name>/stage{N-1}/final``) when ``init_from`` is ``auto``.

    What trains is configuration: ``trainable`` / ``vision_trainable_blocks`` / ``lora`` replace
    the model config's values (e.g. ``[projector, lora]`` as published, ``vision`` with
    ``vision_trainable_blocks: 4`` for ShareGPT4V's last-blocks recipe, ``llm`` with
    ``lora: {enabled: false}`` for the full LLM)."""

    name: str = "minigptv2"
    stage: int = 1
    model: str = "../model/minigptv2_7b.yaml"  # model config YAML, relative to this file
    model_overrides: list[str] = field(default_factory=list)  # key=value onto the model config
    init_from: str | None = "auto"  # checkpoint folder / released .pth; auto = stage N-1's final; null = none
    output_dir: str | None = None  # default runs/<name>/stage<stage> (relative to the working directory)
    data_root: str = "data"  # dataset paths are relative to this (itself relative to the working directory)
    datasets: list[DatasetEntry] = field(default_factory=list)
    steps: int = 1000  # optimizer steps
    grad_accum: int = 1  # iterations per optimizer step (each iteration draws its own dataset)
    # Each process sorts its part of a drawn batch by sequence length and runs it as this many
    # forward/backward passes, each padded only to its own longest sequence: fewer padded positions
    # to compute, the same gradient (losses are summed and divided by the step's answer tokens).
    # 1 = one pass per batch.
    length_chunks: int = 1
    batch_scale: int = 1  # multiplies every dataset's batch_size (per-GPU sizes x number of GPUs)
    save_every: int = 1000
    keep_checkpoints: int = 2  # step checkpoints kept besides final/
    log_every: int = 10
    clip_grad: float | None = None  # max global grad norm; null = no clipping
    # autocast dtype (fp32 master weights): fp16 (with a GradScaler) on GPU only; bf16 on GPU and CPU;
    # auto = bf16 where the hardware has it, else fp16 on a GPU and fp32 on a CPU (mgv2.trainer.native_bf16)
    precision: AmpPrecision = "fp32"
    seed: int = 42
    num_workers: int = 2  # DataLoader workers (tokenisation, images) per process
    gradient_checkpointing: bool = False  # LLM and vision encoder
    distributed: DistributedMode = "ddp"  # fsdp shards the model for ones that do not fit one GPU
    progress: bool = True  # tqdm bar on rank 0
    # Frozen ViT only: encode every picture of the stage once before step 1 and train from those
    # tokens (no image decode / resize / ViT pass per step; same losses).  Memory: pictures x
    # (1 + patches) x ViT width per process (mgv2/vision_cache.py).  DDP or one process.
    vision_cache: bool = False
    # With vision_cache: a folder (relative to the working directory) where the table is saved under a
    # hash of the ViT weights, picture processing, autocast dtype and the pictures (path, size, mtime);
    # a later stage with the same ViT and pictures reads it instead of encoding again.  null = memory only.
    vision_cache_dir: str | None = None
    # torch.compile the LLM decoder (TorchInductor; dynamic shapes, so one graph serves every batch
    # shape).  On a CPU it needs a C++ compiler (g++ / clang++).  true = compile or stop with an
    # error; auto = compile where that is possible, else train eagerly and say why; false = eager.
    # Same losses up to float rounding; demo stage 1 ran 1.07-1.08x the steps/s (bench/compile.py).
    compile: bool | Literal["auto"] = False
    # Soft coordinate targets: each answer coordinate token <t> is scored against a Gaussian of this
    # std (in coordinate units, 0..100) over <0>..<100> (KL; SoftCoordinateLoss in mgv2/trainer.py),
    # every other token with the cross-entropy.  null = one-hot cross-entropy (the official loss).
    coord_target_sigma: float | None = None
    # Auxiliary region loss on the image tokens (RegionLossConfig); null = off (the official recipe)
    region_loss: RegionLossConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainable: list[str] | None = None  # null = the model config's
    vision_trainable_blocks: int | None = None
    lora: LoRAConfig | None = None
    base_dir: str | None = None  # folder of the YAML file (set by load_yaml)

    def __post_init__(self) -> None:
        _positive(self, "stage", "steps", "grad_accum", "length_chunks", "batch_scale", "save_every",
                  "log_every", "keep_checkpoints")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")
        if not self.datasets:
            raise ConfigError("datasets is empty; list at least one {source, task, path, ratio, batch_size}")
        names = [d.name for d in self.datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"dataset names must be unique; repeated: {dup} (set name: for each)")
        if self.coord_target_sigma is not None and not self.coord_target_sigma > 0:
            raise ConfigError(f"coord_target_sigma must be > 0 (coordinate units) or null, got {self.coord_target_sigma}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError("clip_grad must be > 0 or null")
        if self.trainable is not None:
            unknown = [p for p in self.trainable if p not in TRAINABLE_PARTS]
            if unknown:
                raise ConfigError(f"trainable: unknown part(s) {unknown}; choose from {list(TRAINABLE_PARTS)}")
        if self.vision_trainable_blocks is not None and self.vision_trainable_blocks < 0:
            raise ConfigError("vision_trainable_blocks must be >= 0")
        if self.vision_cache_dir is not None and not self.vision_cache:
            raise ConfigError("vision_cache_dir is set but vision_cache is false; set vision_cache: true "
                              "(frozen ViT) or drop vision_cache_dir")
        if self.vision_cache and self.distributed == "fsdp":
            raise ConfigError("vision_cache: true runs with distributed: ddp (or one process), not fsdp; "
                              "set vision_cache: false for a sharded model")

    # -- resolved paths ------------------------------------------------------------------------
    def path(self, value: str | None) -> Path | None:
        """A path written in this file (``model``): relative to the file's folder."""
        return resolve_path(value, Path(self.base_dir) if self.base_dir else None)

    @property
    def out_dir(self) -> Path:
        return Path(os.path.expanduser(self.output_dir or f"runs/{self.name}/stage{self.stage}"))

    def init_path(self) -> Path | None:
        """What the stage starts from: ``auto`` = stage N-1's ``final`` (none for stage 1)."""
        if self.init_from is None:
            return None
        if self.init_from == "auto":
            return None if self.stage == 1 else Path(f"runs/{self.name}/stage{self.stage - 1}/final")
        return resolve_path(self.init_from)

    def dataset_root(self, entry: DatasetEntry) -> Path:
        root = Path(os.path.expanduser(self.data_root))
        return root / os.path.expanduser(entry.path) if entry.path else root

    def reader_options(self, entry: DatasetEntry) -> dict[str, Any]:
        """The reader's keyword arguments: ``options`` plus ``images`` resolved against data_root."""
        options = dict(entry.options)
        if entry.images is not None:
            options["images"] = str(Path(os.path.expanduser(self.data_root)) / os.path.expanduser(entry.images))
        return options

    def model_config(self) -> ModelConfig:
        """The model config file plus ``model_overrides`` and this stage's trainable settings,
        validated as one ModelConfig."""
        path = self.path(self.model)
        if path is None or not path.is_file():
            raise ConfigError(f"model config not found: {path} (TrainConfig.model is relative to the train YAML)")
        cfg = load_yaml(ModelConfig, path, list(self.model_overrides))
        if self.region_loss is not None:
            if cfg.prompt_layout != "instruction_first":
                raise ConfigError(
                    f"region_loss needs the model's prompt_layout: instruction_first ({path} says "
                    f"{cfg.prompt_layout!r}: the image comes before the instruction, so no image token can "
                    "see what is asked); set model_overrides: [prompt_layout=instruction_first] or drop region_loss"
                )
            if self.region_loss.layer > cfg.llm.num_layers:
                raise ConfigError(f"region_loss.layer {self.region_loss.layer} is past the LLM's "
                                  f"{cfg.llm.num_layers} layers; use 1..{cfg.llm.num_layers}")
        data = dataclasses.asdict(cfg)
        if self.trainable is not None:
            data["trainable"] = list(self.trainable)
        if self.vision_trainable_blocks is not None:
            data["vision_trainable_blocks"] = self.vision_trainable_blocks
        if self.lora is not None:
            data["lora"] = dataclasses.asdict(self.lora)
        if self.gradient_checkpointing:
            data["llm"]["gradient_checkpointing"] = True
            data["vision"]["gradient_checkpointing"] = True
        try:
            return from_dict(ModelConfig, data)
        except ConfigError as e:
            raise ConfigError(f"the stage's model settings do not fit {path}: {e}") from None
