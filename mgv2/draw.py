"""Drawing answers on pictures (SPEC §8) with supervision.

Each phrase's boxes share one colour and carry the phrase as a label; a bare box (``refer``,
phrase ``None``) is drawn without a label.  A label sits above its box, or just below it when
there is no room above, so that it does not hide the box's top edge.  Colours come from
supervision's default palette in the order keys first appear in the answer, so
:func:`phrase_colors` gives a UI the same colour for the phrase in the answer text as for its
boxes.

Boxes are read with :mod:`mgv2.boxes` only (``to_pixels`` against the image's own size).
Inverted or zero-area boxes are skipped when drawing (they are already listed in
``Parsed.issues``); the picture is returned anyway.

Labels use OpenCV's Hershey font (supervision's ``LabelAnnotator``), which has ASCII glyphs
only: other characters show as ``?``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
from PIL import Image

from mgv2 import boxes as B
from mgv2.image import to_rgb
from mgv2.io import atomic_path

PALETTE: sv.ColorPalette = sv.ColorPalette.DEFAULT
GT_COLOR = "#00C800"  # ground truth in comparison pictures
PRED_COLOR = "#FF2020"  # prediction in comparison pictures
LABEL_PADDING = 10  # pixels around a label's text (supervision's default)

BoxGroup = tuple[str | None, Sequence[Sequence[float]]]
ColorLike = str | sv.Color


def _as_color(color: ColorLike) -> sv.Color:
    return color if isinstance(color, sv.Color) else sv.Color.from_hex(color)


def _text_color(background: sv.Color) -> sv.Color:
    """Black or white, whichever reads better on ``background``."""
    luminance = 0.299 * background.r + 0.587 * background.g + 0.114 * background.b
    return sv.Color.BLACK if luminance > 150 else sv.Color.WHITE


def _keys(parsed: B.Parsed) -> list[str | None]:
    """Colour keys (phrase, or None for bare boxes) in order of first appearance."""
    keys: list[str | None] = []
    for group in parsed.groups:
        if group.phrase not in keys:
            keys.append(group.phrase)
    return keys


def _key_colors(parsed: B.Parsed) -> dict[str | None, sv.Color]:
    return {key: PALETTE.by_idx(i) for i, key in enumerate(_keys(parsed))}


def phrase_colors(parsed: B.Parsed) -> dict[str, str]:
    """Phrase -> colour hex (``#rrggbb``) for every phrase that has a drawable box.

    The colours are exactly those :func:`draw_parsed` uses; the same answer always gives the same
    mapping, and a phrase that occurs twice has one colour.
    """
    colors = _key_colors(parsed)
    drawn = {g.phrase for g in parsed.groups if g.phrase is not None and any(b.valid for b in g.boxes)}
    return {key: color.as_hex() for key, color in colors.items() if key is not None and key in drawn}


def _clean_box(xyxy: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """Clip a pixel box into the picture; None when it is not finite or has no area."""
    if len(xyxy) != 4:
        return None
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None
    x1, x2 = (min(max(v, 0.0), width - 1.0) for v in (x1, x2))
    y1, y2 = (min(max(v, 0.0), height - 1.0) for v in (y1, y2))
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def draw_boxes(
    image: Image.Image,
    groups: Sequence[BoxGroup],
    colors: Sequence[ColorLike] | None = None,
    thickness: int | None = None,
    text_scale: float | None = None,
) -> Image.Image:
    """Draw groups of pixel boxes ``(label or None, [xyxy, ...])`` on a copy of ``image``.

    ``colors`` gives one colour per group (hex text or ``sv.Color``; default: the palette in
    group order), e.g. ``[GT_COLOR, PRED_COLOR]`` for ground truth vs prediction.  Boxes are
    clipped to the picture; boxes with no area are skipped.  ``thickness`` and ``text_scale``
    default to values suited to the picture's size.  The input image is not modified.
    """
    if colors is not None and len(colors) != len(groups):
        raise ValueError(f"draw_boxes got {len(colors)} colours for {len(groups)} groups; give one per group")
    canvas = to_rgb(image).copy()  # supervision draws into the PIL image it is given
    width, height = canvas.size
    palette = (
        [_as_color(c) for c in colors]
        if colors is not None
        else [PALETTE.by_idx(i) for i in range(len(groups))]
    )

    xyxy: list[tuple[float, float, float, float]] = []
    class_ids: list[int] = []
    labels: list[str | None] = []
    for index, (label, group_boxes) in enumerate(groups):
        for box in group_boxes:
            clean = _clean_box(box, width, height)
            if clean is None:
                continue
            xyxy.append(clean)
            class_ids.append(index)
            labels.append(label)
    if not xyxy:
        return canvas

    resolution = (width, height)
    color_palette = sv.ColorPalette(colors=palette)
    detections = sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32), class_id=np.asarray(class_ids, dtype=int)
    )
    box_annotator = sv.BoxAnnotator(
        color=color_palette,
        thickness=thickness if thickness is not None else sv.calculate_optimal_line_thickness(resolution),
        color_lookup=sv.ColorLookup.CLASS,
    )
    canvas = box_annotator.annotate(canvas, detections)

    with_label = np.asarray([label is not None for label in labels], dtype=bool)
    if with_label.any():
        scale = (
            text_scale if text_scale is not None else max(sv.calculate_optimal_text_scale(resolution), 0.4)
        )
        label_annotator = sv.LabelAnnotator(
            color=color_palette,
            text_color=sv.ColorPalette(colors=[_text_color(c) for c in palette]),
            color_lookup=sv.ColorLookup.CLASS,
            text_scale=scale,
            text_padding=LABEL_PADDING,
            smart_position=True,  # keeps every label inside the picture
        )
        texts = [label for label in labels if label is not None]
        labelled = detections[with_label]
        labelled.xyxy = _label_anchors(labelled.xyxy, texts, scale, height)
        canvas = label_annotator.annotate(canvas, labelled, labels=texts)
    return canvas


def _label_anchors(xyxy: np.ndarray, texts: Sequence[str], text_scale: float, height: int) -> np.ndarray:
    """The boxes to give supervision's ``LabelAnnotator``, which draws a label just above the
    top-left corner of the box it gets.

    A label goes above its box.  When there is no room above (a box near the top of the
    picture), it goes just below the box; only when there is room on neither side does it stay
    at the top, where supervision's smart position moves it into the picture, over the box.  A
    label moved into the box hides the box's top edge and the top of the object, so the box
    would look smaller than it is.
    """
    anchors = xyxy.copy()
    for i, text in enumerate(texts):
        (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, text_scale, 1)
        label_h = text_h + 2 * LABEL_PADDING
        y1, y2 = float(xyxy[i, 1]), float(xyxy[i, 3])
        if int(y1) < label_h and int(y2) + label_h <= height:
            anchors[i, 1] = anchors[i, 3] = int(y2) + label_h
    return anchors


def draw_parsed(image: Image.Image, parsed: B.Parsed, thickness: int | None = None) -> Image.Image:
    """Draw a parsed answer: one colour and label per phrase, bare boxes without a label.

    Grid boxes are converted with :func:`mgv2.boxes.to_pixels` for ``image``'s size (the size
    the boxes are relative to).  Invalid boxes are skipped; a copy of the image is returned.
    """
    width, height = image.size
    colors = _key_colors(parsed)
    order = list(colors)
    pixel_boxes: dict[str | None, list[tuple[float, float, float, float]]] = {key: [] for key in order}
    for group in parsed.groups:
        for box in group.boxes:
            if box.valid:
                pixel_boxes[group.phrase].append(B.to_pixels(box, width, height))
    groups: list[BoxGroup] = [(key, pixel_boxes[key]) for key in order]
    return draw_boxes(image, groups, colors=[colors[key] for key in order], thickness=thickness)


def save_image_atomic(img: Image.Image, path: str | Path, **save_kwargs: object) -> Path:
    """Save ``img`` to ``path`` atomically (temporary file + rename); the format follows the
    extension (``.png``, ``.jpg``, ...).  Returns the path."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the image format from {path.name!r}; use an extension such as .png or .jpg"
        )
    out = img
    if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        out = to_rgb(img)
    with atomic_path(path) as tmp:
        out.save(tmp, format=fmt, **save_kwargs)
    return path
