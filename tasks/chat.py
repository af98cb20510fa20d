"""Plain chat: no identifier (LLaVA conversations, multi-task conversations, text-only data).

A conversation becomes one sample with one :class:`~mgv2.sample.Turn` per ``(user, assistant)``
pair, texts unchanged (they may hold box text; the model was trained on it as written).  For
inference, every turn but the last keeps its answer and the last one is left for the model.

Score keys (against the last reference answer): ``exact`` and ``token_f1`` (not a chat metric,
only a cheap overlap check).
"""

from __future__ import annotations

import random

from mgv2.sample import Sample, Turn
from tasks.base import TextResult, TextTask, text_scores
from tasks.records import ConversationRecord


class ChatTask(TextTask[ConversationRecord]):
    name = "chat"
    identifier = ""
    templates: tuple[str, ...] = ()
    record_type = ConversationRecord

    def _turns(self, record: ConversationRecord, rng: random.Random) -> list[Turn]:
        return [Turn(user, assistant) for user, assistant in record.turns]

    def prompt(self, record: ConversationRecord) -> str:
        return record.turns[-1][0]

    def eval_sample(self, record: ConversationRecord) -> Sample:
        self._check_record(record)
        turns = [Turn(u, a) for u, a in record.turns[:-1]] + [Turn(self.prompt(record))]
        return Sample(image=record.image, turns=turns, task=self.name, meta=self._meta(record))

    def _score(self, result: TextResult, record: ConversationRecord) -> dict[str, float]:
        return text_scores(result.parsed.raw.strip(), [record.turns[-1][1]])
