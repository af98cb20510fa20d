"""``[detection]``: a phrase or a caption -> every object it names, with boxes.

Target format (SPEC §4, Flickr30k phrase-to-box / caption-to-phrase data): per phrase
``<p>phrase</p> {<..>}<delim>{<..>}`` (several boxes of one phrase joined by ``<delim>``, no
spaces).  Decision: several phrases are written in order of first appearance and joined by ONE
space (``<p>a</p> {..} <p>b</p> {..}``); the official caption-to-phrase answers are prebuilt
strings in the released annotation files, and the parser reads either spacing.

Score keys (greedy one-to-one matching at IoU >= 0.5, continuous IoU, pixels): ``precision``,
``recall``, ``f1`` where a predicted box may only match a ground-truth box of the same phrase
(light normalisation), and ``box_precision``, ``box_recall``, ``box_f1`` ignoring phrases.
``tp``, ``n_pred``, ``n_gt`` are returned too so that corpus-level (micro) scores can be summed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from eval.metrics import MatchCounts, match_boxes
from mgv2 import boxes
from tasks.base import Task, phrase_key, pixel_boxes
from tasks.records import DetectionRecord

TEMPLATES: tuple[str, ...] = ("[detection] {}",)


def detection_text(groups: list[tuple[str, list[boxes.Box]]]) -> str:
    """The answer text of several phrase groups: phrase texts joined by one space."""
    return " ".join(boxes.phrase_text(phrase, found) for phrase, found in groups)


@dataclass
class DetectionResult:
    """``(phrase, boxes)`` per group of the answer, in order (``phrase`` is ``None`` for bare boxes)."""

    objects: list[tuple[str | None, list[boxes.Box]]]
    parsed: boxes.Parsed

    @property
    def ok(self) -> bool:
        return any(found for _, found in self.objects)


class DetectionTask(Task[DetectionRecord, DetectionResult]):
    name = "detection"
    identifier = "[detection]"
    templates = TEMPLATES
    record_type = DetectionRecord

    def _pair(self, record: DetectionRecord, rng: random.Random) -> tuple[str, str]:
        groups = [
            (phrase, [boxes.from_pixels(b, record.width, record.height) for b in found])
            for phrase, found in record.groups()
        ]
        return self.draw(rng, record.query_text), detection_text(groups)

    def prompt(self, record: DetectionRecord) -> str:
        return TEMPLATES[0].format(record.query_text)

    def _result(self, raw: str, parsed: boxes.Parsed) -> DetectionResult:
        return DetectionResult(objects=[(g.phrase, list(g.boxes)) for g in parsed.groups], parsed=parsed)

    def _score(self, result: DetectionResult, record: DetectionRecord) -> dict[str, float]:
        pred_keys: list[str | None] = []
        pred: list[tuple[float, ...]] = []
        for phrase, found in result.objects:
            px = pixel_boxes(found, record.width, record.height)
            pred.extend(px)
            pred_keys.extend([phrase_key(phrase)] * len(px))
        gt = [box for _, box in record.objects]
        gt_keys = [phrase_key(phrase) for phrase, _ in record.objects]
        by_phrase = match_boxes(pred, gt, compatible=lambda i, j: pred_keys[i] == gt_keys[j])
        by_box = match_boxes(pred, gt)
        return {
            **_prf(by_phrase, ""),
            **_prf(by_box, "box_"),
            "tp": float(by_phrase.tp),
            "n_pred": float(by_phrase.n_pred),
            "n_gt": float(by_phrase.n_gt),
        }


def _prf(counts: MatchCounts, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}precision": counts.precision,
        f"{prefix}recall": counts.recall,
        f"{prefix}f1": counts.f1,
    }
