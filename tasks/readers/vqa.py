"""VQA-style question files -> :class:`VQARecord` (one per question, in question-file order).

Formats:

* VQAv2 / OK-VQA: the official pair ``questions`` json ``{data_subtype, questions: [{image_id,
  question, question_id}]}`` + ``annotations`` json ``{annotations: [{question_id, answers:
  [{answer, ...}] x 10, answer_type, question_type, ...}]}``; image
  ``COCO_<data_subtype>_<image_id:012d>.jpg``.
* VizWiz: one json list ``[{image, question, answers: [{answer, answer_confidence}] x 10,
  answer_type, answerable}]`` (pass it as ``questions_path``, no annotations file).
* A-OKVQA: one json list ``[{question_id, image_id, question, direct_answers: [10 strings],
  choices, correct_choice_idx, ...}]``; image ``<image_id:012d>.jpg`` (COCO 2017).

Answers are kept as written (all 10, repeats included: VQA accuracy counts them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import VQARecord


def _image(name: str, images: str | Path | None) -> str:
    return str(Path(images) / name) if images is not None else name


def _record(where: str, **kwargs: Any) -> VQARecord:
    try:
        return VQARecord(**kwargs)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def read_vqa(
    questions_path: str | Path,
    annotations_path: str | Path | None = None,
    images: str | Path | None = None,
) -> list[VQARecord]:
    """Records of a VQAv2/OK-VQA pair, or of a single VizWiz / A-OKVQA file (see module doc)."""
    questions = read_json(questions_path, "VQA questions file")
    if annotations_path is not None:
        return _read_pair(questions_path, questions, annotations_path, images)
    if isinstance(questions, dict) and "questions" in questions:
        raise DataError(
            f"{questions_path} is a VQAv2/OK-VQA questions file; pass its annotations file too "
            "(e.g. --annotations mscoco_val2014_annotations.json)"
        )
    if not isinstance(questions, list) or not questions:
        raise DataError(f"{questions_path}: expected a non-empty JSON list (VizWiz or A-OKVQA format)")
    first = questions[0]
    if isinstance(first, dict) and "direct_answers" in first:
        return _read_aokvqa(questions_path, questions, images)
    if isinstance(first, dict) and "answers" in first and "image" in first:
        return _read_vizwiz(questions_path, questions, images)
    raise DataError(
        f"{questions_path}: unknown VQA format (first record has fields {sorted(first)[:10] if isinstance(first, dict) else type(first).__name__}); "
        "expected VizWiz {image, question, answers} or A-OKVQA {image_id, question, direct_answers}"
    )


def _answer_texts(answers: list, where: str) -> list[str]:
    out = []
    for k, a in enumerate(answers):
        out.append(field(a, "answer", f"{where} answer #{k}", str) if isinstance(a, dict) else a)
    return out


def _read_pair(qpath, questions, apath, images) -> list[VQARecord]:
    annotations = read_json(apath, "VQA annotations file")
    qs = field(questions, "questions", str(qpath), list)
    anns = field(annotations, "annotations", str(apath), list)
    subtype = questions.get("data_subtype") or annotations.get("data_subtype")
    if not isinstance(subtype, str):
        raise DataError(f"{qpath}: no 'data_subtype' (e.g. 'val2014'), so the COCO image names are unknown")
    by_qid: dict[Any, dict] = {}
    for k, ann in enumerate(anns):
        by_qid[field(ann, "question_id", f"{apath} annotation #{k}")] = ann
    out: list[VQARecord] = []
    for k, q in enumerate(qs):
        where = f"{qpath} question #{k}"
        qid = field(q, "question_id", where)
        image_id = field(q, "image_id", where, int)
        if qid not in by_qid:
            raise DataError(f"{where}: question_id {qid!r} has no entry in {apath}")
        ann = by_qid[qid]
        answers = _answer_texts(field(ann, "answers", f"{apath} question_id {qid!r}", list), f"{apath} {qid!r}")
        out.append(
            _record(
                where,
                image=_image(f"COCO_{subtype}_{image_id:012d}.jpg", images),
                question=field(q, "question", where, str),
                answers=answers,
                meta={
                    "index": len(out),
                    "question_id": qid,
                    "image_id": image_id,
                    "answer_type": ann.get("answer_type"),
                    "question_type": ann.get("question_type"),
                },
            )
        )
    return out


def _read_vizwiz(path, items, images) -> list[VQARecord]:
    out = []
    for k, item in enumerate(items):
        where = f"{path} record #{k}"
        name = field(item, "image", where, str)
        out.append(
            _record(
                where,
                image=_image(name, images),
                question=field(item, "question", where, str),
                answers=_answer_texts(field(item, "answers", where, list), where),
                meta={
                    "index": len(out),
                    "question_id": name,
                    "answer_type": item.get("answer_type"),
                    "answerable": item.get("answerable"),
                },
            )
        )
    return out


def _read_aokvqa(path, items, images) -> list[VQARecord]:
    out = []
    for k, item in enumerate(items):
        where = f"{path} record #{k}"
        image_id = field(item, "image_id", where, int)
        out.append(
            _record(
                where,
                image=_image(f"{image_id:012d}.jpg", images),
                question=field(item, "question", where, str),
                answers=list(field(item, "direct_answers", where, list)),
                meta={
                    "index": len(out),
                    "question_id": item.get("question_id"),
                    "image_id": image_id,
                    "difficult_direct_answer": item.get("difficult_direct_answer"),
                },
            )
        )
    return out
