"""``[caption]``: short caption (COCO Caption, TextCaps).

Training: ``[caption] `` + one of the official short-caption instructions (verbatim, trailing
spaces included); target: the caption through the training text processor.  Inference prompt:
the first instruction.

Score keys: ``exact`` (light normalisation) and ``token_f1`` (bag-of-words F1).  Honest note:
this is NOT CIDEr/BLEU; use the COCO caption toolkit for published caption numbers.
"""

from __future__ import annotations

import random

from tasks.base import TextResult, TextTask, text_scores
from tasks.records import CaptionRecord
from tasks.text import process_text

INSTRUCTIONS: tuple[str, ...] = (
    "Briefly describe this image.",
    "Provide a concise depiction of this image.",
    "Present a short description of this image.",
    "Summarize this image in a few words.",
    "A short image caption:",
    "A short image description:",
    "A photo of ",
    "An image that shows ",
    "Write a short description for the image. ",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)
TEMPLATES: tuple[str, ...] = tuple(f"[caption] {s}" for s in INSTRUCTIONS)


class CaptionTask(TextTask[CaptionRecord]):
    name = "caption"
    identifier = "[caption]"
    templates = TEMPLATES
    record_type = CaptionRecord

    def _pair(self, record: CaptionRecord, rng: random.Random) -> tuple[str, str]:
        return self.draw(rng), process_text(record.caption)

    def prompt(self, record: CaptionRecord) -> str:
        return TEMPLATES[0]

    def _score(self, result: TextResult, record: CaptionRecord) -> dict[str, float]:
        return text_scores(result.text, [record.caption])
