"""``[refer]``: referring expression -> one box (RefCOCO/+/g, Visual Genome regions).

Training: one sentence of the ref is drawn, passed through the training text processor and put
in one of the seven official templates; the target is the official box text.  Benchmark prompt
(SPEC §7): ``[refer] give me the location of {sent}`` with the sentence as the reader gives it.

Score keys: ``iou`` (pixels, on the original image), ``hit`` (Acc@0.5 decision) and ``parsed``
(1.0 when a box was read).  An answer without a box scores 0 on both.  Default convention:
continuous IoU >= 0.5; ``ReferTask(plus_one=True)`` gives the official +1-pixel IoU > 0.5.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from eval.metrics import box_iou, is_hit
from mgv2 import boxes
from tasks.base import Task
from tasks.records import RegionRecord
from tasks.text import process_text

TEMPLATES: tuple[str, ...] = (
    "[refer] {}",
    "[refer] give me the location of {}",
    "[refer] where is {} ?",
    "[refer] from this image, tell me the location of {}",
    "[refer] the location of {} is",
    "[refer] could you tell me the location for {} ?",
    "[refer] where can I locate the {} ?",
)
BENCHMARK_PROMPT = "[refer] give me the location of {}"


@dataclass
class ReferResult:
    """The first box of the answer (``None`` when there is none) and the full parse."""

    box: boxes.Box | None
    parsed: boxes.Parsed

    @property
    def ok(self) -> bool:
        return self.box is not None


class ReferTask(Task[RegionRecord, ReferResult]):
    name = "refer"
    identifier = "[refer]"
    templates = TEMPLATES
    record_type = RegionRecord

    def __init__(self, plus_one: bool = False, threshold: float = 0.5) -> None:
        self.plus_one = plus_one
        self.threshold = threshold

    def _pair(self, record: RegionRecord, rng: random.Random) -> tuple[str, str]:
        sentence = process_text(rng.choice(record.sentences))
        target = boxes.format_box(record.box_xyxy, record.width, record.height)
        return self.draw(rng, sentence), target

    def group_key(self, record: RegionRecord) -> tuple[float, ...]:
        return record.box_xyxy  # two sentences of one box are one question

    def prompt(self, record: RegionRecord) -> str:
        return BENCHMARK_PROMPT.format(record.expression)

    def _result(self, raw: str, parsed: boxes.Parsed) -> ReferResult:
        return ReferResult(box=parsed.first_box, parsed=parsed)

    def _score(self, result: ReferResult, record: RegionRecord) -> dict[str, float]:
        if result.box is None:
            return {"iou": 0.0, "hit": 0.0, "parsed": 0.0}
        pred = boxes.to_pixels(result.box, record.width, record.height)
        iou = box_iou(pred, record.box_xyxy, plus_one=self.plus_one)
        hit = is_hit(iou, plus_one=self.plus_one, threshold=self.threshold)
        return {"iou": iou, "hit": float(hit), "parsed": 1.0}
