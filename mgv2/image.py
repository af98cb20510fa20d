"""Reading images and turning them into model input (SPEC §2).

:func:`load_image` is the one way into the project for a picture: a path, raw bytes or a PIL
image become a fully decoded RGB :class:`PIL.Image.Image` whose size is the size a person sees
(EXIF orientation applied), because boxes are relative to that size.  Every bad input raises
one :class:`~mgv2.errors.ImageError` whose message names the problem and the fix.

Colour handling (documented behaviour):

* transparency (RGBA, LA, PA, ``P``/``L``/``RGB`` with a transparent colour) is composited onto
  a **white** background, as a viewer would show it on a white page;
* 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I``) is scaled to 8 bits by its bit depth
  (``v * 255 / (2**bits - 1)``; TIFF ``BitsPerSample`` is used when present) rather than clipped;
* 32-bit float (``F``) in 0..1 is multiplied by 255, any other range is stretched min..max;
* CMYK and the other modes use Pillow's own conversion (ICC profiles are not applied).

:class:`ImageProcessor` is the official ``Resize((448, 448), BICUBIC)`` + ``ToTensor`` +
``Normalize`` without torchvision.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mgv2.errors import ImageError

log = logging.getLogger(__name__)

ImageSource = str | Path | bytes | bytearray | Image.Image

MAX_PIXELS = 64_000_000  # default limit on width * height (a 8000 x 8000 photo)

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# What Pillow raises while parsing or decoding a damaged file.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


# ---------------------------------------------------------------------------------------------
# loading


def _describe(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return str(source)


def _check_pixels(img: Image.Image, what: str, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} has an empty size {width}x{height}; use a picture with pixels in it")
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (a decompression bomb or a huge scan); downscale it first, or pass a "
            "larger max_pixels if you trust the file"
        )


def _open(source: ImageSource, what: str) -> Image.Image:
    """Open lazily (header only).  Raises ImageError for every unreadable source."""
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the image data is empty (0 bytes); pass the bytes of a JPEG/PNG/... file")
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ImageError(f"image file not found: {path}; check the path (and the working directory)")
        if path.is_dir():
            raise ImageError(
                f"{path} is a directory, not an image file; pass the path of one image inside it"
            )
        try:
            size = path.stat().st_size
        except OSError as err:
            raise ImageError(f"cannot read image file {path}: {err}; check its permissions") from None
        if size == 0:
            raise ImageError(f"image file {path} is empty (0 bytes); re-download or re-export it")
        stream = path
    try:
        return Image.open(stream)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{what} is too large to decode safely ({err}); downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{what} is not an image Pillow can read (wrong extension, a text/HTML file, or an "
            "unsupported format); convert it to JPEG or PNG"
        ) from None
    except PermissionError as err:
        raise ImageError(f"cannot read image file {what}: {err}; check its permissions") from None
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"{what} is corrupt, its header cannot be read ({type(err).__name__}: {err}); "
            "re-download or re-export the file"
        ) from None


def _decode(img: Image.Image, what: str) -> None:
    """Force a full decode so truncated or corrupt data fails here, not later."""
    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise ImageError(f"{what} is too large to decode safely ({err}); downscale it first") from None
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"{what} is truncated or corrupt ({type(err).__name__}: {err}); re-download or re-export the file"
        ) from None


def _exif_transpose(img: Image.Image, what: str) -> Image.Image:
    """Apply the EXIF orientation (returns a new image).  Broken EXIF keeps the stored pixels."""
    try:
        out = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS + (KeyError, ZeroDivisionError) as err:
        log.warning("%s: EXIF orientation unreadable (%s); using the stored orientation", what, err)
        return img.copy()
    return out if out is not None else img.copy()


def _sixteen_bit_depth(img: Image.Image, values: np.ndarray) -> int:
    """Bit depth of a 16/32-bit integer grey image: TIFF BitsPerSample, else the mode's."""
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        if isinstance(bits, tuple):
            bits = bits[0] if bits else None
        if isinstance(bits, int) and 1 <= bits <= 32:
            return bits
    if img.mode in _SIXTEEN_BIT_MODES:
        return 16
    # mode "I" (int32): 16-bit sources (PNG/TIFF read as "I") fit in 0..65535.
    return 16 if values.size == 0 or (values.min() >= 0 and values.max() <= 65535) else 32


def _integer_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    bits = _sixteen_bit_depth(img, values)
    if bits == 32 and values.size:  # signed or unknown range: stretch what is there
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    else:
        scaled = values * (255.0 / float(2**bits - 1))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _float_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif hi > lo:
        scaled = (values - lo) / (hi - lo) * 255.0
    else:
        scaled = np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (see the module notes: alpha over white, 16-bit scaled)."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        return _integer_to_l(img).convert("RGB")
    if img.mode == "F":
        return _float_to_l(img).convert("RGB")
    has_alpha = img.mode in _ALPHA_MODES or img.info.get("transparency") is not None
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read ``source`` (path, bytes or PIL image) into a fully decoded RGB image.

    The returned size is the displayed size (EXIF orientation applied); the caller's PIL image
    is never modified.  ``width * height`` is checked against ``max_pixels`` from the header,
    before any pixel is decoded.  Pillow's own decompression-bomb check (its global
    ``Image.MAX_IMAGE_PIXELS``, left untouched) still refuses images above twice that value;
    its warning is silenced because ``max_pixels`` is the limit that decides here.

    Raises:
        ImageError: missing file, directory, empty file, not an image, truncated/corrupt data,
            too many pixels, or a mode that cannot become RGB.
    """
    if not isinstance(source, (str, Path, bytes, bytearray, Image.Image)):
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; pass a path, bytes or a PIL image"
        )
    if max_pixels <= 0:
        raise ImageError(f"max_pixels must be positive, got {max_pixels}")
    what = _describe(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if isinstance(source, Image.Image):
            img = source
            _check_pixels(img, what, max_pixels)
            _decode(img, what)
            return _finish(img, what)
        with _open(source, what) as img:
            _check_pixels(img, what, max_pixels)
            _decode(img, what)
            return _finish(img, what)


def _finish(img: Image.Image, what: str) -> Image.Image:
    """EXIF orientation, then RGB; always a new image detached from any file."""
    upright = _exif_transpose(img, what)
    try:
        rgb = to_rgb(upright)
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"{what} has colour mode {img.mode!r}, which cannot be converted to RGB ({err}); "
            "re-export it as an RGB JPEG or PNG"
        ) from None
    return rgb.copy() if rgb is img else rgb


# ---------------------------------------------------------------------------------------------
# model input


@dataclass(frozen=True)
class ImageProcessor:
    """``Resize((size, size), BICUBIC)`` of the whole image (aspect ratio not kept, no crop),
    scale to 0..1, normalise with the CLIP mean/std (SPEC §2)."""

    size: int = 448
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"ImageProcessor.size must be a positive integer, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("ImageProcessor.mean and .std need three values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageProcessor.std must be positive, got {self.std}")

    def _stats(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (3, 1, 1) if ndim == 3 else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return mean, std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """One PIL image (any mode) -> float32 tensor [3, size, size]."""
        if not isinstance(img, Image.Image):
            raise TypeError(f"ImageProcessor expects a PIL image, got {type(img).__name__}; use load_image()")
        rgb = to_rgb(img)
        resized = rgb.resize((self.size, self.size), Image.BICUBIC)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        mean, std = self._stats(3)
        return (tensor - mean) / std

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Several images -> [N, 3, size, size] (N may be 0)."""
        if not images:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.float32)
        return torch.stack([self(img) for img in images])

    def denormalize(self, tensor: torch.Tensor) -> np.ndarray:
        """Undo :meth:`__call__`: [3, H, W] -> uint8 [H, W, 3] (or [N, 3, H, W] -> [N, H, W, 3])."""
        if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
            raise ValueError(f"denormalize expects [3, H, W] or [N, 3, H, W], got {tuple(tensor.shape)}")
        mean, std = self._stats(tensor.ndim)
        values = tensor.detach().to("cpu", torch.float32) * std + mean
        pixels = (values * 255.0).round().clamp(0, 255).to(torch.uint8)
        return pixels.movedim(-3, -1).numpy()
