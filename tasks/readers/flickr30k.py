"""Flickr30k Entities as MiniGPT-v2 ships it (SPEC §4 box text) -> grounding and detection records.

MiniGPT-v2's ``filtered_flickr/`` files, each a JSON list; the picture is
``<images>/<image_id>.jpg``:

* ``groundedcaption.json``: ``{image_id, grounded_caption}``, the caption with
  ``<p>phrase</p> {<x1><y1><x2><y2>}<delim>{...}`` after every grounded phrase
  -> :class:`GroundedCaptionRecord` (source ``flickr_grounded_caption``, task ``grounding``);
* ``captiontobbox.json``: ``{image_id, caption, output}``, ``output`` = ``<p>phrase</p> {..}..``
  for the phrases of the caption -> :class:`DetectionRecord` with ``query`` = the caption
  (source ``flickr_caption_to_phrase``, task ``detection``);
* ``phrasetobbox.json``: ``{image_id, phrase, bbox}``, ``bbox`` = ``{..}<delim>{..}``
  -> :class:`DetectionRecord` with ``query`` = the phrase (source ``flickr_phrase_to_box``).

``root`` is the file itself or the folder holding it: split ``train`` reads ``<name>.json``, any
other split ``<name>_<split>.json`` (the synthetic world's held-out files).

The box text is relative (0..100) to the picture's width and height, which the files do not
hold: each picture's size is read from its header (Pillow, no decoding), or taken from
``sizes`` (``{image_id: (width, height)}``) when given.  Grid boxes become pixel boxes with
:func:`grid_to_pixels`, which picks for each coordinate a pixel value whose box text is that
coordinate again, so the tasks write back exactly the box text of the file.  All box text is
read with :mod:`mgv2.boxes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgv2 import boxes
from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import DetectionRecord, GroundedCaptionRecord, GroundedPhrase

FILES = {"grounded": "groundedcaption", "caption_to_phrase": "captiontobbox", "phrase_to_box": "phrasetobbox"}


def _edge(g: int, size: float) -> float:
    """A pixel coordinate ``p`` with ``int(p / size * 100) == g`` (the low edge of the cell)."""
    p = g * size / boxes.SCALE
    for _ in range(64):
        v = int(p / size * boxes.SCALE)
        if v == g:
            return p
        p = math.nextafter(p, math.inf if v < g else -math.inf)
    return (g + 0.5) * size / boxes.SCALE  # pragma: no cover - a few ulps always suffice


def grid_to_pixels(box: boxes.Box, width: float, height: float) -> tuple[float, float, float, float]:
    """Grid box -> pixel xyxy whose :func:`mgv2.boxes.from_pixels` is ``box`` again.

    A box with no extent on the grid (``x1 == x2``: an object thinner than 1% of the picture)
    gets the middle of its grid cell as far edge, so the pixel box has an area and the same text.
    Raises ValueError for an inverted box.
    """
    if box.inverted or box.x1 > box.x2 or box.y1 > box.y2:
        raise ValueError(f"box {boxes.box_text(box)} is inverted (x1 > x2 or y1 > y2)")
    x1, y1 = _edge(box.x1, width), _edge(box.y1, height)
    x2 = _edge(box.x2, width) if box.x2 > box.x1 else x1 + 0.5 * width / boxes.SCALE
    y2 = _edge(box.y2, height) if box.y2 > box.y1 else y1 + 0.5 * height / boxes.SCALE
    out = (x1, y1, x2, y2)
    if boxes.from_pixels(out, width, height).coords != box.coords:  # pragma: no cover - guarded by _edge
        raise ValueError(f"cannot invert box {boxes.box_text(box)} on a {width}x{height} picture")
    return out


class _Sizes:
    """Picture sizes from ``sizes`` or from each file's header, read once per picture."""

    def __init__(self, sizes: Mapping[str, Any] | None) -> None:
        self.given = sizes
        self.cache: dict[str, tuple[float, float]] = {}

    def __call__(self, image_id: str, image: str, where: str) -> tuple[float, float]:
        if self.given is not None:
            if image_id not in self.given:
                raise DataError(f"{where}: image_id {image_id!r} is not in the given sizes")
            w, h = self.given[image_id]
            return float(w), float(h)
        if image not in self.cache:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(image) as im:
                    self.cache[image] = (float(im.size[0]), float(im.size[1]))
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(
                    f"{where}: cannot read the size of picture {image} ({err}); the box text is relative to "
                    "it. Pass images=<folder of the pictures> or sizes={image_id: (width, height)}"
                ) from err
        return self.cache[image]


def _file(root: str | Path, name: str, split: str) -> Path:
    root = Path(root)
    if root.is_dir():
        return root / (f"{name}.json" if split == "train" else f"{name}_{split}.json")
    return root


def _items(path: Path) -> list:
    data = read_json(path, "Flickr30k annotation file")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _parse(text: str, where: str, what: str) -> boxes.Parsed:
    parsed = boxes.parse(text)
    if parsed.issues:
        raise DataError(f"{where}: {what} {text!r:.120}: {'; '.join(parsed.issues)}")
    return parsed


def _pixels(found: list[boxes.Box], width: float, height: float, where: str) -> list[tuple[float, ...]]:
    try:
        return [grid_to_pixels(b, width, height) for b in found]
    except ValueError as err:
        raise DataError(f"{where}: {err}") from err


def split_grounded_caption(text: str, where: str = "grounded caption") -> tuple[str, list[tuple[int, int, list[boxes.Box]]]]:
    """``"A <p>man</p> {<1><2><3><4>} runs."`` -> ``("A man runs.", [(2, 5, [Box])])``.

    The space before a phrase's box list belongs to the markup (it is what MiniGPT-v2 puts
    between ``</p>`` and the boxes), so the caption reads as plain text.  Box lists must be in
    the official spelling (``boxes.boxes_text``); anything else raises :class:`DataError`.
    """
    parsed = _parse(text, where, "grounded caption")
    pieces: list[str] = []
    spans: list[tuple[int, int, list[boxes.Box]]] = []
    length = 0
    pos = 0
    for k, group in enumerate(parsed.groups):
        if group.phrase is None:
            raise DataError(f"{where}: grounded caption has a box that follows no <p>phrase</p>: {text!r:.120}")
        start = text.find("<p>", pos)
        end = text.find("</p>", start)
        if start < 0 or end < 0:  # pragma: no cover - parse found the phrase
            raise DataError(f"{where}: phrase #{k} has no <p>...</p> tags")
        before, phrase = text[pos:start], text[start + 3 : end]
        pieces.append(before)
        length += len(before)
        lead = len(phrase) - len(phrase.lstrip())
        core = phrase.strip()
        if not core:
            raise DataError(f"{where}: phrase #{k} is empty")
        spans.append((length + lead, length + lead + len(core), group.boxes))
        pieces.append(phrase)
        length += len(phrase)
        after = end + len("</p>")
        box_list = boxes.boxes_text(group.boxes)
        if text.startswith(" " + box_list, after):
            pos = after + 1 + len(box_list)
        elif text.startswith(box_list, after):
            pos = after + len(box_list)
        else:
            raise DataError(
                f"{where}: the boxes of phrase {core!r} are not written as {box_list!r} right after </p>"
            )
    pieces.append(text[pos:])
    return "".join(pieces), spans


def read_flickr_grounded_caption(
    root: str | Path, split: str = "train", images: str | Path | None = None, sizes: Mapping[str, Any] | None = None
) -> list[GroundedCaptionRecord]:
    """``groundedcaption.json`` -> :class:`GroundedCaptionRecord` (one per entry, file order)."""
    path = _file(root, FILES["grounded"], split)
    images = Path(images) if images is not None else path.parent
    size_of = _Sizes(sizes)
    out = []
    for k, item in enumerate(_items(path)):
        where = f"{path} record #{k}"
        image_id = str(field(item, "image_id", where, (str, int)))
        text = field(item, "grounded_caption", where, str)
        image = str(images / f"{image_id}.jpg")
        caption, spans = split_grounded_caption(text, where)
        width, height = size_of(image_id, image, where)
        phrases = [GroundedPhrase(s, e, _pixels(found, width, height, where)) for s, e, found in spans]
        try:
            out.append(GroundedCaptionRecord(image=image, width=width, height=height, caption=caption, phrases=phrases,
                                             meta={"index": len(out), "image_id": image_id, "record": k}))
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
    return out


def _detection(image: str, width: float, height: float, objects, query: str, meta: dict, where: str) -> DetectionRecord:
    try:
        return DetectionRecord(image=image, width=width, height=height, objects=objects, query=query, meta=meta)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def read_flickr_caption_to_phrase(
    root: str | Path, split: str = "train", images: str | Path | None = None, sizes: Mapping[str, Any] | None = None
) -> list[DetectionRecord]:
    """``captiontobbox.json`` -> :class:`DetectionRecord` (query = the caption)."""
    path = _file(root, FILES["caption_to_phrase"], split)
    images = Path(images) if images is not None else path.parent
    size_of = _Sizes(sizes)
    out = []
    for k, item in enumerate(_items(path)):
        where = f"{path} record #{k}"
        image_id = str(field(item, "image_id", where, (str, int)))
        caption = field(item, "caption", where, str)
        parsed = _parse(field(item, "output", where, str), where, "output")
        if not parsed.groups or any(g.phrase is None for g in parsed.groups):
            raise DataError(f"{where}: output must be <p>phrase</p> boxes for every box, got {item['output']!r:.120}")
        image = str(images / f"{image_id}.jpg")
        width, height = size_of(image_id, image, where)
        objects = [(g.phrase, b) for g in parsed.groups for b in _pixels(g.boxes, width, height, where)]
        out.append(_detection(image, width, height, objects, caption,
                              {"index": len(out), "image_id": image_id, "record": k}, where))
    return out


def read_flickr_phrase_to_box(
    root: str | Path, split: str = "train", images: str | Path | None = None, sizes: Mapping[str, Any] | None = None
) -> list[DetectionRecord]:
    """``phrasetobbox.json`` -> :class:`DetectionRecord` (query = the phrase, all its boxes)."""
    path = _file(root, FILES["phrase_to_box"], split)
    images = Path(images) if images is not None else path.parent
    size_of = _Sizes(sizes)
    out = []
    for k, item in enumerate(_items(path)):
        where = f"{path} record #{k}"
        image_id = str(field(item, "image_id", where, (str, int)))
        phrase = field(item, "phrase", where, str)
        parsed = _parse(field(item, "bbox", where, str), where, "bbox")
        if not parsed.boxes or any(g.phrase is not None for g in parsed.groups):
            raise DataError(f"{where}: bbox must be box text like {{<1><2><30><40>}}, got {item['bbox']!r:.120}")
        image = str(images / f"{image_id}.jpg")
        width, height = size_of(image_id, image, where)
        objects = [(phrase, b) for b in _pixels(parsed.boxes, width, height, where)]
        out.append(_detection(image, width, height, objects, phrase,
                              {"index": len(out), "image_id": image_id, "record": k}, where))
    return out
