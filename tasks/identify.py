"""``[identify]``: box -> referring expression (the inverse of ``[refer]``).

Training: one sentence of the ref is drawn; the instruction holds the official box text in one of
the seven official templates; the target is the sentence through the training text processor.
Inference prompt: the demo's ``[identify] what is this {<x1><y1><x2><y2>}``.

Score keys: ``exact`` (light normalisation: lowercase, punctuation dropped, whitespace collapsed)
and ``token_f1`` (bag of words), each the best over all sentences of the ref.
"""

from __future__ import annotations

import random

from mgv2 import boxes
from tasks.base import TextResult, TextTask, text_scores
from tasks.records import RegionRecord
from tasks.text import process_text

TEMPLATES: tuple[str, ...] = (
    "[identify] {}",
    "[identify] what object is in this location {}",
    "[identify] identify the object present at this location {}",
    "[identify] what is it in {}",
    "[identify] describe this object in {}",
    "[identify] this {} is",
    "[identify] the object in {} is",
)
PROMPT = "[identify] what is this {}"


class IdentifyTask(TextTask[RegionRecord]):
    name = "identify"
    identifier = "[identify]"
    templates = TEMPLATES
    record_type = RegionRecord

    @staticmethod
    def _box(record: RegionRecord) -> str:
        return boxes.format_box(record.box_xyxy, record.width, record.height)

    def _pair(self, record: RegionRecord, rng: random.Random) -> tuple[str, str]:
        sentence = rng.choice(record.sentences)
        return self.draw(rng, self._box(record)), process_text(sentence)

    def group_key(self, record: RegionRecord) -> tuple[float, ...]:
        return record.box_xyxy  # two sentences of one box are one question

    def prompt(self, record: RegionRecord) -> str:
        return PROMPT.format(self._box(record))

    def _score(self, result: TextResult, record: RegionRecord) -> dict[str, float]:
        return text_scores(result.text, record.sentences)
