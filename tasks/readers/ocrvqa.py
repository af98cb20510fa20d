"""OCR-VQA (book covers) -> :class:`VQARecord` (task ``vqa``).

``dataset.json`` (OCR-VQA's own file, what MiniGPT-v2 reads): ``{image_key: {"imageURL",
"questions": [...], "answers": [...], "title", "authorName", "genre", "genreID", "split"}}`` with
``split`` 1 = train, 2 = val, 3 = test.  The picture is ``images / (image_key + extension of
imageURL)`` (default ``images`` = ``root/images``, where OCR-VQA's download script puts them).
One record per question, one answer each; file order.
"""

from __future__ import annotations

import os
from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import VQARecord

SPLITS = {"train": 1, "val": 2, "test": 3}


def read_ocrvqa(root: str | Path, split: str = "train", images: str | Path | None = None) -> list[VQARecord]:
    if split not in SPLITS:
        raise DataError(f"OCR-VQA has splits {sorted(SPLITS)}, not {split!r}")
    root = Path(root)
    path = root / "dataset.json" if root.is_dir() else root
    base = Path(images) if images is not None else path.parent / "images"
    data = read_json(path, "OCR-VQA dataset.json")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_key: entry}}, got {type(data).__name__}")
    out: list[VQARecord] = []
    for key, entry in data.items():
        where = f"{path} entry {key!r}"
        if field(entry, "split", where, int) != SPLITS[split]:
            continue
        ext = os.path.splitext(field(entry, "imageURL", where, str))[1] or ".jpg"
        questions = field(entry, "questions", where, list)
        answers = field(entry, "answers", where, list)
        if len(questions) != len(answers):
            raise DataError(f"{where}: {len(questions)} questions but {len(answers)} answers")
        for q, (question, answer) in enumerate(zip(questions, answers)):
            try:
                out.append(
                    VQARecord(
                        image=str(base / f"{key}{ext}"),
                        question=question,
                        answers=[answer],
                        meta={"index": len(out), "image_id": key, "title": entry.get("title"),
                              "genre": entry.get("genre")},
                    )
                )
            except TaskError as err:
                raise DataError(f"{where} question #{q}: {err}") from err
    return out
