"""LLaVA-Instruct-150K (and MiniGPT-v2's multi-task conversations) -> :class:`ConversationRecord`.

Files: ``conversation_58k.json`` (source ``llava_conversation``), ``detail_23k.json``
(``llava_detail``), ``complex_reasoning_77k.json`` (``llava_reason``), MiniGPT-v2's
``multitask_conversation.json`` (``multitask_conversation``).  Each is a JSON list of
``{"id", "image", "conversations": [{"from": "human", "value"}, {"from": "gpt", "value"}, ...]}``.
``root`` is the file or the folder holding it; all are training data (split ``train``).

Following MiniGPT-v2's loaders:

* the picture is ``images / f"COCO_train2014_{id}.jpg"`` (``image_name="coco2014"``, default);
  ``image_name="field"`` uses the file's ``image`` field instead; ``images`` defaults to the
  annotation folder;
* the first user turn loses its ``<image>`` tag and its newlines, and is stripped;
* detail and reasoning keep only the first exchange (the official loaders read
  ``conversations[0]`` and ``[1]``); conversations keep every turn.

``process_instruction=True`` puts the user turn of detail/reasoning through the training text
processor, as the official loader does (it lowercases and cuts to 50 words); off by default.
Turns must alternate human, gpt, human, gpt...; anything else raises :class:`DataError`.
"""

from __future__ import annotations

from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, read_json
from tasks.records import ConversationRecord
from tasks.text import process_text

FILES = {
    "conversation": "conversation_58k.json",
    "detail": "detail_23k.json",
    "reason": "complex_reasoning_77k.json",
    "multitask": "multitask_conversation.json",
}
_ROLES = ("human", "gpt")


def _turns(conv: list, where: str) -> list[tuple[str, str]]:
    if not conv or len(conv) % 2:
        raise DataError(f"{where}: conversations must hold human/gpt pairs, got {len(conv)} messages")
    texts = []
    for m, msg in enumerate(conv):
        mwhere = f"{where} message #{m}"
        role = field(msg, "from", mwhere, str)
        if role != _ROLES[m % 2]:
            raise DataError(f"{mwhere}: expected from={_ROLES[m % 2]!r}, got {role!r} (turns must alternate)")
        texts.append(field(msg, "value", mwhere, str))
    texts[0] = texts[0].replace("<image>", "").replace("\n", "").strip()
    return [(texts[i].strip(), texts[i + 1].strip()) for i in range(0, len(texts), 2)]


def read_llava(
    root: str | Path,
    kind: str = "conversation",
    split: str = "train",
    images: str | Path | None = None,
    image_name: str = "coco2014",
    process_instruction: bool = False,
) -> list[ConversationRecord]:
    """Records of one LLaVA file (``kind``: conversation, detail, reason or multitask)."""
    if kind not in FILES:
        raise DataError(f"unknown LLaVA file kind {kind!r}; choose from {sorted(FILES)}")
    if split != "train":
        raise DataError(f"LLaVA-Instruct is training data only; use split='train', not {split!r}")
    if image_name not in ("coco2014", "field"):
        raise DataError(f"image_name must be 'coco2014' or 'field', got {image_name!r}")
    root = Path(root)
    path = root / FILES[kind] if root.is_dir() else root
    base = Path(images) if images is not None else path.parent
    data = read_json(path, f"LLaVA {kind} file")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of conversations, got {type(data).__name__}")
    out: list[ConversationRecord] = []
    for k, item in enumerate(data):
        where = f"{path} record #{k}"
        ident = str(field(item, "id", where, (str, int)))
        name = f"COCO_train2014_{ident}.jpg" if image_name == "coco2014" else field(item, "image", where, str)
        turns = _turns(field(item, "conversations", where, list), where)
        if kind in ("detail", "reason"):
            turns = turns[:1]
            if process_instruction:
                turns = [(process_text(turns[0][0]), turns[0][1])]
        try:
            out.append(ConversationRecord(image=str(base / name), turns=turns,
                                          meta={"index": len(out), "id": ident, "record": k, "source": kind}))
        except TaskError as err:
            raise DataError(f"{where}: {err}") from err
    return out


def read_llava_conversation(root: str | Path, split: str = "train", **options) -> list[ConversationRecord]:
    return read_llava(root, "conversation", split, **options)


def read_llava_detail(root: str | Path, split: str = "train", **options) -> list[ConversationRecord]:
    return read_llava(root, "detail", split, **options)


def read_llava_reason(root: str | Path, split: str = "train", **options) -> list[ConversationRecord]:
    return read_llava(root, "reason", split, **options)


def read_multitask_conversation(root: str | Path, split: str = "train", **options) -> list[ConversationRecord]:
    return read_llava(root, "multitask", split, **options)
