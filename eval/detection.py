"""Detection mAP: answers -> COCO results -> pycocotools ``COCOeval`` (the reference number),
cross-checked with supervision's ``MeanAveragePrecision`` on the same boxes.

Conversion rules (written down because they decide the number):

* each ``<p>phrase</p> {box}<delim>{box}`` group of an answer gives one detection per box; the
  phrase is mapped to a COCO category by name (lower-cased, punctuation-insensitive); a phrase
  that names no category is dropped and counted (``n_unknown_phrase``); a bare box (no phrase)
  takes the category of the query when the query names exactly one category, else it is dropped;
* boxes are grid boxes on the ORIGINAL image (``mgv2.boxes.to_pixels``), written as COCO
  ``[x, y, w, h]``; inverted or zero-area boxes are dropped;
* the model gives no confidence: the k-th detection of an answer gets score ``1 / (1 + k)``
  (answer order is the only ranking signal there is);
* COCOeval runs on the original ground-truth file restricted to the evaluated images (crowd
  regions are "ignore" there); supervision sees the non-crowd boxes only, so the two agree
  exactly on crowd-free data and may differ slightly otherwise (interpolation details too).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from eval.metrics import normalize_for_match
from mgv2 import boxes
from tasks.detection import DetectionTask
from tasks.records import DetectionRecord

_TASK = DetectionTask()
CROSS_CHECK_TOLERANCE = 0.02


def category_index(coco) -> dict[str, int]:
    """Normalised category name -> COCO category id."""
    return {normalize_for_match(c["name"]): int(c["id"]) for c in coco.dataset.get("categories", [])}


def answer_to_coco(
    answer: str | None, record: DetectionRecord, categories: dict[str, int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """COCO result dicts of one answer, and a report row (status, counts, dropped phrases)."""
    row: dict[str, Any] = {"answer": answer, "status": "missing", "n_det": 0, "n_unknown_phrase": 0, "n_invalid": 0}
    if answer is None:
        return [], row
    result = _TASK.parse(answer)
    row["status"] = "ok" if result.ok else "unparseable"
    query_cats = {categories.get(normalize_for_match(p)) for p, _ in record.groups()}
    single = next(iter(query_cats)) if len(query_cats) == 1 else None
    dets: list[dict[str, Any]] = []
    for phrase, found in result.objects:
        cat = categories.get(normalize_for_match(phrase)) if phrase is not None else single
        if cat is None:
            row["n_unknown_phrase"] += len(found)
            continue
        for box in found:
            if not box.valid:
                row["n_invalid"] += 1
                continue
            x1, y1, x2, y2 = boxes.to_pixels(box, record.width, record.height)
            dets.append(
                {
                    "image_id": int(record.meta["image_id"]),
                    "category_id": cat,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0 / (1 + len(dets)),
                }
            )
    row["n_det"] = len(dets)
    return dets, row


def coco_map(coco_gt, results: list[dict[str, Any]], image_ids: Sequence[int]) -> dict[str, float]:
    """COCOeval bbox on ``image_ids``: mAP@[.5:.95], AP50, AP75 and AR@100 (0 with no detections)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"map50_95": 0.0, "map50": 0.0, "map75": 0.0, "ar100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: -1 means "no ground truth in this bucket"; report 0 for the headline numbers then
    s = [max(float(v), 0.0) for v in ev.stats]
    return {"map50_95": s[0], "map50": s[1], "map75": s[2], "ar100": s[8]}


def supervision_map(
    records: Sequence[DetectionRecord], results: list[dict[str, Any]], categories: dict[str, int]
) -> dict[str, float]:
    """supervision's MeanAveragePrecision on the same detections (targets: the records' boxes)."""
    import supervision as sv
    from supervision.metrics import MeanAveragePrecision

    by_image: dict[int, list[dict[str, Any]]] = {}
    for det in results:
        by_image.setdefault(int(det["image_id"]), []).append(det)
    preds, targets = [], []
    for record in records:
        cats = [categories[normalize_for_match(p)] for p, _ in record.objects]
        targets.append(
            sv.Detections(
                xyxy=np.asarray([b for _, b in record.objects], dtype=np.float64).reshape(-1, 4),
                class_id=np.asarray(cats, dtype=int),
            )
        )
        dets = by_image.get(int(record.meta["image_id"]), [])
        xyxy = [[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]] for d in dets]
        preds.append(
            sv.Detections(
                xyxy=np.asarray(xyxy, dtype=np.float64).reshape(-1, 4),
                class_id=np.asarray([d["category_id"] for d in dets], dtype=int),
                confidence=np.asarray([d["score"] for d in dets], dtype=np.float64),
            )
        )
    if not results:
        return {"map50_95": 0.0, "map50": 0.0, "map75": 0.0}
    res = MeanAveragePrecision().update(preds, targets).compute()
    return {"map50_95": max(float(res.map50_95), 0.0), "map50": max(float(res.map50), 0.0),
            "map75": max(float(res.map75), 0.0)}


def score_detection(
    records: Sequence[DetectionRecord], answers: Sequence[str | None], coco_gt
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """COCO mAP of the answers (see module doc), with supervision's numbers beside it."""
    if len(records) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(records)} records")
    categories = category_index(coco_gt)
    results: list[dict[str, Any]] = []
    rows = []
    for answer, record in zip(answers, records):
        dets, row = answer_to_coco(answer, record, categories)
        results.extend(dets)
        rows.append(row)
    image_ids = [int(r.meta["image_id"]) for r in records]
    ref = coco_map(coco_gt, results, image_ids)
    sv_ = supervision_map(records, results, categories)
    diff = max(abs(ref[k] - sv_[k]) for k in ("map50_95", "map50", "map75"))
    n = len(rows)
    return (
        {
            "n": n,
            **ref,
            "supervision": sv_,
            "cross_check_max_abs_diff": diff,
            "cross_check_ok": diff <= CROSS_CHECK_TOLERANCE,
            "n_detections": len(results),
            "parse_failure_rate": sum(r["status"] == "unparseable" for r in rows) / n if n else 0.0,
            "n_unparseable": sum(r["status"] == "unparseable" for r in rows),
            "n_missing": sum(r["status"] == "missing" for r in rows),
            "n_unknown_phrase": sum(r["n_unknown_phrase"] for r in rows),
            "n_invalid_box": sum(r["n_invalid"] for r in rows),
        },
        rows,
    )
