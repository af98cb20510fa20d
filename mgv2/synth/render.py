"""Drawing scenes with OpenCV: textured backgrounds, shaded objects, exact outlines.

Each object is filled exactly inside its shapely outline (a pixel is the object's when its
centre lies inside the outline), so the pixels agree with the boxes the scene model computes
to within a pixel.  Decorations (highlights, lids, kite spars, strings) are drawn only inside the
object's own outline.  A light blur and JPEG compression make the pictures less synthetic.
Deterministic: the background texture is seeded by the scene's ``background_seed``.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from mgv2.synth.world import COLORS, Scene, SceneObject, polygons_of

_SHIFT = 4  # cv2 fixed-point bits: vertices with 1/16 pixel precision
_STRING_RGB = (60, 60, 60)


def _pts(coords) -> np.ndarray:
    """Continuous coordinates -> cv2 fixed-point vertices at pixel centres."""
    a = (np.asarray(coords, dtype=np.float64)[:, :2] - 0.5) * (1 << _SHIFT)
    return np.round(a).astype(np.int32).reshape(-1, 1, 2)


def rasterize(geom, width: int, height: int) -> np.ndarray:
    """uint8 mask (255 inside) of a polygon or multipolygon, holes respected."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for poly in polygons_of(geom):
        cv2.fillPoly(mask, [_pts(poly.exterior.coords)], 255, lineType=cv2.LINE_8, shift=_SHIFT)
        for ring in poly.interiors:
            cv2.fillPoly(mask, [_pts(ring.coords)], 0, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def _muted(rng: np.random.Generator) -> np.ndarray:
    h = rng.uniform(0, 1)
    s = rng.uniform(0.04, 0.22)
    v = rng.uniform(0.55, 0.92)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def background(kind: str, width: int, height: int, seed: int) -> np.ndarray:
    """A textured background (float32 RGB HxWx3, 0..255) of one of ``world.BACKGROUNDS``."""
    rng = np.random.default_rng(seed)
    c1, c2 = _muted(rng).astype(np.float32), _muted(rng).astype(np.float32)
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    if kind == "plain":
        a = rng.uniform(0, np.pi)
        t = (xx * np.cos(a) + yy * np.sin(a)) / max(width, height)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "striped":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(10, 28)
        t = ((xx * np.cos(a) + yy * np.sin(a)) // period % 2).astype(np.float32)
    elif kind == "checkered":
        cell = rng.uniform(12, 32)
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == "dotted":
        t = np.zeros((height, width), np.float32)
        step = int(rng.integers(12, 24))
        r = max(2, int(step * rng.uniform(0.15, 0.3)))
        off = int(rng.integers(0, step))
        for y in range(off, height + step, step):
            for x in range(off + (y // step % 2) * step // 2, width + step, step):
                cv2.circle(t, (x, y), r, 1.0, -1, lineType=cv2.LINE_AA)
    elif kind == "speckled":
        small = rng.uniform(0, 1, size=(max(2, height // 16), max(2, width // 16))).astype(np.float32)
        t = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t, 0, 1)
    elif kind == "wavy":
        f = rng.uniform(0.03, 0.08)
        t = 0.5 + 0.5 * np.sin(yy * f + 6 * np.sin(xx * f * 0.5 + rng.uniform(0, 6)))
    else:
        raise ValueError(f"unknown background {kind!r}")
    t = np.broadcast_to(t, (height, width)).astype(np.float32)
    img = c1[None, None, :] + (c2 - c1)[None, None, :] * t[..., None]
    img += 4.0 * rng.standard_normal(size=img.shape, dtype=np.float32)
    return img


def _draw_object(canvas: np.ndarray, obj: SceneObject) -> None:
    """Paint ``obj`` onto ``canvas`` (float32 RGB) inside its exact outline."""
    height, width = canvas.shape[:2]
    x1, y1, x2, y2 = obj.outline.bounds
    bx1, by1 = max(int(np.floor(x1)) - 2, 0), max(int(np.floor(y1)) - 2, 0)
    bx2, by2 = min(int(np.ceil(x2)) + 2, width), min(int(np.ceil(y2)) + 2, height)
    full = rasterize(obj.outline, width, height)[by1:by2, bx1:bx2]
    body = rasterize(obj.parts["body"], width, height)[by1:by2, bx1:bx2]
    if not full.any():
        return
    base = np.array(COLORS[obj.color], dtype=np.float32)
    h, w = full.shape
    yy, xx = np.mgrid[by1:by2, bx1:bx2].astype(np.float32)
    # soft light from the upper left
    hx, hy = obj.cx - 0.18 * obj.size, obj.cy - 0.22 * obj.size
    d2 = ((xx - hx) ** 2 + (yy - hy) ** 2) / (0.35 * obj.size) ** 2
    light = 0.82 + 0.38 * np.exp(-d2)
    if obj.kind == "cup":  # a cylinder: brighter in the middle band
        light = 0.8 + 0.3 * np.exp(-(((xx - (obj.cx - 0.15 * obj.size)) / (0.25 * obj.size)) ** 2))
    if obj.kind == "box":
        light = np.full_like(xx, 0.95)
    layer = np.clip(base[None, None, :] * light[..., None], 0, 255)
    # decorations, clipped to the body below
    deco = np.zeros((h, w), dtype=np.uint8)
    for line in obj.parts["lines"]:
        cv2.polylines(deco, [_pts(np.asarray(line.coords) - (bx1, by1))], False, 255, 1 + int(obj.size > 60),
                      lineType=cv2.LINE_8, shift=_SHIFT)
    edge = cv2.subtract(body, cv2.erode(body, np.ones((3, 3), np.uint8)))
    dark = (deco > 0) | (edge > 0)
    layer[dark] *= 0.62
    region = canvas[by1:by2, bx1:bx2]
    inside_body = body > 0
    region[inside_body] = layer[inside_body]
    string = (full > 0) & ~inside_body
    region[string] = _STRING_RGB


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 RGB (H, W, 3)."""
    canvas = background(scene.background, scene.width, scene.height, scene.background_seed)
    for obj in scene.objects:
        _draw_object(canvas, obj)
    img = np.clip(canvas, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0.5)


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise RuntimeError("OpenCV could not encode the picture as JPEG")
    return buf.tobytes()
