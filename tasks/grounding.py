"""``[grounding]``: detailed caption in which each grounded phrase carries its boxes.

Target (SPEC §4, Flickr30k grounded captions): the caption with every grounded phrase replaced
by ``<p>phrase</p> {<..>}<delim>{<..>}`` in place.  The instruction is one of the four official
templates; the inference prompt is the first of them.

Score keys: ``phrase_recall`` (share of ground-truth phrases for which the answer has a group of
the same phrase, light normalisation, with a box of continuous IoU >= 0.5 against one of that
phrase's boxes) and ``caption_f1`` (bag-of-words F1 of the plain caption text; not CIDEr).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from eval.metrics import box_iou, is_hit, token_f1
from mgv2 import boxes
from tasks.base import Task, phrase_key, pixel_boxes
from tasks.records import GroundedCaptionRecord

TEMPLATES: tuple[str, ...] = (
    "[grounding] please describe this image in details",
    "[grounding] describe this image as detailed as possible",
    "[grounding] summarize this image in details",
    "[grounding] give a thorough description of what you see in this image",
)


def grounded_caption_text(record: GroundedCaptionRecord) -> str:
    """The caption with ``<p>phrase</p> {boxes}`` in place of each grounded phrase."""
    parts: list[str] = []
    pos = 0
    for ph in record.phrases:
        grid = [boxes.from_pixels(b, record.width, record.height) for b in ph.boxes]
        parts.append(record.caption[pos : ph.start])
        parts.append(boxes.phrase_text(record.phrase_text(ph), grid))
        pos = ph.end
    parts.append(record.caption[pos:])
    return "".join(parts)


@dataclass
class GroundingResult:
    """``caption``: the answer without box markup (phrases kept); ``groups``: phrases and boxes."""

    caption: str
    groups: list[boxes.Grounding]
    parsed: boxes.Parsed

    @property
    def ok(self) -> bool:
        return bool(self.caption) and self.parsed.ok


class GroundingTask(Task[GroundedCaptionRecord, GroundingResult]):
    name = "grounding"
    identifier = "[grounding]"
    templates = TEMPLATES
    record_type = GroundedCaptionRecord

    def _pair(self, record: GroundedCaptionRecord, rng: random.Random) -> tuple[str, str]:
        return self.draw(rng), grounded_caption_text(record)

    def prompt(self, record: GroundedCaptionRecord) -> str:
        return TEMPLATES[0]

    def _result(self, raw: str, parsed: boxes.Parsed) -> GroundingResult:
        return GroundingResult(caption=parsed.text, groups=list(parsed.groups), parsed=parsed)

    def _score(self, result: GroundingResult, record: GroundedCaptionRecord) -> dict[str, float]:
        predicted: dict[str | None, list[tuple[float, ...]]] = {}
        for g in result.groups:
            predicted.setdefault(phrase_key(g.phrase), []).extend(
                pixel_boxes(g.boxes, record.width, record.height)
            )
        found = 0
        for ph in record.phrases:
            candidates = predicted.get(phrase_key(record.phrase_text(ph)), [])
            if any(is_hit(box_iou(p, g)) for p in candidates for g in ph.boxes):
                found += 1
        return {
            "phrase_recall": found / len(record.phrases),
            "caption_f1": token_f1(result.caption, record.caption),
        }
