"""Tasks: one object per task identifier, owning prompt rendering, parsing and scoring.

``TASKS`` is an explicit dict (no registry decorators).  ``task_for_prompt`` routes a user prompt
by its leading identifier (none -> plain chat).
"""

from __future__ import annotations

from mgv2.errors import TaskError
from tasks.base import Task, split_identifier, unknown_task_error
from tasks.caption import CaptionTask
from tasks.chat import ChatTask
from tasks.detection import DetectionTask
from tasks.grounding import GroundingTask
from tasks.identify import IdentifyTask
from tasks.refer import ReferTask
from tasks.vqa import VQATask

TASKS: dict[str, Task] = {
    "grounding": GroundingTask(),
    "refer": ReferTask(),
    "identify": IdentifyTask(),
    "detection": DetectionTask(),
    "vqa": VQATask(),
    "caption": CaptionTask(),
    "chat": ChatTask(),
}


def get_task(name: str) -> Task:
    """The task called ``name`` (``"refer"`` or ``"[refer]"``); TaskError lists the known ones."""
    key = name.strip().removeprefix("[").removesuffix("]")
    if key not in TASKS:
        raise unknown_task_error(key, TASKS)
    return TASKS[key]


def task_for_prompt(text: str) -> tuple[Task, str]:
    """``"[refer] the cup"`` -> ``(ReferTask, "the cup")``; no identifier -> ``(ChatTask, text)``.

    Raises TaskError for an empty prompt, an unknown identifier (the message lists the known
    ones), or an identifier with nothing after it.
    """
    if not isinstance(text, str) or not text.strip():
        raise TaskError(
            "empty prompt: write an instruction, optionally starting with a task identifier like [refer]"
        )
    name, rest = split_identifier(text)
    if name is None:
        return TASKS["chat"], rest
    if name not in TASKS or name == "chat":
        raise unknown_task_error(name, TASKS)
    if not rest:
        raise TaskError(f"prompt {text.strip()!r} has nothing after the identifier [{name}]")
    return TASKS[name], rest


__all__ = ["TASKS", "Task", "TaskError", "get_task", "split_identifier", "task_for_prompt"]
