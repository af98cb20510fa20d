"""Visual Genome region descriptions -> :class:`RegionRecord` (refer / identify).

Files (Visual Genome v1.2, what MiniGPT-v2 reads through ``visual_genome.local``), in ``root``:

* ``region_descriptions.json``: a list, one entry per image, ``{"id": image_id, "regions":
  [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}, ...]}``;
* ``image_data.json``: a list of ``{"image_id" (or "id"), "url", "width", "height", ...}``;
* pictures in ``VG_100K/`` and ``VG_100K_2/``: the last two parts of each image's ``url``
  (MiniGPT-v2's rule), joined to ``images`` (default ``root``).

Only regions with ``width * height < max_area`` are kept (SPEC §4: 16384 px, OFA's rule; pass
``max_area=None`` to keep all).  Regions without area or without a phrase are skipped (Visual
Genome has some; their number is logged as a warning); a region with missing or
mistyped fields raises :class:`DataError` naming the file and the region.  Visual Genome has no
official split: ``split`` must be ``"train"`` (or ``"all"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import RegionRecord

log = logging.getLogger(__name__)

MAX_AREA = 16384
_NUMBER = (int, float)


def _image_table(path: Path) -> dict[int, dict]:
    data = read_json(path, "Visual Genome image_data.json")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of images, got {type(data).__name__}")
    out = {}
    for k, img in enumerate(data):
        where = f"{path} image #{k}"
        image_id = field(img, "image_id" if isinstance(img, dict) and "image_id" in img else "id", where, int)
        out[image_id] = {
            "width": field(img, "width", where, _NUMBER),
            "height": field(img, "height", where, _NUMBER),
            "file": "/".join(field(img, "url", where, str).rstrip("/").split("/")[-2:]),
        }
    return out


def read_vg_regions(
    root: str | Path,
    split: str = "train",
    images: str | Path | None = None,
    max_area: float | None = MAX_AREA,
    limit: int | None = None,
) -> list[RegionRecord]:
    """One record per kept region, in file order (``limit``: stop after that many)."""
    if split not in ("train", "all"):
        raise DataError(f"Visual Genome has no {split!r} split; use split='train' (all regions)")
    root = Path(root)
    images = Path(images) if images is not None else root
    table = _image_table(root / "image_data.json")
    path = root / "region_descriptions.json"
    data = read_json(path, "Visual Genome region_descriptions.json")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list (one entry per image), got {type(data).__name__}")
    out: list[RegionRecord] = []
    skipped = 0
    for k, entry in enumerate(data):
        ewhere = f"{path} entry #{k}"
        for r, region in enumerate(field(entry, "regions", ewhere, list)):
            where = f"{ewhere} region #{r}"
            if not isinstance(region, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(region).__name__}")
            image_id = field(region, "image_id", where, int) if "image_id" in region else field(entry, "id", ewhere, int)
            x, y = field(region, "x", where, _NUMBER), field(region, "y", where, _NUMBER)
            w, h = field(region, "width", where, _NUMBER), field(region, "height", where, _NUMBER)
            phrase = field(region, "phrase", where, str).strip()
            if max_area is not None and not (w * h < max_area):
                continue
            if w <= 0 or h <= 0 or not phrase:
                skipped += 1
                continue
            if image_id not in table:
                raise DataError(f"{where}: image_id {image_id} is not in {root / 'image_data.json'}")
            img = table[image_id]
            try:
                out.append(
                    RegionRecord(
                        image=str(images / img["file"]),
                        width=img["width"],
                        height=img["height"],
                        expression=phrase,
                        box_xyxy=(x, y, x + w, y + h),
                        meta={"index": len(out), "image_id": image_id, "region_id": region.get("region_id")},
                    )
                )
            except TaskError as err:
                raise DataError(f"{where}: {err}") from err
            if limit is not None and len(out) >= limit:
                break
        if limit is not None and len(out) >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d regions without area or phrase", path, skipped)
    return out
