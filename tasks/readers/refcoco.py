"""RefCOCO / RefCOCO+ / RefCOCOg readers: one :class:`RegionRecord` per referring SENTENCE.

Two layouts are read:

* the refer toolkit layout (lichengunc/refer): ``root/<dataset>/instances.json`` (COCO format,
  read with pycocotools) and ``root/<dataset>/refs(<split_by>).p`` (a python-2 pickle of plain
  dicts, read with the data-only unpickler).  Split schemes: ``unc`` for refcoco / refcoco+,
  ``umd`` (or ``google``) for refcocog.
* the MiniGPT-v2 evaluation json (``eval_scripts/eval_data/<dataset>_<split>.json``): a list of
  ``{img_id, sents, bbox: [x, y, w, h], height, width}``, one record per expression; the image
  file is ``img_id[:27] + ".jpg"`` (COCO train2014).

The official evaluation iterates expressions, so both readers return one record per sentence,
in file order; ``meta["index"]`` is the record's position in the returned list.  The expression
is the refer toolkit's ``sent`` field (lower-cased, tokenised), which is what the MiniGPT-v2
evaluation json holds.  ``image`` is the file name, joined to ``images`` when given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mgv2.boxes import xywh_to_xyxy
from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, load_data_pickle, read_json
from tasks.readers.coco_det import load_coco
from tasks.records import RegionRecord

DATASETS = ("refcoco", "refcoco+", "refcocog")
SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"), "refcocog": ("val", "test")}
EVAL_JSON_IMAGE_CHARS = 27  # "COCO_train2014_000000580957" of "COCO_train2014_000000580957_4"


def _image_path(name: str, images: str | Path | None) -> str:
    return os.path.join(images, name) if images is not None else name


def _region(where: str, **kwargs: Any) -> RegionRecord:
    try:
        return RegionRecord(**kwargs)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def read_refcoco(
    root: str | Path,
    dataset: str = "refcoco",
    split: str = "val",
    split_by: str | None = None,
    images: str | Path | None = None,
    max_words: int | None = None,
    min_same_category: int | None = None,
) -> list[RegionRecord]:
    """Records of ``split`` from ``root/<dataset>/instances.json`` + ``refs(<split_by>).p``.

    ``split_by`` defaults to ``unc`` (refcoco, refcoco+) or ``umd`` (refcocog).  Refs are taken in
    pickle order, sentences in ref order.  Boxes come from the COCO annotation ``ann_id`` (pixel
    ``xywh`` -> ``xyxy``), image size and file name from the COCO image ``image_id``.

    ``max_words`` keeps only sentences of at most that many words (a curriculum: short
    expressions such as "red balloon" before relational ones; dataset option ``max_words``).
    ``min_same_category`` keeps only refs whose image holds at least that many annotations of
    the ref's category, itself included (2: the object has a same-category distractor, as in
    RefCOCO's testA / testB people, so its category alone does not name it; dataset option).
    """
    if max_words is not None and max_words < 1:
        raise DataError(f"max_words must be >= 1 (or null for every sentence), got {max_words}")
    if min_same_category is not None and min_same_category < 1:
        raise DataError(f"min_same_category must be >= 1 (or null for every ref), got {min_same_category}")
    folder = Path(root) / dataset
    split_by = split_by or SPLIT_BY.get(dataset, "unc")
    coco = load_coco(folder / "instances.json")
    refs_path = folder / f"refs({split_by}).p"
    refs = load_data_pickle(refs_path, f"refer pickle ({split_by} split)")
    if not isinstance(refs, list):
        raise DataError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    splits_seen: set[str] = set()
    out: list[RegionRecord] = []
    for k, ref in enumerate(refs):
        where = f"{refs_path} ref #{k}"
        ref_split = field(ref, "split", where, str)
        splits_seen.add(ref_split)
        if ref_split != split:
            continue
        ann_id = field(ref, "ann_id", where, int)
        image_id = field(ref, "image_id", where, int)
        if ann_id not in coco.anns:
            raise DataError(f"{where}: ann_id {ann_id} is not in {folder / 'instances.json'}")
        if image_id not in coco.imgs:
            raise DataError(f"{where}: image_id {image_id} is not in {folder / 'instances.json'}")
        ann, img = coco.anns[ann_id], coco.imgs[image_id]
        if min_same_category is not None:
            same = coco.getAnnIds(imgIds=[image_id], catIds=[ann.get("category_id")])
            if len(same) < min_same_category:
                continue
        box = xywh_to_xyxy(field(ann, "bbox", f"{where} annotation {ann_id}", list))
        file_name = field(img, "file_name", f"{where} image {image_id}", str)
        for s, sent in enumerate(field(ref, "sentences", where, list)):
            text = field(sent, "sent", f"{where} sentence #{s}", str)
            if max_words is not None and len(text.split()) > max_words:
                continue
            out.append(
                _region(
                    f"{where} sentence #{s}",
                    image=_image_path(file_name, images),
                    width=img.get("width"),
                    height=img.get("height"),
                    expression=text,
                    box_xyxy=box,
                    meta={
                        "index": len(out),
                        "dataset": dataset,
                        "split": split,
                        "ref_id": ref.get("ref_id"),
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "sent_id": sent.get("sent_id"),
                        "category_id": ref.get("category_id"),
                        "file_name": file_name,
                    },
                )
            )
    if split not in splits_seen:
        raise DataError(f"{refs_path}: no ref has split {split!r}; splits in the file: {sorted(splits_seen)}")
    return out


def read_refcoco_eval_json(path: str | Path, images: str | Path | None = None) -> list[RegionRecord]:
    """Records of a MiniGPT-v2 evaluation json (one per expression, in file order).

    ``sents`` may also be a list (one record per sentence).  The image file is
    ``img_id[:27] + ".jpg"``; ``meta`` keeps ``img_id`` (unique per ref in these files) and the
    file name.
    """
    path = Path(path)
    data = read_json(path, "RefCOCO evaluation json")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{img_id, sents, bbox, height, width}}")
    out: list[RegionRecord] = []
    for k, item in enumerate(data):
        where = f"{path} record #{k}"
        img_id = field(item, "img_id", where, str)
        sents = field(item, "sents", where, (str, list))
        bbox = field(item, "bbox", where, list)
        width = field(item, "width", where, (int, float))
        height = field(item, "height", where, (int, float))
        if len(bbox) != 4:
            raise DataError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        file_name = img_id[:EVAL_JSON_IMAGE_CHARS] + ".jpg"
        for sent in [sents] if isinstance(sents, str) else sents:
            out.append(
                _region(
                    where,
                    image=_image_path(file_name, images),
                    width=width,
                    height=height,
                    expression=sent,
                    box_xyxy=xywh_to_xyxy(bbox),
                    meta={"index": len(out), "img_id": img_id, "file_name": file_name, "record": k},
                )
            )
    return out
