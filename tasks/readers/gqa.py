"""GQA questions json ``{question_id: {imageId, question, answer, fullAnswer, isBalanced, types,
...}}`` -> :class:`VQARecord` with the one short ``answer`` (file order; image ``<imageId>.jpg``).

``balanced_only=True`` keeps the questions with ``isBalanced`` true (the testdev-balanced file
holds only those already).
"""

from __future__ import annotations

from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import VQARecord


def read_gqa(path: str | Path, images: str | Path | None = None, balanced_only: bool = False) -> list[VQARecord]:
    data = read_json(path, "GQA questions file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{question_id: question}}, got {type(data).__name__}")
    out: list[VQARecord] = []
    for qid, q in data.items():
        where = f"{path} question {qid!r}"
        balanced = bool(field(q, "isBalanced", where)) if "isBalanced" in q else True
        if balanced_only and not balanced:
            continue
        image_id = field(q, "imageId", where, str)
        types = q.get("types") if isinstance(q.get("types"), dict) else {}
        try:
            out.append(
                VQARecord(
                    image=str(Path(images) / f"{image_id}.jpg") if images is not None else f"{image_id}.jpg",
                    question=field(q, "question", where, str),
                    answers=[field(q, "answer", where, str)],
                    meta={
                        "index": len(out),
                        "question_id": qid,
                        "image_id": image_id,
                        "is_balanced": balanced,
                        "answer_type": types.get("structural"),
                        "full_answer": q.get("fullAnswer"),
                    },
                )
            )
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
    return out
