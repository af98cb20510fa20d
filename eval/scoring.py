"""Per-item scores and their aggregation for box (refer), answer (VQA-style), identify and
grounded-caption benchmarks.

Every scorer takes the records of a split and the raw answers aligned with them (``None`` = no
prediction for that item) and returns ``(metrics, rows)``: corpus metrics (fractions in 0..1,
denominator = every item of the split, missing and unparseable answers counting as wrong) and
one row per item for reports.  Answers are never re-sampled or repaired here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from eval.metrics import VQAVariant, box_iou, is_hit, normalize_answer, token_f1, vqa_accuracy
from mgv2 import boxes
from tasks.base import phrase_key, pixel_boxes, text_scores
from tasks.grounding import GroundingTask
from tasks.identify import IdentifyTask
from tasks.records import GroundedCaptionRecord, RegionRecord, VQARecord
from tasks.refer import ReferTask

WRONG_OBJECT_IOU = 0.1  # below this a parsed box is "wrong object"; from here up to a hit, "loose box"
# Parsing only, by the one box-text module: the first box of a refer answer, the text of an
# identify answer (box markup removed), the phrase/box groups of a grounded caption.
_REFER = ReferTask()
_IDENTIFY = IdentifyTask()
_GROUNDING = GroundingTask()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --------------------------------------------------------------------------- refer (RefCOCO/+/g)


def centre_inside(pred: Sequence[float], gt: Sequence[float]) -> bool:
    """Centre accuracy decision: the predicted box's centre lies inside the GT box (borders in)."""
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    return gt[0] <= cx <= gt[2] and gt[1] <= cy <= gt[3]


def refer_row(answer: str | None, record: RegionRecord) -> dict[str, Any]:
    """One expression: the first box of the answer against the GT box, in both IoU conventions.

    ``status`` is ``ok``, ``unparseable`` (no box could be read) or ``missing`` (no prediction).
    """
    row: dict[str, Any] = {
        "answer": answer,
        "gt": list(record.box_xyxy),
        "pred": None,
        "iou": 0.0,
        "iou_official": 0.0,
        "centre": False,
        "status": "missing" if answer is None else "unparseable",
        "issues": [],
    }
    if answer is None:
        return row
    result = _REFER.parse(answer)
    row["issues"] = list(result.parsed.issues)
    if result.box is None:
        return row
    pred = boxes.to_pixels(result.box, record.width, record.height)
    row.update(
        pred=list(pred),
        iou=box_iou(pred, record.box_xyxy),
        iou_official=box_iou(pred, record.box_xyxy, plus_one=True),
        centre=centre_inside(pred, record.box_xyxy),
        status="ok",
    )
    return row


def aggregate_refer(rows: Sequence[dict[str, Any]], plus_one: bool = False) -> dict[str, Any]:
    """Acc@0.5 per expression (denominator: all expressions) in both conventions, the chosen one
    as ``acc50``; ``acc75`` and ``miou`` in the chosen convention; centre accuracy; failures.

    Conventions: continuous IoU with ``>= t`` (default) or the official +1-pixel IoU with ``> t``.
    """
    n = len(rows)
    key = "iou_official" if plus_one else "iou"
    ious = [r[key] for r in rows]
    hits = [is_hit(r[key], plus_one=plus_one) for r in rows]
    counts = Counter(r["status"] for r in rows)
    wrong_object = sum(1 for r, h in zip(rows, hits) if r["status"] == "ok" and not h and r[key] < WRONG_OBJECT_IOU)
    loose = sum(1 for r, h in zip(rows, hits) if r["status"] == "ok" and not h and r[key] >= WRONG_OBJECT_IOU)
    return {
        "n": n,
        "iou_convention": "official" if plus_one else "continuous",
        "acc50": _mean([float(h) for h in hits]),
        "acc50_continuous": _mean([float(is_hit(r["iou"])) for r in rows]),
        "acc50_official": _mean([float(is_hit(r["iou_official"], plus_one=True)) for r in rows]),
        "acc75": _mean([float(is_hit(v, plus_one=plus_one, threshold=0.75)) for v in ious]),
        "miou": _mean(ious),
        "centre_acc": _mean([float(r["centre"]) for r in rows]),
        "parse_failure_rate": counts["unparseable"] / n if n else 0.0,
        "n_correct": sum(hits),
        "n_unparseable": counts["unparseable"],
        "n_missing": counts["missing"],
        "n_wrong_object": wrong_object,
        "n_loose_box": loose,
        "n_box_issues": sum(1 for r in rows if r["status"] == "ok" and r["issues"]),
    }


def score_refer(
    records: Sequence[RegionRecord], answers: Sequence[str | None], plus_one: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    _check_lengths(records, answers)
    rows = [refer_row(a, r) for a, r in zip(answers, records)]
    return aggregate_refer(rows, plus_one=plus_one), rows


# --------------------------------------------------------------------------- VQA-style


def vqa_prediction(answer: str) -> str:
    """The prediction handed to the VQA metrics: the model's answer lower-cased and stripped, as
    MiniGPT-v2 writes its results file (the evaluator itself is applied unchanged)."""
    return answer.lower().strip()


_CLOSED_KINDS = {"yes": "yes/no", "no": "yes/no", "true": "true/false", "false": "true/false"}


def answer_kind(text: str) -> str:
    """``yes/no``, ``true/false`` or ``open``: the kind of a (VQA-normalised) answer."""
    return _CLOSED_KINDS.get(normalize_answer(text), "open")


def off_type(pred: str, answers: Sequence[str]) -> bool:
    """True when the prediction's kind (:func:`answer_kind`) is none of the reference answers' kinds:
    "yes" to "What colour is the ball?", "no" to a true/false statement, "red" to "Is it red?".
    A wrong answer of the right kind is not off-type; an empty one is not counted either."""
    return bool(pred) and answer_kind(pred) not in {answer_kind(a) for a in answers}


def vqa_row(answer: str | None, record: VQARecord, metric: str, variant: VQAVariant = "official") -> dict[str, Any]:
    """One question.  ``metric``: ``vqa_acc`` (VQA accuracy, ``variant`` official/legacy) or
    ``exact`` (VQA-normalised prediction equals a VQA-normalised answer: GQA, VSR).  ``off_type``:
    the answer is of another kind than the references (:func:`off_type`)."""
    row: dict[str, Any] = {"answer": answer, "answers": list(record.answers), "score": 0.0, "status": "missing",
                           "off_type": False}
    if answer is None:
        return row
    pred = vqa_prediction(answer)
    row["status"] = "ok" if pred else "empty"
    row["off_type"] = off_type(pred, record.answers)
    if metric == "vqa_acc":
        row["score"] = vqa_accuracy(pred, record.answers, variant=variant)
    elif metric == "exact":
        row["score"] = float(normalize_answer(pred) in {normalize_answer(a) for a in record.answers})
    else:
        raise ValueError(f"unknown answer metric {metric!r}; use 'vqa_acc' or 'exact'")
    return row


def score_vqa(
    records: Sequence[VQARecord],
    answers: Sequence[str | None],
    metric: str,
    variant: VQAVariant = "official",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Mean per-question score over every question, plus a per-answer-type breakdown when the
    records carry ``meta["answer_type"]`` (VQAv2/OK-VQA/VizWiz/GQA structural type).  ``n_off_type``
    (overall and per answer type): answers of the wrong kind, e.g. "yes" to a what-question, a
    failure of reading the question rather than the picture (eighteenth session of the demo model)."""
    _check_lengths(records, answers)
    rows = [vqa_row(a, r, metric, variant) for a, r in zip(answers, records)]
    counts = Counter(r["status"] for r in rows)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, record in zip(rows, records):
        kind = record.meta.get("answer_type")
        if kind is not None:
            by_type[str(kind)].append(row)
    metrics: dict[str, Any] = {
        "n": len(rows),
        "metric": metric,
        "accuracy": _mean([r["score"] for r in rows]),
        "n_empty": counts["empty"],
        "n_missing": counts["missing"],
        "n_wrong": sum(1 for r in rows if r["status"] == "ok" and r["score"] == 0.0),
        "n_off_type": sum(r["off_type"] for r in rows),
    }
    if metric == "vqa_acc":
        metrics["vqa_variant"] = variant
    if by_type:
        metrics["by_answer_type"] = {
            k: {"n": len(v), "accuracy": _mean([r["score"] for r in v]), "n_off_type": sum(r["off_type"] for r in v)}
            for k, v in sorted(by_type.items())
        }
    return metrics, rows


# --------------------------------------------------------------------------- identify (box -> expression)


def identify_row(answer: str | None, record: RegionRecord) -> dict[str, Any]:
    """One object: the answer's text (box markup removed by the identify task's parser) against
    every reference expression of the object (``record.sentences``).

    ``correct``: the VQA-normalised answer (:func:`eval.metrics.normalize_answer`: punctuation
    rule, lowercase, number words to digits, a/an/the dropped) equals the VQA-normalised form of
    ANY reference.  ``exact_light`` and ``token_f1`` are the identify task's own text scores
    (light normalisation; bag-of-words F1 against the best reference).  ``status``: ``ok``,
    ``empty`` (nothing left after normalisation; wrong) or ``missing`` (no prediction; wrong).
    """
    references = list(record.sentences)
    row: dict[str, Any] = {
        "answer": answer,
        "text": None,
        "references": references,
        "correct": False,
        "exact_light": False,
        "token_f1": 0.0,
        "status": "missing",
        "gt": list(record.box_xyxy),
    }
    if answer is None:
        return row
    text = _IDENTIFY.parse(answer).text
    pred = normalize_answer(text)
    row["text"] = text
    if not pred:
        row["status"] = "empty"
        return row
    scores = text_scores(text, references)
    row.update(
        correct=pred in {normalize_answer(r) for r in references},
        exact_light=bool(scores["exact"]),
        token_f1=scores["token_f1"],
        status="ok",
    )
    return row


def score_identify(
    records: Sequence[RegionRecord], answers: Sequence[str | None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Exact match against any reference, one item per OBJECT (the benchmark reader merges the
    expressions of one image + box into one record): ``accuracy`` over every object, missing and
    empty answers counting as wrong; ``exact_light`` and mean best-reference ``token_f1``."""
    _check_lengths(records, answers)
    rows = [identify_row(a, r) for a, r in zip(answers, records)]
    counts = Counter(r["status"] for r in rows)
    metrics: dict[str, Any] = {
        "n": len(rows),
        "metric": "identify_exact",
        "normalisation": "VQA answer normalisation (eval.metrics.normalize_answer)",
        "accuracy": _mean([float(r["correct"]) for r in rows]),
        "exact_light": _mean([float(r["exact_light"]) for r in rows]),
        "token_f1": _mean([r["token_f1"] for r in rows]),
        "n_correct": sum(r["correct"] for r in rows),
        "n_references": sum(len(r["references"]) for r in rows),
        "n_wrong": sum(1 for r in rows if r["status"] == "ok" and not r["correct"]),
        "n_empty": counts["empty"],
        "n_missing": counts["missing"],
    }
    return metrics, rows


# --------------------------------------------------------------------------- grounded captions


def grounding_row(answer: str | None, record: GroundedCaptionRecord, plus_one: bool = False) -> dict[str, Any]:
    """One grounded caption: the answer's ``<p>phrase</p> {boxes}`` groups (the grounding task's
    parser) against the record's ground-truth phrases, all boxes in pixels of the original image.

    A GT phrase is ``text_found`` when the answer has a phrase with the same light-normalised
    text (:func:`tasks.base.phrase_key`), and ``matched`` when moreover one of the boxes written
    for that text (all groups of the text pooled, as the grounding task scores) hits one of the
    GT phrase's boxes (IoU >= 0.5 continuous; official +1-pixel IoU > 0.5 with ``plus_one``).
    A predicted phrase is ``matched`` when some GT phrase of the same text has a box hit by one
    of its boxes (no one-to-one assignment).  ``status``: ``ok``, ``unparseable`` (the parser
    reported issues, e.g. a phrase without boxes or cut-off box text: what could be read is
    still scored), ``empty`` or ``missing``.
    """
    gt = [
        {"phrase": record.phrase_text(ph), "boxes": [list(b) for b in ph.boxes], "text_found": False,
         "matched": False}
        for ph in record.phrases
    ]
    row: dict[str, Any] = {"answer": answer, "caption": None, "gt_phrases": gt, "pred_phrases": [],
                           "n_bare_boxes": 0, "caption_f1": 0.0, "status": "missing", "issues": []}
    if answer is None:
        return row
    result = _GROUNDING.parse(answer)
    pred = [
        {"phrase": g.phrase, "boxes": [list(b) for b in pixel_boxes(g.boxes, record.width, record.height)],
         "matched": False}
        for g in result.groups
        if g.phrase is not None
    ]

    def hit(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> bool:
        return any(is_hit(box_iou(p, q, plus_one=plus_one), plus_one=plus_one) for p in a for q in b)

    pooled: dict[str | None, list[list[float]]] = {}
    for p in pred:
        pooled.setdefault(phrase_key(p["phrase"]), []).extend(p["boxes"])
    for g in gt:
        key = phrase_key(g["phrase"])
        g["text_found"] = key in pooled
        g["matched"] = hit(pooled.get(key, []), g["boxes"])
    for p in pred:
        key = phrase_key(p["phrase"])
        p["matched"] = any(hit(p["boxes"], g["boxes"]) for g in gt if phrase_key(g["phrase"]) == key)
    row.update(
        caption=result.caption,
        pred_phrases=pred,
        n_bare_boxes=sum(1 for g in result.groups if g.phrase is None),
        caption_f1=token_f1(result.caption, record.caption),
        issues=list(result.parsed.issues),
        status="empty" if not answer.strip() else ("ok" if result.parsed.ok else "unparseable"),
    )
    return row


def score_grounding(
    records: Sequence[GroundedCaptionRecord], answers: Sequence[str | None], plus_one: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Phrase recall over ALL ground-truth phrases of all captions (missing answers find none),
    text-only phrase recall, phrase precision over all predicted phrases, the parse-failure rate
    over captions and the mean bag-of-words F1 of the plain caption text (not CIDEr)."""
    _check_lengths(records, answers)
    rows = [grounding_row(a, r, plus_one=plus_one) for a, r in zip(answers, records)]
    gt = [g for r in rows for g in r["gt_phrases"]]
    pred = [p for r in rows for p in r["pred_phrases"]]
    counts = Counter(r["status"] for r in rows)
    n_matched = sum(g["matched"] for g in gt)
    n_found = sum(g["text_found"] for g in gt)
    n_pred_matched = sum(p["matched"] for p in pred)
    metrics: dict[str, Any] = {
        "n": len(rows),
        "metric": "phrase_recall",
        "iou_convention": "official" if plus_one else "continuous",
        "phrase_recall": n_matched / len(gt) if gt else 0.0,
        "text_recall": n_found / len(gt) if gt else 0.0,
        "phrase_precision": n_pred_matched / len(pred) if pred else 0.0,
        "parse_failure_rate": counts["unparseable"] / len(rows) if rows else 0.0,
        "caption_f1": _mean([r["caption_f1"] for r in rows]),
        "n_phrases": len(gt),
        "n_matched": n_matched,
        "n_text_found": n_found,
        "n_pred_phrases": len(pred),
        "n_pred_matched": n_pred_matched,
        "n_bare_boxes": sum(r["n_bare_boxes"] for r in rows),
        "n_ungrounded": sum(1 for r in rows if r["status"] in ("ok", "unparseable") and not r["pred_phrases"]),
        "n_unparseable": counts["unparseable"],
        "n_empty": counts["empty"],
        "n_missing": counts["missing"],
    }
    return metrics, rows


def _check_lengths(records: Sequence, answers: Sequence) -> None:
    if len(records) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(records)} records; align them by index (None = missing)")
