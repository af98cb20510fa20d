"""The box text format: the one module that reads and writes boxes as text.

MiniGPT-v2 writes a box as ``{<x1><y1><x2><y2>}``: four integers 0..100 relative to the
ORIGINAL image width/height, truncated with ``int()`` (SPEC §4).  Phrases carry their boxes
as ``<p>phrase</p> {<..>}<delim>{<..>}``.  The design card spells a box ``<<x1><y1><x2><y2>>``;
:func:`parse` reads both spellings, :func:`box_text` writes the official braces.

Nobody else in the project writes a box regex: tasks, eval, app and drawing call this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SCALE = 100  # coordinates are integers 0..SCALE inclusive

_NUM = r"\s*(-?\d{1,6})\s*"
_COORDS = rf"<{_NUM}>\s*<{_NUM}>\s*<{_NUM}>\s*<{_NUM}>"
# A box: the official braces or the design card's double angle brackets.
_BOX = rf"(?:\{{\s*{_COORDS}\s*\}}|<\s*{_COORDS}\s*>)"
_BOX_RE = re.compile(_BOX)
_BOX_LIST_RE = re.compile(rf"{_BOX}(?:\s*<delim>\s*{_BOX})*")
_PHRASE_RE = re.compile(r"<p>(.*?)</p>", re.DOTALL)
# Leftovers that look like the start of a box but are not a whole one.
_BROKEN_RE = re.compile(r"[{<]\s*<\s*-?\d|<\s*-?\d+\s*>|</?p>|<delim>")


@dataclass(frozen=True)
class Box:
    """A box in the model's 0..100 grid, as written (may be flagged, never silently fixed)."""

    x1: int
    y1: int
    x2: int
    y2: int
    clamped: bool = False  # some coordinate was outside 0..100 and was clamped into range
    inverted: bool = False  # x1 > x2 or y1 > y2 as written (zero area; kept as written)

    @property
    def coords(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def valid(self) -> bool:
        return not self.inverted and self.x2 > self.x1 and self.y2 > self.y1

    def text(self) -> str:
        return box_text(self)


@dataclass
class Grounding:
    """One phrase (``None`` for a bare box) and the boxes that belong to it."""

    phrase: str | None
    boxes: list[Box]


@dataclass
class Parsed:
    """What :func:`parse` read from one answer.

    ``groups`` keeps the order of the text; ``text`` is the answer with box markup removed
    (phrases kept), ``issues`` says, in words, every part that could not be read.
    """

    raw: str
    groups: list[Grounding] = field(default_factory=list)
    text: str = ""
    issues: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> list[Box]:
        return [b for g in self.groups for b in g.boxes]

    @property
    def first_box(self) -> Box | None:
        boxes = self.boxes
        return boxes[0] if boxes else None

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_json(self) -> dict:
        return {
            "groups": [
                {
                    "phrase": g.phrase,
                    "boxes": [
                        {"box": list(b.coords), "clamped": b.clamped, "inverted": b.inverted} for b in g.boxes
                    ],
                }
                for g in self.groups
            ],
            "text": self.text,
            "issues": list(self.issues),
        }


def _clamp(v: int) -> int:
    return min(max(v, 0), SCALE)


def make_box(x1: int, y1: int, x2: int, y2: int) -> Box:
    """A :class:`Box` from written integers: out-of-range values are clamped and flagged."""
    raw = (int(x1), int(y1), int(x2), int(y2))
    c = tuple(_clamp(v) for v in raw)
    return Box(*c, clamped=c != raw, inverted=c[0] > c[2] or c[1] > c[3])


def box_text(box: Box | Sequence[int]) -> str:
    """The official text of one box: ``{<x1><y1><x2><y2>}``."""
    x1, y1, x2, y2 = box.coords if isinstance(box, Box) else box
    for v in (x1, y1, x2, y2):
        if not (0 <= int(v) <= SCALE) or int(v) != v:
            raise ValueError(f"box coordinate {v!r} is not an integer in 0..{SCALE}; build boxes with from_pixels()")
    return f"{{<{int(x1)}><{int(y1)}><{int(x2)}><{int(y2)}>}}"


def boxes_text(boxes: Sequence[Box | Sequence[int]]) -> str:
    """Several boxes of one phrase, joined by ``<delim>`` without spaces."""
    if not boxes:
        raise ValueError("boxes_text needs at least one box")
    return "<delim>".join(box_text(b) for b in boxes)


def phrase_text(phrase: str, boxes: Sequence[Box | Sequence[int]]) -> str:
    """``<p>phrase</p> {<..>}<delim>{<..>}`` (detection answers, grounded captions)."""
    return f"<p>{phrase}</p> {boxes_text(boxes)}"


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width={width!r} height={height!r}")


def from_pixels(xyxy: Sequence[float], width: float, height: float) -> Box:
    """Pixel box (x1, y1, x2, y2) on an image of ``width`` x ``height`` -> grid box.

    Official rule: ``int(x / W * 100)``; values outside the image are clamped (and flagged).
    """
    _check_size(width, height)
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return make_box(
        int(x1 / width * SCALE), int(y1 / height * SCALE), int(x2 / width * SCALE), int(y2 / height * SCALE)
    )


def xywh_to_xyxy(xywh: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in xywh)
    return (x, y, x + w, y + h)


def format_box(xyxy: Sequence[float], width: float, height: float) -> str:
    """Pixel box -> official box text (truncation, 0..100)."""
    return box_text(from_pixels(xyxy, width, height))


def to_pixels(box: Box | Sequence[int], width: float, height: float) -> tuple[float, float, float, float]:
    """Grid box -> pixel box (x1, y1, x2, y2) on an image of ``width`` x ``height``."""
    _check_size(width, height)
    x1, y1, x2, y2 = box.coords if isinstance(box, Box) else box
    return (x1 / SCALE * width, y1 / SCALE * height, x2 / SCALE * width, y2 / SCALE * height)


def _boxes_in(segment: str) -> list[Box]:
    out = []
    for m in _BOX_RE.finditer(segment):
        nums = [int(g) for g in m.groups() if g is not None]
        out.append(make_box(*nums))
    return out


def _note_box_flags(boxes: list[Box], issues: list[str]) -> None:
    for b in boxes:
        if b.clamped:
            issues.append(f"box {box_text(b)} had coordinates outside 0..{SCALE}; clamped")
        if b.inverted:
            issues.append(f"box {box_text(b)} is inverted (x1 > x2 or y1 > y2); kept as written, zero area")


def _leftovers(segment: str, issues: list[str]) -> None:
    for m in _BROKEN_RE.finditer(segment):
        start = max(m.start() - 8, 0)
        issues.append(f"unreadable box markup near {segment[start:m.end() + 12]!r}")
        return


def parse(text: object) -> Parsed:
    """Read every phrase/box group of an answer; never raises.

    Handles a bare box (refer), ``<p>phrase</p> box<delim>box`` lists (detection), grounded
    captions (phrases with boxes inside running text), and both box spellings.  Whatever cannot
    be read is described in ``Parsed.issues``; out-of-range boxes are clamped and inverted boxes
    flagged, never dropped.
    """
    if not isinstance(text, str):
        return Parsed(raw=repr(text), issues=[f"answer is a {type(text).__name__}, not text"])
    out = Parsed(raw=text)
    try:
        _parse_into(text, out)
    except Exception as err:  # noqa: BLE001 - the contract is "never raises"; the failure is reported
        out.issues.append(f"parser error: {type(err).__name__}: {err}")
    return out


def _parse_into(text: str, out: Parsed) -> None:
    pos = 0
    plain: list[str] = []
    pending_phrase: str | None = None
    # Walk the text: a phrase tag, then the box list right after it (if any); box lists
    # without a phrase are bare groups.
    token_re = re.compile(rf"{_PHRASE_RE.pattern}|{_BOX_LIST_RE.pattern}", re.DOTALL)
    for m in token_re.finditer(text):
        between = text[pos : m.start()]
        if pending_phrase is not None and between.strip():
            out.groups.append(Grounding(pending_phrase, []))
            pending_phrase = None
        _leftovers(between, out.issues)
        plain.append(between)
        chunk = m.group(0)
        if chunk.startswith("<p>"):
            if pending_phrase is not None:
                out.groups.append(Grounding(pending_phrase, []))
            pending_phrase = m.group(1).strip()
            plain.append(m.group(1))
        else:
            boxes = _boxes_in(chunk)
            _note_box_flags(boxes, out.issues)
            out.groups.append(Grounding(pending_phrase, boxes))
            pending_phrase = None
        pos = m.end()
    if pending_phrase is not None:
        out.groups.append(Grounding(pending_phrase, []))
    tail = text[pos:]
    _leftovers(tail, out.issues)
    plain.append(tail)
    for g in out.groups:
        if g.phrase is not None and not g.boxes:
            out.issues.append(f"phrase {g.phrase!r} has no box")
    out.text = re.sub(r"\s+", " ", "".join(plain)).strip()


def pixel_array(boxes: Sequence[Box], width: float, height: float) -> np.ndarray:
    """Boxes -> float array [N, 4] of pixel xyxy (for drawing and metrics)."""
    if not boxes:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray([to_pixels(b, width, height) for b in boxes], dtype=np.float64)
