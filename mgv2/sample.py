"""What a task hands to the model side: text only (plus the image it refers to).

Data flows one way: record -> task -> :class:`Sample` -> batch (``mgv2.prompt``) -> model.
A sample holds strings; ``mgv2.prompt`` turns them into token ids so that the model never
sees a string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Turn:
    """One user instruction (with its task identifier, e.g. ``[refer] where is the cup ?``)
    and the answer the model should give (``None`` when the model is to generate it)."""

    instruction: str
    answer: str | None = None


@dataclass
class Sample:
    """One image (``None`` for text-only data) and one or more turns about it.

    ``image`` is whatever the data source uses to find the picture (a path, or a PIL image);
    ``task`` names the task that built the sample; ``meta`` carries what scoring needs
    (ground-truth boxes, answers, image size, record id ...).
    """

    image: Any
    turns: list[Turn]
    task: str = "chat"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a Sample needs at least one turn")

    @property
    def instruction(self) -> str:
        return self.turns[-1].instruction

    @property
    def target(self) -> str | None:
        return self.turns[-1].answer
