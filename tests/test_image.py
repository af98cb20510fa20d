"""mgv2.image: load_image for good and bad inputs, ImageProcessor against the formula."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgv2.errors import ImageError, MGV2Error
from mgv2.image import CLIP_MEAN, CLIP_STD, ImageProcessor, load_image, to_rgb

# ---------------------------------------------------------------------------------------------
# helpers


def _png_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR width/height of a PNG and fix its CRC (no pixels are allocated)."""
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[33:]


def _exif_jpeg(orientation: int, size: tuple[int, int] = (40, 20)) -> bytes:
    img = Image.new("RGB", size, "white")
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg_bytes(img, exif=exif.tobytes())


# ---------------------------------------------------------------------------------------------
# sources


def test_sources_path_str_bytes_pil(tmp_path: Path) -> None:
    src = Image.new("RGB", (30, 20), (10, 20, 30))
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes(src))
    for source in (path, str(path), path.read_bytes(), src):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (30, 20)
        assert out.getpixel((5, 5)) == (10, 20, 30)


def test_pil_input_not_modified() -> None:
    src = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = load_image(src)
    assert out is not src and src.mode == "RGBA" and out.mode == "RGB"
    rgb = Image.new("RGB", (8, 8), "blue")
    assert load_image(rgb) is not rgb


def test_errors_are_mgv2_errors() -> None:
    assert issubclass(ImageError, MGV2Error)


# ---------------------------------------------------------------------------------------------
# bad inputs: one ImageError each, naming the problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_wrong_type() -> None:
    with pytest.raises(ImageError, match="path, bytes or a PIL image"):
        load_image(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data = _jpeg_bytes(img) if fmt == "JPEG" else _png_bytes(img)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_above_max_pixels(tmp_path: Path) -> None:
    # 10000 x 10000 = 1e8 pixels: above our 64M default and PIL's warning level, below its error.
    path = tmp_path / "bomb.png"
    path.write_bytes(_patch_png_size(_png_bytes(Image.new("RGB", (4, 4))), 10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        with pytest.raises(ImageError, match="max_pixels"):
            load_image(path)


def test_decompression_bomb_pil_error() -> None:
    # 100000 x 100000: PIL itself refuses at open(); that too becomes an ImageError.
    data = _patch_png_size(_png_bytes(Image.new("RGB", (4, 4))), 100_000, 100_000)
    with pytest.raises(ImageError, match="too large"):
        load_image(data, max_pixels=10**12)


def test_small_max_pixels() -> None:
    data = _png_bytes(Image.new("RGB", (20, 20)))
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(data, max_pixels=100)
    assert load_image(data, max_pixels=400).size == (20, 20)


def test_pil_global_limit_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError):
        load_image(_patch_png_size(_png_bytes(Image.new("RGB", (4, 4))), 10_000, 10_000))
    assert Image.MAX_IMAGE_PIXELS == before


# ---------------------------------------------------------------------------------------------
# modes -> RGB


def _roundtrip(img: Image.Image, tmp_path: Path, name: str = "m.png", **kwargs: object) -> Image.Image:
    path = tmp_path / name
    img.save(path, **kwargs)
    return load_image(path)


def test_mode_l(tmp_path: Path) -> None:
    out = _roundtrip(Image.new("L", (6, 4), 77), tmp_path)
    assert out.mode == "RGB" and out.size == (6, 4) and out.getpixel((0, 0)) == (77, 77, 77)


def test_mode_la_over_white(tmp_path: Path) -> None:
    img = Image.new("LA", (6, 4), (0, 0))
    img.putpixel((1, 1), (100, 255))
    out = _roundtrip(img, tmp_path)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (100, 100, 100)


def test_mode_rgba_over_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (6, 4), (255, 0, 0, 128))
    img.putpixel((0, 0), (0, 0, 255, 255))
    img.putpixel((1, 0), (0, 0, 0, 0))
    out = _roundtrip(img, tmp_path)
    r, g, b = out.getpixel((3, 3))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1
    assert out.getpixel((0, 0)) == (0, 0, 255)
    assert out.getpixel((1, 0)) == (255, 255, 255)


def test_mode_p_without_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (6, 4), 1)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    out = _roundtrip(img, tmp_path)
    assert out.size == (6, 4) and out.getpixel((2, 2)) == (0, 200, 0)


def test_mode_p_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (6, 4), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * (254 * 3))
    img.putpixel((1, 1), 1)
    out = _roundtrip(img, tmp_path, transparency=0)  # index 0 (black) is transparent
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (200, 0, 0)


def test_gif_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (6, 4), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.putpixel((2, 2), 1)
    out = _roundtrip(img, tmp_path, "t.gif", transparency=0)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((2, 2)) == (0, 0, 255)


def test_mode_cmyk(tmp_path: Path) -> None:
    out = _roundtrip(Image.new("CMYK", (6, 4), (0, 0, 0, 0)), tmp_path, "c.jpg")
    assert out.mode == "RGB" and out.size == (6, 4)
    assert min(out.getpixel((2, 2))) >= 250


def test_mode_16bit_png(tmp_path: Path) -> None:
    values = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)  # 32896 = 128 * 257
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = _roundtrip(img, tmp_path)
    assert [out.getpixel((x, y))[0] for y in range(2) for x in range(2)] == [0, 255, 128, 1]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_mode_16bit_white_stays_white(mode: str) -> None:
    img = Image.new(mode, (5, 3), 65535)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    mid = load_image(Image.new(mode, (5, 3), 300))  # clipping would give 255
    assert mid.getpixel((0, 0)) == (1, 1, 1)


def test_mode_16bit_tiff(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((3, 5), 65535, dtype=np.uint16))
    out = _roundtrip(img, tmp_path, "w.tiff")
    assert out.size == (5, 3) and out.getpixel((4, 2)) == (255, 255, 255)


def test_mode_i_32bit() -> None:
    img = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert img.mode == "I"
    out = load_image(img)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)


def test_mode_f() -> None:
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert img.mode == "F"
    out = load_image(img)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = load_image(Image.fromarray(np.array([[-10.0, 10.0]], dtype=np.float32)))
    assert [wide.getpixel((x, 0))[0] for x in range(2)] == [0, 255]


def test_mode_1() -> None:
    out = load_image(Image.new("1", (4, 4), 1))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_keeps_rgb_object() -> None:
    img = Image.new("RGB", (2, 2))
    assert to_rgb(img) is img


# ---------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_swaps_size(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "rot.jpg"
    path.write_bytes(_exif_jpeg(orientation))
    assert Image.open(path).size == (40, 20)
    out = load_image(path)
    assert out.size == (20, 40)
    # 6 = rotate 90 clockwise to display: the stored top-left lands top-right; 8: bottom-left.
    corner = (17, 2) if orientation == 6 else (2, 37)
    r, g, b = out.getpixel(corner)
    assert r > 200 and g < 60 and b < 60
    assert out.getexif().get(0x0112) in (None, 1)


def test_exif_normal_orientation() -> None:
    assert load_image(_exif_jpeg(1)).size == (40, 20)


# ---------------------------------------------------------------------------------------------
# ImageProcessor


def test_processor_constant_image_matches_formula() -> None:
    proc = ImageProcessor()
    color = (200, 100, 50)
    out = proc(Image.new("RGB", (300, 200), color))
    assert out.shape == (3, 448, 448) and out.dtype == torch.float32
    for c in range(3):
        expected = (color[c] / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
        assert torch.allclose(out[c], torch.full((448, 448), expected), atol=1e-5)


def test_processor_resize_is_pil_bicubic_of_whole_image() -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8))
    proc = ImageProcessor(size=28)
    ref = np.asarray(img.resize((28, 28), Image.BICUBIC), dtype=np.float32) / 255.0
    ref = (ref - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    assert np.allclose(proc(img).permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_processor_batch_and_denormalize() -> None:
    proc = ImageProcessor(size=16)
    imgs = [Image.new("RGB", (20, 10), (255, 0, 0)), Image.new("L", (7, 9), 128)]
    batch = proc.batch(imgs)
    assert batch.shape == (2, 3, 16, 16)
    assert proc.batch([]).shape == (0, 3, 16, 16)
    pic = proc.denormalize(batch[0])
    assert pic.dtype == np.uint8 and pic.shape == (16, 16, 3)
    assert (pic == np.array([255, 0, 0], dtype=np.uint8)).all()
    assert proc.denormalize(batch).shape == (2, 16, 16, 3)
    assert (proc.denormalize(batch)[1] == 128).all()


def test_processor_validation() -> None:
    with pytest.raises(ValueError):
        ImageProcessor(size=0)
    with pytest.raises(ValueError):
        ImageProcessor(std=(1.0, 0.0, 1.0))
    with pytest.raises(TypeError):
        ImageProcessor()(np.zeros((4, 4, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ImageProcessor().denormalize(torch.zeros(4, 4))
