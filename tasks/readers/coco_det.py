"""COCO-format detection ground truth -> one :class:`DetectionRecord` per image.

Category names are the phrases.  Crowd annotations (``iscrowd=1``) and boxes without area are
not objects to find (COCOeval treats crowd regions as "ignore"; the scorer keeps the original
file for that); images left with no object are skipped.  Records come in the file's image order;
``meta`` holds the COCO ``image_id`` and the ``category_id`` of every object.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from mgv2.boxes import xywh_to_xyxy
from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json, require_file
from tasks.records import DetectionRecord


def load_coco(path: str | Path):
    """pycocotools ``COCO`` of an annotation file.  Its progress prints go to stderr (so that
    ``--json`` output stays clean); a malformed file raises :class:`DataError` naming it."""
    from pycocotools.coco import COCO

    path = require_file(path, "COCO annotation file")
    data = read_json(path, "COCO annotation file")
    if not (
        isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)
    ):
        raise DataError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(sys.stderr):
        try:
            coco.createIndex()
        except (KeyError, TypeError) as err:
            raise DataError(f"{path}: malformed COCO annotations ({type(err).__name__}: {err})") from err
    return coco


def read_coco_detection(annotations_path: str | Path, images_dir: str | Path | None = None) -> list[DetectionRecord]:
    """Detection records of a COCO instances file; ``image`` = ``images_dir / file_name``."""
    coco = load_coco(annotations_path)
    names = {}
    for cat in coco.dataset.get("categories", []):
        where = f"{annotations_path} category {cat.get('id')!r}"
        names[field(cat, "id", where, int)] = field(cat, "name", where, str)
    out: list[DetectionRecord] = []
    for img in coco.dataset["images"]:
        where = f"{annotations_path} image {img.get('id')!r}"
        image_id = field(img, "id", where, int)
        file_name = field(img, "file_name", where, str)
        objects, category_ids = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            awhere = f"{annotations_path} annotation {ann.get('id')!r}"
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in field(ann, "bbox", awhere, list))
            if w <= 0 or h <= 0:
                continue
            cid = field(ann, "category_id", awhere, int)
            if cid not in names:
                raise DataError(f"{awhere}: category_id {cid} is not among the file's categories")
            objects.append((names[cid], xywh_to_xyxy((x, y, w, h))))
            category_ids.append(cid)
        if not objects:
            continue
        try:
            record = DetectionRecord(
                image=str(Path(images_dir) / file_name) if images_dir is not None else file_name,
                width=img.get("width"),
                height=img.get("height"),
                objects=objects,
                meta={"image_id": image_id, "category_ids": category_ids, "file_name": file_name},
            )
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
        out.append(record)
    return out
