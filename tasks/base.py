"""The task contract: a task owns its prompt rendering, its answer parsing and its scoring.

Data flows one way: record (``tasks.records``) -> ``Task.build`` -> :class:`mgv2.sample.Sample`
-> model -> answer text -> ``Task.parse`` -> typed result -> ``Task.score`` -> ``dict[str, float]``.
Tasks never import the model.  Box text is read and written only through :mod:`mgv2.boxes`.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from eval.metrics import normalize_for_match, token_f1
from mgv2 import boxes
from mgv2.errors import TaskError
from mgv2.sample import Sample, Turn

RecordT = TypeVar("RecordT")
ResultT = TypeVar("ResultT")

# A task identifier at the start of a prompt: ``[refer]``, ``[vqa]`` ... (letters, "_" and "-").
_IDENTIFIER_RE = re.compile(r"^\s*\[([A-Za-z][A-Za-z_-]*)\]")


def split_identifier(text: str) -> tuple[str | None, str]:
    """``"[refer] the cup"`` -> ``("refer", "the cup")``; no leading identifier -> ``(None, text)``.

    Only a bracketed word at the very start counts (``"[1, 2] ..."`` is not an identifier).  The
    name is returned as written; whether it is known is for :func:`tasks.task_for_prompt` to say.
    """
    m = _IDENTIFIER_RE.match(text)
    if m is None:
        return None, text.strip()
    return m.group(1), text[m.end() :].strip()


def unknown_task_error(name: str, known: Iterable[str]) -> TaskError:
    listed = ", ".join(f"[{k}]" for k in known if k != "chat")
    return TaskError(
        f"unknown task identifier [{name}]; known identifiers: {listed} (plain chat uses no identifier)"
    )


@dataclass
class TextResult:
    """A text answer: ``text`` is the answer with box markup removed, ``normalized`` what the
    task's metric compares, ``parsed`` the full box parse (issues included)."""

    text: str
    normalized: str
    parsed: boxes.Parsed

    @property
    def ok(self) -> bool:
        return bool(self.text)


def text_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """``exact`` (after light normalisation) and bag-of-words ``token_f1``, best over references.

    Honest note: token F1 is a cheap overlap measure, not CIDEr/BLEU/METEOR.
    """
    pred = normalize_for_match(prediction)
    exact = float(any(pred == normalize_for_match(r) for r in references))
    f1 = max((token_f1(prediction, r) for r in references), default=0.0)
    return {"exact": exact, "token_f1": f1}


def pixel_boxes(found: Sequence[boxes.Box], width: float, height: float) -> list[tuple[float, ...]]:
    """Grid boxes the model wrote -> pixel xyxy on the original image."""
    return [boxes.to_pixels(b, width, height) for b in found]


def phrase_key(phrase: str | None) -> str | None:
    """How phrases are compared between answer and ground truth (light normalisation)."""
    return None if phrase is None else normalize_for_match(phrase)


class Task(ABC, Generic[RecordT, ResultT]):
    """One task identifier: its training templates, inference prompt, parser and metric.

    Subclasses set the class attributes and implement :meth:`_pair` (or :meth:`_turns`),
    :meth:`prompt`, :meth:`_result` and :meth:`_score`.
    """

    name: ClassVar[str]
    identifier: ClassVar[str]  # "[refer]" ... or "" for plain chat
    templates: ClassVar[tuple[str, ...]]  # the official training instruction pool (SPEC §4)
    record_type: ClassVar[type]

    # ------------------------------------------------------------------ training samples

    def build(self, record: RecordT, rng: random.Random) -> Sample:
        """One training sample: draws (sentence/answer and) one template with ``rng``."""
        self._check_record(record)
        return Sample(
            image=record.image, turns=self._turns(record, rng), task=self.name, meta=self._meta(record)
        )

    def build_group(self, records: Sequence[RecordT], rng: random.Random, limit: int | None = None) -> Sample:
        """One training sample of several records OF ONE PICTURE, as successive turns in the given
        order (the first record's meta).  A record whose :meth:`group_key` an earlier turn had (a
        second sentence for the same box) is skipped, so no turn can be answered by copying; at
        most ``limit`` turns.  Used by ``DatasetEntry.turns_per_image``."""
        if not records:
            raise TaskError(f"task {self.name!r}: build_group needs at least one record")
        for record in records:
            self._check_record(record)
        image = records[0].image
        if any(r.image != image for r in records[1:]):
            raise TaskError(
                f"task {self.name!r}: records of one multi-turn sample must share their picture, got "
                f"{sorted({str(r.image) for r in records})}"
            )
        turns: list[Turn] = []
        seen: set = set()
        for record in records:
            key = self.group_key(record)
            if key is not None and key in seen:
                continue
            seen.add(key)
            turns += self._turns(record, rng)
            if limit is not None and len(turns) >= limit:
                break
        return Sample(image=image, turns=turns[:limit], task=self.name, meta=self._meta(records[0]))

    def group_key(self, record: RecordT) -> Hashable | None:
        """What makes two records of one picture the same question for :meth:`build_group`
        (``None``: every record is its own).  Region tasks key on the box."""
        return None

    def draw(self, rng: random.Random, *values: str) -> str:
        """Draw one training template and fill its ``{}`` with ``values``."""
        return rng.choice(self.templates).format(*values)

    def _turns(self, record: RecordT, rng: random.Random) -> list[Turn]:
        instruction, answer = self._pair(record, rng)
        return [Turn(instruction, answer)]

    def _pair(self, record: RecordT, rng: random.Random) -> tuple[str, str]:
        """(instruction, target) of a single-turn task."""
        raise NotImplementedError(f"{type(self).__name__} must implement _pair or _turns")

    # ------------------------------------------------------------------ inference

    @abstractmethod
    def prompt(self, record: RecordT) -> str:
        """The benchmark/inference instruction for ``record`` (identifier included)."""

    def eval_sample(self, record: RecordT) -> Sample:
        """A sample whose last turn the model is to answer (``answer=None``)."""
        self._check_record(record)
        return Sample(
            image=record.image, turns=[Turn(self.prompt(record))], task=self.name, meta=self._meta(record)
        )

    def compose(self, text: str) -> str:
        """Free user text -> instruction with this task's identifier (``"[refer] the cup"``)."""
        text = text.strip()
        if not text:
            raise TaskError(f"empty prompt for task {self.name!r}")
        return f"{self.identifier} {text}" if self.identifier else text

    # ------------------------------------------------------------------ answers

    def parse(self, text: object) -> ResultT:
        """Read a model answer into the task's result type; never raises (problems go to
        ``result.parsed.issues``; a non-string answer reads as empty)."""
        parsed = boxes.parse(text)
        raw = text.strip() if isinstance(text, str) else ""
        return self._result(raw, parsed)

    @abstractmethod
    def _result(self, raw: str, parsed: boxes.Parsed) -> ResultT: ...

    def score(self, result: ResultT, record: RecordT) -> dict[str, float]:
        """Per-record metrics; keys are documented by each task."""
        self._check_record(record)
        return self._score(result, record)

    @abstractmethod
    def _score(self, result: ResultT, record: RecordT) -> dict[str, float]: ...

    # ------------------------------------------------------------------ helpers

    def _check_record(self, record: Any) -> None:
        if not isinstance(record, self.record_type):
            raise TaskError(
                f"task {self.name!r} takes a {self.record_type.__name__}, got {type(record).__name__}"
            )

    @staticmethod
    def _meta(record: Any) -> dict[str, Any]:
        return dict(getattr(record, "meta", {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, identifier={self.identifier!r})"


class TextTask(Task[RecordT, TextResult]):
    """A task whose answer is plain text (identify, vqa, caption, chat)."""

    def normalize(self, text: str) -> str:
        """What the metric compares; light normalisation unless a task says otherwise."""
        return normalize_for_match(text)

    def _result(self, raw: str, parsed: boxes.Parsed) -> TextResult:
        return TextResult(text=parsed.text, normalized=self.normalize(parsed.text), parsed=parsed)
