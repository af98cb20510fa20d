"""Per-item scores and their aggregation for box (refer) and answer (VQA-style) benchmarks.

Every scorer takes the records of a split and the raw answers aligned with them (``None`` = no
prediction for that item) and returns ``(metrics, rows)``: corpus metrics (fractions in 0..1,
denominator = every item of the split, missing and unparseable answers counting as wrong) and
one row per item for reports.  Answers are never re-sampled or repaired here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from eval.metrics import VQAVariant, box_iou, is_hit, normalize_answer, vqa_accuracy
from mgv2 import boxes
from tasks.records import RegionRecord, VQARecord
from tasks.refer import ReferTask

WRONG_OBJECT_IOU = 0.1  # below this a parsed box is "wrong object"; from here up to a hit, "loose box"
_REFER = ReferTask()  # parsing only: the first box of the answer, by the one box-text module


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


def vqa_row(answer: str | None, record: VQARecord, metric: str, variant: VQAVariant = "official") -> dict[str, Any]:
    """One question.  ``metric``: ``vqa_acc`` (VQA accuracy, ``variant`` official/legacy) or
    ``exact`` (VQA-normalised prediction equals a VQA-normalised answer: GQA, VSR)."""
    row: dict[str, Any] = {"answer": answer, "answers": list(record.answers), "score": 0.0, "status": "missing"}
    if answer is None:
        return row
    pred = vqa_prediction(answer)
    row["status"] = "ok" if pred else "empty"
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
    records carry ``meta["answer_type"]`` (VQAv2/OK-VQA/VizWiz/GQA structural type)."""
    _check_lengths(records, answers)
    rows = [vqa_row(a, r, metric, variant) for a, r in zip(answers, records)]
    counts = Counter(r["status"] for r in rows)
    by_type: dict[str, list[float]] = defaultdict(list)
    for row, record in zip(rows, records):
        kind = record.meta.get("answer_type")
        if kind is not None:
            by_type[str(kind)].append(row["score"])
    metrics: dict[str, Any] = {
        "n": len(rows),
        "metric": metric,
        "accuracy": _mean([r["score"] for r in rows]),
        "n_empty": counts["empty"],
        "n_missing": counts["missing"],
        "n_wrong": sum(1 for r in rows if r["status"] == "ok" and r["score"] == 0.0),
    }
    if metric == "vqa_acc":
        metrics["vqa_variant"] = variant
    if by_type:
        metrics["by_answer_type"] = {k: {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(by_type.items())}
    return metrics, rows


def _check_lengths(records: Sequence, answers: Sequence) -> None:
    if len(records) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(records)} records; align them by index (None = missing)")
