"""Visual Spatial Reasoning (cambridgeltl/visual-spatial-reasoning) jsonl -> :class:`VQARecord`.

Each line: ``{image, caption, label (1 true / 0 false), relation, subj, obj, ...}``; images are
COCO 2017 files named by ``image``.  The caption is the "question"; the single answer is
``"true"`` or ``"false"`` (the benchmark prompt asks whether the statement is true or false).
"""

from __future__ import annotations

from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, iter_jsonl
from tasks.records import VQARecord


def read_vsr(path: str | Path, images: str | Path | None = None) -> list[VQARecord]:
    out: list[VQARecord] = []
    for line, obj in iter_jsonl(path, "VSR jsonl"):
        where = f"{path}:{line}"
        image = field(obj, "image", where, str)
        caption = field(obj, "caption", where, str)
        label = field(obj, "label", where, (int, bool))
        if label not in (0, 1):
            raise DataError(f"{where}: label must be 1 (true) or 0 (false), got {label!r}")
        try:
            out.append(
                VQARecord(
                    image=str(Path(images) / image) if images is not None else image,
                    question=caption,
                    answers=["true" if label else "false"],
                    statement=True,
                    meta={
                        "index": len(out),
                        "line": line,
                        "label": int(label),
                        "relation": obj.get("relation"),
                        "subj": obj.get("subj"),
                        "obj": obj.get("obj"),
                        "file_name": image,
                    },
                )
            )
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
    return out
