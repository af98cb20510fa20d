"""Typed records: what dataset readers produce and tasks consume.

Boxes are pixel ``(x1, y1, x2, y2)`` floats on the ORIGINAL image (readers convert COCO
``xywh`` with :func:`mgv2.boxes.xywh_to_xyxy`).  ``image`` is whatever locates the picture
(a path or a PIL image); it is passed through untouched.  Every record validates itself in
``__post_init__`` and raises :class:`mgv2.errors.TaskError` with a message naming the field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mgv2.errors import TaskError

BoxXYXY = tuple[float, float, float, float]


def _check_size(width: float, height: float, what: str) -> None:
    for name, v in (("width", width), ("height", height)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise TaskError(f"{what}: image {name} must be a positive number, got {v!r}")


def _check_box(box: Sequence[float], what: str) -> BoxXYXY:
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise TaskError(f"{what}: box must be 4 numbers (x1, y1, x2, y2), got {box!r}") from err
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise TaskError(f"{what}: box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = vals
    if not (x2 > x1 and y2 > y1):
        raise TaskError(
            f"{what}: box {vals} needs x2 > x1 and y2 > y1 (pixel xyxy; convert COCO xywh with xywh_to_xyxy)"
        )
    return (x1, y1, x2, y2)


def _check_pair(obj: object, what: str, shape: str) -> tuple[Any, Any]:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise TaskError(f"{what} must be a {shape} pair, got {obj!r}")
    return obj[0], obj[1]


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TaskError(f"{what} must be a non-empty string, got {text!r}")
    return text


@dataclass
class RegionRecord:
    """One referred region (RefCOCO/+/g, Visual Genome): refer and identify.

    ``expression`` is the sentence used for benchmark prompts and scoring; ``alternatives`` are
    further sentences of the same ref: training draws one of all of them per sample.
    """

    image: Any
    width: float
    height: float
    expression: str
    box_xyxy: BoxXYXY
    meta: dict[str, Any] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_size(self.width, self.height, "RegionRecord")
        _check_text(self.expression, "RegionRecord.expression")
        self.alternatives = tuple(_check_text(a, "RegionRecord.alternatives[*]") for a in self.alternatives)
        self.box_xyxy = _check_box(self.box_xyxy, "RegionRecord.box_xyxy")

    @property
    def sentences(self) -> tuple[str, ...]:
        """Every sentence of the ref: the expression first, then the alternatives."""
        return (self.expression, *self.alternatives)


@dataclass
class DetectionRecord:
    """Objects to find: ``objects`` are ``(phrase, box)`` pairs, one box each; pairs with the same
    phrase form one group.  ``query`` is the text after ``[detection]`` (a phrase or a caption);
    when ``None`` it is the distinct phrases joined by ``", "``."""

    image: Any
    width: float
    height: float
    objects: list[tuple[str, BoxXYXY]]
    query: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_size(self.width, self.height, "DetectionRecord")
        if not self.objects:
            raise TaskError("DetectionRecord.objects must hold at least one (phrase, box) pair")
        checked = []
        for k, obj in enumerate(self.objects):
            phrase, box = _check_pair(obj, f"DetectionRecord.objects[{k}]", "(phrase, box)")
            checked.append(
                (
                    _check_text(phrase, f"DetectionRecord.objects[{k}] phrase"),
                    _check_box(box, f"DetectionRecord.objects[{k}]"),
                )
            )
        self.objects = checked
        if self.query is not None:
            _check_text(self.query, "DetectionRecord.query")

    def groups(self) -> list[tuple[str, list[BoxXYXY]]]:
        """``(phrase, boxes)`` per distinct phrase, in order of first appearance."""
        out: dict[str, list[BoxXYXY]] = {}
        for phrase, box in self.objects:
            out.setdefault(phrase, []).append(box)
        return list(out.items())

    @property
    def query_text(self) -> str:
        return self.query if self.query is not None else ", ".join(p for p, _ in self.groups())


@dataclass
class GroundedPhrase:
    """A phrase of a grounded caption: the characters ``caption[start:end]`` and its boxes."""

    start: int
    end: int
    boxes: list[BoxXYXY]


@dataclass
class GroundedCaptionRecord:
    """A caption with grounded phrases (Flickr30k Entities): ``phrases`` hold character spans
    into ``caption`` (non-overlapping; kept sorted) and the pixel boxes of each span."""

    image: Any
    width: float
    height: float
    caption: str
    phrases: list[GroundedPhrase]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_size(self.width, self.height, "GroundedCaptionRecord")
        _check_text(self.caption, "GroundedCaptionRecord.caption")
        phrases = []
        for k, ph in enumerate(self.phrases):
            if isinstance(ph, (tuple, list)) and len(ph) == 3:
                ph = GroundedPhrase(*ph)
            if not isinstance(ph, GroundedPhrase):
                raise TaskError(f"GroundedCaptionRecord.phrases[{k}] must be (start, end, boxes), got {ph!r}")
            if not (0 <= ph.start < ph.end <= len(self.caption)):
                raise TaskError(
                    f"GroundedCaptionRecord.phrases[{k}]: span {ph.start}:{ph.end} is empty or outside the caption "
                    f"(length {len(self.caption)})"
                )
            if not ph.boxes:
                raise TaskError(
                    f"GroundedCaptionRecord.phrases[{k}] ({self.caption[ph.start : ph.end]!r}) has no box"
                )
            boxes = [_check_box(b, f"GroundedCaptionRecord.phrases[{k}]") for b in ph.boxes]
            phrases.append(GroundedPhrase(ph.start, ph.end, boxes))
        if not phrases:
            raise TaskError("GroundedCaptionRecord.phrases must hold at least one grounded phrase")
        phrases.sort(key=lambda p: p.start)
        for a, b in itertools.pairwise(phrases):
            if b.start < a.end:
                raise TaskError(
                    f"GroundedCaptionRecord: phrase spans {a.start}:{a.end} and {b.start}:{b.end} overlap"
                )
        self.phrases = phrases

    def phrase_text(self, phrase: GroundedPhrase) -> str:
        return self.caption[phrase.start : phrase.end]


@dataclass
class VQARecord:
    """A question and its ground-truth answers (10 annotators in VQAv2/OK-VQA; 1 in GQA).

    ``statement``: the text is a claim to judge, not a question (VSR: "The cat is left of the
    dog." -> ``true`` / ``false``); the VQA task then poses it with its true-or-false templates."""

    image: Any
    question: str
    answers: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    statement: bool = False

    def __post_init__(self) -> None:
        _check_text(self.question, "VQARecord.question")
        if not self.answers:
            raise TaskError("VQARecord.answers must hold at least one answer")
        self.answers = [_check_text(a, f"VQARecord.answers[{k}]") for k, a in enumerate(self.answers)]
        if not isinstance(self.statement, bool):
            raise TaskError(f"VQARecord.statement must be True or False, got {self.statement!r}")


@dataclass
class CaptionRecord:
    """An image and one caption."""

    image: Any
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_text(self.caption, "CaptionRecord.caption")


@dataclass
class ConversationRecord:
    """Free chat about an image (``None`` for text-only data): ``(user, assistant)`` turns."""

    image: Any
    turns: list[tuple[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.turns:
            raise TaskError("ConversationRecord.turns must hold at least one (user, assistant) turn")
        checked = []
        for k, turn in enumerate(self.turns):
            user, assistant = _check_pair(turn, f"ConversationRecord.turns[{k}]", "(user, assistant)")
            checked.append(
                (
                    _check_text(user, f"ConversationRecord.turns[{k}] user"),
                    _check_text(assistant, f"ConversationRecord.turns[{k}] assistant"),
                )
            )
        self.turns = checked
