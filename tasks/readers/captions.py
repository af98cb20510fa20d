"""Short-caption sources -> :class:`CaptionRecord` (task ``caption``): COCO Karpathy, TextCaps.

COCO captions, Karpathy split (source ``coco_caption``), either file of:

* LAVIS / MiniGPT-v2 ``coco_karpathy_<split>.json``: a list; train entries are ``{caption,
  image, image_id}`` (one per caption), val/test entries ``{image, caption: [...]}``; ``image``
  is relative to the COCO images folder (``train2014/COCO_train2014_...jpg``);
* Karpathy's ``dataset_coco.json``: ``{"images": [{filepath, filename, split, sentences:
  [{raw, ...}], cocoid}]}``; split ``train`` also takes the ``restval`` images (the usual
  113k-image training set) unless ``restval=False``.

``root`` is the file or the folder holding it (``coco_karpathy_<split>.json`` is looked for
first, then ``dataset_coco.json``); ``images`` (default: the annotation file's folder) is what
the image paths are relative to.  One record per caption.  ``train2014_only=True`` keeps only
images whose path contains ``train`` (MiniGPT-v2's COCOCapDataset does this, dropping the
Karpathy restval images).

TextCaps (source ``textcaps``): ``TextCaps_0.1_<split>.json`` = ``{"data": [{image_id,
image_path, caption_str, caption_id, reference_strs, ...}]}``, one entry per caption; the picture
is ``images / image_path`` (default ``images`` = the annotation folder).  The test split has no
captions and is refused.
"""

from __future__ import annotations

from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import CaptionRecord


def _caption(image: str, caption: str, meta: dict, where: str) -> CaptionRecord:
    try:
        return CaptionRecord(image=image, caption=caption, meta=meta)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def _karpathy_file(root: Path, split: str) -> Path:
    if not root.is_dir():
        return root
    lavis = root / f"coco_karpathy_{split}.json"
    if lavis.is_file():
        return lavis
    original = root / "dataset_coco.json"
    if original.is_file():
        return original
    raise DataError(f"no COCO caption file in {root}: expected coco_karpathy_{split}.json or dataset_coco.json")


def read_coco_caption(
    root: str | Path,
    split: str = "train",
    images: str | Path | None = None,
    restval: bool = True,
    train2014_only: bool = False,
) -> list[CaptionRecord]:
    """COCO captions of the Karpathy ``split`` (train, val, test); see the module doc."""
    path = _karpathy_file(Path(root), split)
    base = Path(images) if images is not None else path.parent
    data = read_json(path, "COCO caption file")
    out: list[CaptionRecord] = []
    if isinstance(data, list):  # LAVIS
        for k, item in enumerate(data):
            where = f"{path} record #{k}"
            rel = field(item, "image", where, str)
            if train2014_only and "train" not in rel:
                continue
            caps = field(item, "caption", where, (str, list))
            for c, cap in enumerate([caps] if isinstance(caps, str) else caps):
                cwhere = where if isinstance(caps, str) else f"{where} caption #{c}"
                if not isinstance(cap, str):
                    raise DataError(f"{cwhere}: caption should be a string, got {type(cap).__name__}")
                meta = {"index": len(out), "image_id": item.get("image_id", rel), "record": k}
                out.append(_caption(str(base / rel), cap, meta, cwhere))
        return out
    if isinstance(data, dict) and "images" in data:  # Karpathy's dataset_coco.json
        wanted = {split, "restval"} if (split == "train" and restval) else {split}
        for k, img in enumerate(field(data, "images", str(path), list)):
            where = f"{path} image #{k}"
            if field(img, "split", where, str) not in wanted:
                continue
            rel = f"{field(img, 'filepath', where, str)}/{field(img, 'filename', where, str)}"
            if train2014_only and "train" not in rel:
                continue
            for s, sent in enumerate(field(img, "sentences", where, list)):
                swhere = f"{where} sentence #{s}"
                meta = {"index": len(out), "image_id": img.get("cocoid"), "record": k}
                out.append(_caption(str(base / rel), field(sent, "raw", swhere, str).strip(), meta, swhere))
        return out
    raise DataError(f"{path}: not a Karpathy caption file (expected a LAVIS list or {{'images': [...]}})")


def read_textcaps(root: str | Path, split: str = "train", images: str | Path | None = None) -> list[CaptionRecord]:
    """TextCaps captions of ``split`` (train or val), one record per caption."""
    if split == "test":
        raise DataError("the TextCaps test split has no captions; read split='train' or 'val'")
    root = Path(root)
    path = root / f"TextCaps_0.1_{split}.json" if root.is_dir() else root
    base = Path(images) if images is not None else path.parent
    data = read_json(path, "TextCaps annotation file")
    out: list[CaptionRecord] = []
    for k, item in enumerate(field(data, "data", str(path), list)):
        where = f"{path} record #{k}"
        image_id = field(item, "image_id", where, str)
        rel = item.get("image_path") if isinstance(item.get("image_path"), str) else f"{image_id}.jpg"
        meta = {
            "index": len(out),
            "image_id": image_id,
            "caption_id": item.get("caption_id"),
            "references": list(item.get("reference_strs") or []),
        }
        out.append(_caption(str(base / rel), field(item, "caption_str", where, str), meta, where))
    return out
