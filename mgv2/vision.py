"""EVA ViT-g, the frozen image encoder of MiniGPT-v2 (SPEC §1).

The module tree and parameter names are exactly those of BLIP-2/LAVIS ``eva_vit.py`` so that
``eva_vit_g.pth`` loads with ``strict=True``:

``cls_token`` [1,1,W], ``pos_embed`` [1,1+grid²,W], ``patch_embed.proj`` (Conv2d, kernel = stride =
patch), and per block ``blocks.{i}.norm1``, ``.attn.qkv`` (no bias), ``.attn.q_bias``,
``.attn.v_bias``, ``.attn.proj``, ``.norm2``, ``.mlp.fc1``, ``.mlp.fc2``.

Precision.  :func:`apply_official_precision` reproduces the official fp16 layout: Conv2d/Linear
weights and biases in fp16 (or bf16), everything else (LayerNorms, ``pos_embed``, ``cls_token``,
``q_bias``, ``v_bias``) fp32.  The forward then behaves like the official code run under CUDA
autocast: every Conv2d/Linear (and the attention core) computes in its weight dtype, LayerNorm
computes in fp32, and the residual stream keeps the dtype of ``pos_embed`` (fp32 in that
layout).  :meth:`EVAViT.forward` therefore returns the residual-stream dtype: fp32 for the
official layout and for a plain fp32 model, fp16/bf16 only if the whole module was cast.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mgv2.config import VisionConfig
from mgv2.errors import CheckpointError

EVA_VIT_G_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"

# Top-level modules of EVA-CLIP-g that the BLIP-2 encoder (no final norm, no head, no
# relative position bias) does not have; a file may carry them and they are skipped.
_IGNORED_PREFIXES = ("norm.", "head.", "fc_norm.", "rel_pos_bias.")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------------
# layers


class _CastLinear(nn.Linear):
    """``nn.Linear`` that casts its input to its weight dtype (mixed fp16/fp32 layout)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class _CastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that casts its input to its weight dtype (mixed fp16/fp32 layout)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.to(self.weight.dtype))


class _FP32LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32 whatever the input/parameter dtype; the result has
    the input dtype (as under autocast, where layer_norm runs in fp32)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: [B,3,H,W] -> [B, grid², W]."""

    def __init__(self, img_size: int, patch_size: int, width: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = _CastConv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.img_size or x.shape[3] != self.img_size:
            raise ValueError(
                f"EVA ViT expects pixel_values [B, 3, {self.img_size}, {self.img_size}], got {list(x.shape)}; "
                "resize images with the model's image processor (vision.img_size)"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with the EVA bias layout: ``qkv`` has no bias of its own; the
    bias is ``cat(q_bias, 0, v_bias)`` (the key bias is zero and not a parameter)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim**-0.5
        self.qkv = _CastLinear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = _CastLinear(width, width)

    def qkv_bias(self) -> Tensor:
        """The full qkv bias ``cat(q_bias, zeros, v_bias)``; the zero part has no gradient."""
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        dtype = self.qkv.weight.dtype
        qkv = F.linear(x.to(dtype), self.qkv.weight, self.qkv_bias().to(dtype))
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = _CastLinear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = _CastLinear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.  Branch
    outputs are cast to the residual-stream dtype before the sum."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = _FP32LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = _FP32LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x)).to(x.dtype)
        return x + self.mlp(self.norm2(x)).to(x.dtype)


def sincos_2d(grid: int, width: int, cols: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
    """MAE's fixed 2D sin-cos position table [grid*grid, width] (raster order): half the
    channels encode the row, half the column, each as sin/cos pairs over geometric frequencies.
    ``cols`` (positions, in the rows' units) gives a ``grid x len(cols)`` table instead, and
    ``rows`` a ``len(rows)`` x columns one."""
    if width % 4:
        raise ValueError(f"sin-cos position embedding needs width divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    col_pos = pos if cols is None else torch.as_tensor(cols, dtype=torch.float64)
    row_pos = pos if rows is None else torch.as_tensor(rows, dtype=torch.float64)
    rows_, cols_ = torch.meshgrid(row_pos, col_pos, indexing="ij")

    def enc(v: Tensor) -> Tensor:
        out = v.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat((out.sin(), out.cos()), dim=1)

    return torch.cat((enc(cols_), enc(rows_)), dim=1).float()


class EVAViT(nn.Module):
    """EVA ViT-g as used by BLIP-2 / MiniGPT-v2 (the official ``forward_features``).

    ``forward(pixel_values [B,3,H,W]) -> [B, 1 + grid², width]``: all tokens, CLS first, no final
    norm.  The output dtype is that of ``pos_embed`` (fp32 in the official mixed layout).
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.width
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self._init_weights()

    def _init_weights(self) -> None:
        """The official random init (only matters without a checkpoint): truncated normal 0.02
        for embeddings and Linear weights, zero biases, unit LayerNorms, and the residual
        output projections scaled by ``1/sqrt(2 * layer_id)``."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if getattr(self.cfg, "pos_embed_init", "trunc_normal") == "sincos":
            with torch.no_grad():
                self.pos_embed.zero_()
                self.pos_embed[0, 1:] = sincos_2d(self.cfg.grid, self.cfg.width)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer_id, blk in enumerate(self.blocks, start=1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.patch_embed(pixel_values).to(self.pos_embed.dtype)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = x + self.pos_embed
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
        return x


# ---------------------------------------------------------------------------------------------
# precision


def apply_official_precision(vit: EVAViT, dtype: torch.dtype = torch.float16) -> EVAViT:
    """Cast Conv2d/Linear weights and biases to ``dtype`` (fp16 = the official layout, bf16 the
    variant); LayerNorms, ``pos_embed``, ``cls_token``, ``q_bias``, ``v_bias`` are set to fp32.
    ``dtype=torch.float32`` restores a plain fp32 model.  Parameters keep their identity and
    ``requires_grad``.  Returns ``vit``.  Load checkpoints before calling this (loading copies
    into the current dtypes)."""
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"vision precision must be float16, bfloat16 or float32, got {dtype}")
    for module in vit.modules():
        low = isinstance(module, (nn.Linear, nn.Conv2d))
        for p in module.parameters(recurse=False):
            p.data = p.data.to(dtype if low else torch.float32)
    return vit


# ---------------------------------------------------------------------------------------------
# checkpoints


def interpolate_pos_embed(pos_embed: Tensor, new_grid: int) -> Tensor:
    """Resize an absolute position embedding [1, 1+g0², W] to [1, 1+new_grid², W].

    As the official ``interpolate_pos_embed``: the CLS position is kept, the g0 x g0 grid is
    resized with bicubic interpolation (align_corners=False) in fp32.  Returns the input
    unchanged when the grids already match; otherwise the result is fp32.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be [1, 1+grid^2, width], got {list(pos_embed.shape)}")
    n, width = pos_embed.shape[1] - 1, pos_embed.shape[2]
    old_grid = math.isqrt(n)
    if old_grid * old_grid != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid (plus one CLS position)")
    if old_grid == new_grid:
        return pos_embed
    pos = pos_embed.float()
    grid = pos[:, 1:].reshape(1, old_grid, old_grid, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


@dataclass
class LoadReport:
    """What :func:`load_eva_checkpoint` did."""

    loaded: int
    ignored: list[str] = field(default_factory=list)  # keys in the file skipped by design
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors"]
        if self.ignored:
            groups = Counter(_ignored_group(k) for k in self.ignored)
            listed = ", ".join(f"{g}* ({c})" for g, c in sorted(groups.items()))
            parts.append(f"ignored by design: {listed}")
        parts.extend(self.notes)
        return "; ".join(parts)


def _ignored_group(key: str) -> str:
    m = _BLOCK_KEY.match(key)
    return m.group(0) if m else key.split(".", 1)[0] + "."


def _is_ignored_by_design(key: str, depth: int) -> bool:
    m = _BLOCK_KEY.match(key)
    if m:
        return int(m.group(1)) >= depth
    return key.startswith(_IGNORED_PREFIXES)


def _read_state_dict(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise CheckpointError(
            f"EVA ViT checkpoint not found: {path}; download eva_vit_g.pth (BLIP-2, {EVA_VIT_G_URL}) "
            "and set vision.checkpoint to its path, or set it to null for random weights"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    # The weights-only unpickler raises arbitrary exception types on a damaged or foreign file
    # (IndexError, KeyError, UnpicklingError, RuntimeError, ...), so every Exception is reported.
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch weight file ({type(e).__name__}: {e}); "
            "expected eva_vit_g.pth from BLIP-2 saved with torch.save"
        ) from e
    for nest in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(nest), Mapping):
            obj = obj[nest]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def _head(keys: list[str], n: int = 10) -> str:
    return f"{keys[:n]}{' ...' if len(keys) > n else ''}"


def _nesting_hint(missing: list[str], file_keys: list[str]) -> str:
    """If the file holds our keys under a prefix (e.g. ``visual_encoder.``), say so."""
    if not missing:
        return ""
    for key in file_keys:
        if key.endswith("." + missing[0]):
            prefix = key[: -len(missing[0])]
            return (
                f" The file has '{key}': its encoder weights seem nested under '{prefix}'; strip that prefix."
            )
    return ""


def load_eva_checkpoint(vit: EVAViT, path: str | Path) -> LoadReport:
    """Load EVA ViT-g weights (``eva_vit_g.pth``) into ``vit``, strictly.

    Accepts a raw state dict or one nested under ``"model"``/``"state_dict"``.  ``pos_embed`` is
    resized from the file's grid (derived from its length) to the model's.  Keys the model does
    not have are allowed only if they are known by-design extras — ``blocks.{i}.*`` with
    ``i >= depth`` (EVA-CLIP-g's 40th block) and ``norm.*``/``head.*``/``fc_norm.*``/
    ``rel_pos_bias.*`` — and are listed in ``LoadReport.ignored``.  Anything else (an unknown key,
    a missing key, a wrong shape, an unreadable file) raises :class:`CheckpointError`.
    """
    path = Path(path)
    sd = _read_state_dict(path)
    cfg = vit.cfg
    expected = vit.state_dict()
    arch = f"is this an EVA ViT-g checkpoint? vision config says width={cfg.width}, depth={cfg.depth}"

    ignored = sorted(k for k in sd if k not in expected and _is_ignored_by_design(k, cfg.depth))
    unexpected = sorted(k for k in sd if k not in expected and k not in ignored)
    missing = [k for k in expected if k not in sd]
    if unexpected or missing:
        problems = []
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s) {_head(unexpected)}")
        if missing:
            problems.append(f"{len(missing)} missing key(s) {_head(missing)}")
        raise CheckpointError(
            f"{path}: {' and '.join(problems)} ({arch}). Pass the BLIP-2 eva_vit_g.pth or a state dict "
            "with exactly the encoder's keys; a shallower checkpoint cannot fill a deeper model "
            f"(lower vision.depth).{_nesting_hint(missing, list(sd))}"
        )

    notes: list[str] = []
    tensors: dict[str, Tensor] = {}
    for key, want in expected.items():
        value = sd[key]
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: '{key}' is a {type(value).__name__}, not a tensor")
        if key == "pos_embed" and value.ndim == 3 and value.shape[0] == 1 and value.shape[-1] == cfg.width:
            value = _resize_pos_embed(value, cfg, path, notes)
        if value.shape != want.shape:
            raise CheckpointError(
                f"{path}: '{key}' has shape {list(value.shape)}, the model expects {list(want.shape)}; {arch}"
            )
        tensors[key] = value
    vit.load_state_dict(tensors, strict=True)
    return LoadReport(loaded=len(tensors), ignored=ignored, notes=notes)


def _resize_pos_embed(value: Tensor, cfg: VisionConfig, path: Path, notes: list[str]) -> Tensor:
    """Resize the file's position grid to the model's, recording what was done in ``notes``."""
    n = value.shape[1] - 1
    file_grid = math.isqrt(max(n, 0))
    if file_grid * file_grid != n:
        raise CheckpointError(f"{path}: 'pos_embed' has {n} patch positions, not a square grid plus CLS")
    if file_grid != cfg.grid:
        note = f"pos_embed resized {file_grid}x{file_grid} -> {cfg.grid}x{cfg.grid} (bicubic, fp32)"
        ckpt_grid = cfg.checkpoint_img_size // cfg.patch_size
        if file_grid != ckpt_grid:
            note += f" (vision.checkpoint_img_size implies {ckpt_grid}x{ckpt_grid}; the file's grid was used)"
        notes.append(note)
    return interpolate_pos_embed(value, cfg.grid)
