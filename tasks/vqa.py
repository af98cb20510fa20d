"""``[vqa]``: question -> short answer (VQAv2, OK-VQA, A-OKVQA, GQA, OCR-VQA ...).

Training: question through the training text processor; one answer drawn weighted by annotator
frequency (SPEC §4; weights in order of first appearance), also text-processed; then one of the
two official templates (a statement record, VSR, one of :data:`STATEMENT_TEMPLATES`).  Benchmark
prompts (SPEC §7) are in :data:`BENCHMARK_PROMPTS`, chosen with ``prompt(record, style=...)``; the
question is inserted as the reader gives it.

Score keys: ``exact`` (VQA-normalised prediction equals a VQA-normalised answer: GQA, VSR) and,
when the record has two or more answers, ``vqa_acc`` (:func:`eval.metrics.vqa_accuracy`, variant
chosen at construction, default the current official one).  With one answer the leave-one-out VQA
accuracy is always 0, so the key is left out rather than reported as a misleading 0.
"""

from __future__ import annotations

import random

from eval.metrics import VQAVariant, normalize_answer, vqa_accuracy
from mgv2.errors import TaskError
from tasks.base import TextResult, TextTask
from tasks.records import VQARecord
from tasks.text import process_text

TEMPLATES: tuple[str, ...] = (
    "[vqa] {}",
    "[vqa] Based on the image, respond to this question with a short answer: {}",
)
# A statement record (VSR: a claim about the picture, answered true / false) is posed as one: the
# question templates would put "respond to this question" before a sentence that is no question,
# and the benchmark's wording (SPEC §7) would never be seen in training.  MiniGPT-v2 scores VSR
# zero-shot; these matter where a VSR-style train split is in the mixture (the demo preset).
STATEMENT_TEMPLATES: tuple[str, ...] = (
    "[vqa] Based on the image, is this statement true or false? {}",
    "[vqa] Is this statement true or false? {}",
)
BENCHMARK_PROMPTS: dict[str, str] = {
    "short": TEMPLATES[1],
    "vsr": STATEMENT_TEMPLATES[0],
    "vizwiz": (
        "[vqa] The question is '{}' Based on the image, answer the question with a single word or phrase. "
        "and reply 'unanswerable' when the provided information is insufficient"
    ),
}


def draw_answer(answers: list[str], rng: random.Random) -> str:
    """One answer, drawn with probability proportional to how many annotators gave it."""
    weights: dict[str, float] = {}
    for a in answers:
        weights[a] = weights.get(a, 0.0) + 1 / len(answers)
    return rng.choices(list(weights), weights=list(weights.values()), k=1)[0]


class VQATask(TextTask[VQARecord]):
    name = "vqa"
    identifier = "[vqa]"
    templates = TEMPLATES
    record_type = VQARecord

    def __init__(self, variant: VQAVariant = "official") -> None:
        self.variant: VQAVariant = variant

    def _pair(self, record: VQARecord, rng: random.Random) -> tuple[str, str]:
        question = process_text(record.question)
        answer = process_text(draw_answer(record.answers, rng))
        if record.statement:
            return rng.choice(STATEMENT_TEMPLATES).format(question), answer
        return self.draw(rng, question), answer

    def prompt(self, record: VQARecord, style: str = "short") -> str:
        if style not in BENCHMARK_PROMPTS:
            raise TaskError(f"unknown VQA prompt style {style!r}; known: {', '.join(BENCHMARK_PROMPTS)}")
        return BENCHMARK_PROMPTS[style].format(record.question)

    def normalize(self, text: str) -> str:
        return normalize_answer(text)

    def _score(self, result: TextResult, record: VQARecord) -> dict[str, float]:
        exact = float(result.normalized in {normalize_answer(a) for a in record.answers})
        out = {"exact": exact}
        if len(record.answers) > 1:
            out["vqa_acc"] = vqa_accuracy(result.text, record.answers, variant=self.variant)
        return out
