"""EVA ViT-g: structure, official key names, checkpoint loading, attention parity, precision."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mgv2.config import VisionConfig
from mgv2.errors import CheckpointError
from mgv2.vision import EVAViT, apply_official_precision, interpolate_pos_embed, load_eva_checkpoint

WIDTH, DEPTH, HEADS, PATCH = 32, 2, 4, 14


def vision_cfg(img_size: int = 56, depth: int = DEPTH, **kw: object) -> VisionConfig:
    return VisionConfig(img_size=img_size, patch_size=PATCH, width=WIDTH, depth=depth, heads=HEADS, **kw)


def official_state_dict(cfg: VisionConfig, grid: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict written from the SPEC §1 key list (not from the model), random values."""
    g = torch.Generator().manual_seed(seed)
    w, h = cfg.width, cfg.mlp_hidden
    grid = cfg.grid if grid is None else grid
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, w),
        "pos_embed": (1, grid * grid + 1, w),
        "patch_embed.proj.weight": (w, 3, cfg.patch_size, cfg.patch_size),
        "patch_embed.proj.bias": (w,),
    }
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (w,),
            b + "norm1.bias": (w,),
            b + "attn.qkv.weight": (3 * w, w),
            b + "attn.q_bias": (w,),
            b + "attn.v_bias": (w,),
            b + "attn.proj.weight": (w, w),
            b + "attn.proj.bias": (w,),
            b + "norm2.weight": (w,),
            b + "norm2.bias": (w,),
            b + "mlp.fc1.weight": (h, w),
            b + "mlp.fc1.bias": (h,),
            b + "mlp.fc2.weight": (w, h),
            b + "mlp.fc2.bias": (w,),
        }
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


def pixels(cfg: VisionConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(seed))


def save(tmp_path: Path, obj: object, name: str = "eva.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------------------------------------
# structure


def test_output_shape_and_cls_first() -> None:
    cfg = vision_cfg()
    vit = EVAViT(cfg).eval()
    out = vit(pixels(cfg))
    assert out.shape == (2, 1 + cfg.num_patches, WIDTH)
    assert out.dtype == torch.float32


def test_wrong_image_size_is_refused() -> None:
    vit = EVAViT(vision_cfg())
    with pytest.raises(ValueError, match="56"):
        vit(torch.zeros(1, 3, 42, 42))


def test_official_key_names_load_strict() -> None:
    cfg = vision_cfg()
    vit = EVAViT(cfg)
    sd = official_state_dict(cfg)
    vit.load_state_dict(sd, strict=True)
    for k, v in vit.state_dict().items():
        torch.testing.assert_close(v, sd[k])


def test_full_size_shapes() -> None:
    cfg = VisionConfig()
    with torch.device("meta"):
        vit = EVAViT(cfg)
    assert vit.pos_embed.shape == (1, 1025, 1408)
    assert vit.blocks[0].mlp.fc1.weight.shape == (6144, 1408)
    assert vit.blocks[0].attn.head_dim == 88
    assert len(vit.blocks) == 39
    n = sum(p.numel() for p in vit.parameters())
    assert 985e6 < n < 990e6  # EVA ViT-g without its 40th block at 448 px


# ---------------------------------------------------------------------------------------------
# attention


def reference_attention(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official explicit form: qkv with cat(q_bias, 0, v_bias), softmax(q*scale @ k^T) @ v."""
    b, n, c = x.shape
    bias = torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias))
    qkv = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = ((q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return F.linear((a @ v).transpose(1, 2).reshape(b, n, c), attn.proj.weight, attn.proj.bias)


def reference_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x + reference_attention(blk.attn, F.layer_norm(x, (WIDTH,), blk.norm1.weight, blk.norm1.bias, 1e-6))
    h = F.layer_norm(x, (WIDTH,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    return x + F.linear(
        F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias
    )


def test_attention_and_block_match_explicit_reference() -> None:
    cfg = vision_cfg()
    vit = EVAViT(cfg).eval()
    vit.load_state_dict(official_state_dict(cfg), strict=True)
    x = torch.randn(2, 1 + cfg.num_patches, WIDTH, generator=torch.Generator().manual_seed(3))
    blk = vit.blocks[0]
    with torch.no_grad():
        torch.testing.assert_close(blk.attn(x), reference_attention(blk.attn, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(blk(x), reference_block(blk, x), rtol=1e-5, atol=1e-5)


def test_key_bias_is_zero_and_not_a_parameter() -> None:
    cfg = vision_cfg()
    vit = EVAViT(cfg)
    vit.load_state_dict(official_state_dict(cfg), strict=True)
    attn = vit.blocks[0].attn
    assert {n for n, _ in attn.named_parameters()} == {
        "qkv.weight",
        "q_bias",
        "v_bias",
        "proj.weight",
        "proj.bias",
    }
    bias = attn.qkv_bias()
    assert torch.equal(bias[WIDTH : 2 * WIDTH], torch.zeros(WIDTH))
    # Gradient flows to q_bias and v_bias only; the zero key bias is a constant.
    grads = torch.autograd.grad(bias.sum(), [attn.q_bias, attn.v_bias])
    assert all(torch.equal(g, torch.ones(WIDTH)) for g in grads)

    x = torch.randn(1, 5, WIDTH, generator=torch.Generator().manual_seed(4))
    attn(x).sum().backward()
    assert attn.q_bias.grad is not None and attn.q_bias.grad.abs().sum() > 0
    assert attn.v_bias.grad is not None and attn.v_bias.grad.abs().sum() > 0
    with torch.no_grad():
        before = attn(x)
        attn.q_bias.add_(0.5)
        assert not torch.allclose(attn(x), before)


# ---------------------------------------------------------------------------------------------
# position embedding and checkpoint loading


def test_interpolate_pos_embed_matches_direct_interpolate() -> None:
    pe = torch.randn(1, 1 + 16 * 16, WIDTH)
    out = interpolate_pos_embed(pe, 32)
    grid = pe[:, 1:].reshape(1, 16, 16, WIDTH).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
    assert out.shape == (1, 1 + 32 * 32, WIDTH)
    torch.testing.assert_close(out[:, 0], pe[:, 0])
    torch.testing.assert_close(out[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 1024, WIDTH))
    assert interpolate_pos_embed(pe, 16) is pe
    with pytest.raises(ValueError, match="square"):
        interpolate_pos_embed(torch.zeros(1, 1 + 15, WIDTH), 4)


def test_load_checkpoint_224_into_448_with_extra_block(tmp_path: Path) -> None:
    cfg = vision_cfg(img_size=448)
    sd = official_state_dict(vision_cfg(img_size=448, depth=DEPTH + 1), grid=16).copy()
    sd["norm.weight"] = torch.ones(WIDTH)  # EVA-CLIP extras, skipped by design
    sd["norm.bias"] = torch.zeros(WIDTH)
    vit = EVAViT(cfg)
    report = load_eva_checkpoint(vit, save(tmp_path, {"model": sd}))

    grid = sd["pos_embed"][:, 1:].reshape(1, 16, 16, WIDTH).permute(0, 3, 1, 2)
    want = F.interpolate(grid.float(), size=(32, 32), mode="bicubic", align_corners=False)
    want = torch.cat((sd["pos_embed"][:, :1], want.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)
    torch.testing.assert_close(vit.pos_embed.data, want)
    torch.testing.assert_close(vit.blocks[1].mlp.fc2.weight.data, sd["blocks.1.mlp.fc2.weight"])

    extra_block = sorted(k for k in sd if k.startswith(f"blocks.{DEPTH}."))
    assert len(extra_block) == 13
    assert report.ignored == sorted([*extra_block, "norm.bias", "norm.weight"])
    assert report.loaded == len(vit.state_dict())
    summary = report.summary()
    assert f"blocks.{DEPTH}.* (13)" in summary and "16x16 -> 32x32" in summary


@pytest.mark.parametrize("nest", [None, "model", "state_dict"])
def test_load_checkpoint_nesting(tmp_path: Path, nest: str | None) -> None:
    cfg = vision_cfg()
    sd = official_state_dict(cfg)
    vit = EVAViT(cfg)
    report = load_eva_checkpoint(vit, save(tmp_path, sd if nest is None else {nest: sd}))
    assert report.ignored == [] and report.notes == []
    torch.testing.assert_close(vit.cls_token.data, sd["cls_token"])


def _load_error(tmp_path: Path, sd: dict[str, torch.Tensor]) -> str:
    with pytest.raises(CheckpointError) as info:
        load_eva_checkpoint(EVAViT(vision_cfg()), save(tmp_path, sd))
    return str(info.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    sd = official_state_dict(vision_cfg()) | {"blocks.0.attn.k_bias": torch.zeros(WIDTH)}
    assert "blocks.0.attn.k_bias" in _load_error(tmp_path, sd)


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    sd = official_state_dict(vision_cfg())
    del sd["blocks.1.attn.v_bias"]
    assert "blocks.1.attn.v_bias" in _load_error(tmp_path, sd)


def test_nested_prefix_gets_a_hint(tmp_path: Path) -> None:
    sd = {f"visual_encoder.{k}": v for k, v in official_state_dict(vision_cfg()).items()}
    msg = _load_error(tmp_path, sd)
    assert "visual_encoder." in msg and "missing" in msg


def test_wrong_shape_is_an_error(tmp_path: Path) -> None:
    sd = official_state_dict(vision_cfg())
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(7, WIDTH)
    msg = _load_error(tmp_path, sd)
    assert "blocks.0.mlp.fc1.weight" in msg and "[7, 32]" in msg and f"width={WIDTH}" in msg


def test_wrong_width_pos_embed_is_an_error(tmp_path: Path) -> None:
    sd = official_state_dict(vision_cfg())
    sd["pos_embed"] = torch.zeros(1, 17, WIDTH * 2)
    assert "pos_embed" in _load_error(tmp_path, sd)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    vit = EVAViT(vision_cfg())
    with pytest.raises(CheckpointError, match="not found"):
        load_eva_checkpoint(vit, tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="not a readable PyTorch"):
        load_eva_checkpoint(vit, junk)
    with pytest.raises(CheckpointError, match="state dict"):
        load_eva_checkpoint(vit, save(tmp_path, [1, 2, 3], "list.pth"))


# ---------------------------------------------------------------------------------------------
# precision and gradient checkpointing


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_official_precision_layout(dtype: torch.dtype) -> None:
    cfg = vision_cfg()
    vit = EVAViT(cfg).eval()
    vit.load_state_dict(official_state_dict(cfg), strict=True)
    x = pixels(cfg)
    with torch.no_grad():
        ref = vit(x)
    apply_official_precision(vit, dtype)
    fp32 = {"cls_token", "pos_embed"}
    for name, p in vit.named_parameters():
        low = name.startswith("patch_embed.proj.") or any(
            s in name for s in (".qkv.", ".proj.", ".fc1.", ".fc2.")
        )
        if name.endswith(("q_bias", "v_bias")) or ".norm" in name or name in fp32:
            assert p.dtype == torch.float32, name
        else:
            assert low and p.dtype == dtype, name
    with torch.no_grad():
        out = vit(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)
    apply_official_precision(vit, torch.float32)
    assert all(p.dtype == torch.float32 for p in vit.parameters())


def test_gradient_checkpointing_gives_same_gradients() -> None:
    cfg = vision_cfg()
    plain = EVAViT(cfg).train()
    plain.load_state_dict(official_state_dict(cfg), strict=True)
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing = True
    x = pixels(cfg)
    for model in (plain, ckpt):
        model(x).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert a.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_gradient_checkpointing_flag_from_config() -> None:
    assert EVAViT(vision_cfg(gradient_checkpointing=True)).gradient_checkpointing
