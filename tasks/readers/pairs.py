"""Image-text pairs for stage 1 (LAION / CC3M / SBU style) -> :class:`CaptionRecord` (task ``caption``).

* A folder of pairs (source ``pairs_folder``), as img2dataset writes it or by hand: every picture
  (``.jpg .jpeg .png .webp .bmp``) has its caption next to it in ``<stem>.txt``, or in
  ``<stem>.json`` under ``"caption"``; sub-folders are searched, in sorted order.  ``image`` is
  the picture's path.
* webdataset tar shards (source ``pairs_tar``), read with the standard library's ``tarfile``:
  ``root`` is one ``.tar`` or a folder of them (sorted).  Members are grouped into samples by
  webdataset's rule (the key is the path up to the first dot of the file name, the extension is
  the rest); a sample's picture is its ``jpg``/``jpeg``/``png``/``webp`` member and its caption
  the ``txt`` member or ``json["caption"]``.  ``image`` is the picture's BYTES (what
  :func:`mgv2.image.load_image` takes), so reading holds the pictures in memory: use ``limit``,
  or :func:`iter_pairs_tar` to stream a large corpus.

A picture without a caption, an empty caption or a damaged tar raises :class:`DataError`
naming the file (and the sample key).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError
from tasks.records import CaptionRecord

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _record(image, caption: str, meta: dict, where: str) -> CaptionRecord:
    try:
        return CaptionRecord(image=image, caption=caption, meta=meta)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def _json_caption(data: bytes | str, where: str) -> str:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{where}: caption json is not valid JSON ({err})") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str):
        raise DataError(f"{where}: caption json has no string 'caption' field")
    return obj["caption"]


def read_pairs_folder(root: str | Path, split: str = "train", limit: int | None = None) -> list[CaptionRecord]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"pairs folder not found: {root}")
    out: list[CaptionRecord] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
        txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
        if txt.is_file():
            try:
                caption = txt.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataError(f"{txt}: not UTF-8 text ({err})") from err
            where = str(txt)
        elif js.is_file():
            caption, where = _json_caption(js.read_bytes(), str(js)).strip(), str(js)
        else:
            raise DataError(f"{path}: picture without a caption (expected {txt.name} or {js.name} next to it)")
        out.append(_record(str(path), caption, {"index": len(out), "key": str(path.relative_to(root))}, where))
        if limit is not None and len(out) >= limit:
            break
    return out


def _shards(root: Path) -> list[Path]:
    if root.is_dir():
        shards = sorted(root.glob("*.tar"))
        if not shards:
            raise DataError(f"no .tar shards in {root}")
        return shards
    if not root.is_file():
        raise DataError(f"tar shard not found: {root}")
    return [root]


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: ``dir/000001.seg.jpg`` -> (``dir/000001``, ``seg.jpg``)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    try:
        with tarfile.open(shard, mode="r:*") as tar:
            current, members = None, {}
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key != current:
                    if current is not None:
                        yield current, members
                    current, members = key, {}
                f = tar.extractfile(info)
                members[ext] = f.read() if f is not None else b""
            if current is not None:
                yield current, members
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{shard}: cannot read as a tar shard ({err})") from err


def iter_pairs_tar(root: str | Path, limit: int | None = None) -> Iterator[CaptionRecord]:
    """Stream the records of one shard or a folder of shards (see the module doc)."""
    n = 0
    for shard in _shards(Path(root)):
        for key, members in _samples(shard):
            where = f"{shard} sample {key!r}"
            image = next((members[e] for e in TAR_IMAGE_EXTS if e in members), None)
            if image is None:
                raise DataError(f"{where}: no picture member (one of .{', .'.join(TAR_IMAGE_EXTS)}); has {sorted(members)}")
            if "txt" in members:
                try:
                    caption = members["txt"].decode("utf-8").strip()
                except UnicodeDecodeError as err:
                    raise DataError(f"{where}: .txt caption is not UTF-8 ({err})") from err
            elif "json" in members:
                caption = _json_caption(members["json"], where).strip()
            else:
                raise DataError(f"{where}: no caption (.txt or .json with 'caption'); has {sorted(members)}")
            yield _record(image, caption, {"index": n, "shard": str(shard), "key": key}, where)
            n += 1
            if limit is not None and n >= limit:
                return


def read_pairs_tar(root: str | Path, split: str = "train", limit: int | None = None) -> list[CaptionRecord]:
    return list(iter_pairs_tar(root, limit))
