"""MiniGPT-4's detailed-description alignment set (cc_sbu_align) -> :class:`ConversationRecord`.

Layout: ``root/filter_cap.json`` = ``{"annotations": [{"image_id": "2", "caption": "..."}]}`` and
the pictures ``root/image/<image_id>.jpg`` (``images`` overrides the picture folder).

The captions are long, detailed descriptions, so the records are one-turn chats (task
``chat``), not short captions (the caption task would cut them to 50 words).  The user turn is
one of MiniGPT-4's four alignment prompts (``prompts/alignment.txt``), taken in turn by record
position so that the reader stays deterministic; the task side draws nothing.
"""

from __future__ import annotations

from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import ConversationRecord

PROMPTS: tuple[str, ...] = (
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
)


def read_cc_sbu_align(root: str | Path, split: str = "train", images: str | Path | None = None) -> list[ConversationRecord]:
    if split != "train":
        raise DataError(f"cc_sbu_align is training data only; use split='train', not {split!r}")
    root = Path(root)
    path = root / "filter_cap.json" if root.is_dir() else root
    base = Path(images) if images is not None else path.parent / "image"
    data = read_json(path, "cc_sbu_align filter_cap.json")
    out: list[ConversationRecord] = []
    for k, ann in enumerate(field(data, "annotations", str(path), list)):
        where = f"{path} annotation #{k}"
        image_id = str(field(ann, "image_id", where, (str, int)))
        caption = field(ann, "caption", where, str)
        try:
            out.append(ConversationRecord(image=str(base / f"{image_id}.jpg"),
                                          turns=[(PROMPTS[k % len(PROMPTS)], caption.strip())],
                                          meta={"index": len(out), "image_id": image_id}))
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
    return out
