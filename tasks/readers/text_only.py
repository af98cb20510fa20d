"""Text-only instruction sets -> :class:`ConversationRecord` with ``image=None`` (task ``chat``).

* Unnatural Instructions (source ``unnatural_instructions``): MiniGPT-v2's filtered JSON list, or
  the original ``core_data.jsonl``; each entry ``{"instruction", "instances": [{
  "instruction_with_input", "input", "constraints", "output"}]}``.  As MiniGPT-v2 does, the user
  turn is ``instruction_with_input`` (plus ``" " + constraints`` when there are constraints) and
  only the first instance is used (``all_instances=True`` takes all).
* Alpaca / Dolly (sources ``alpaca``, ``dolly``): a JSON list or jsonl of ``{"instruction",
  "input", "output"}`` (Alpaca) or ``{"instruction", "context", "response"}`` (Dolly); the user
  turn is the instruction, followed by a blank line and the input/context when there is one.

``root`` is the file, or a folder holding ``unnatural_instruction_filer.json`` /
``core_data.jsonl`` / ``alpaca_data.json`` / ``databricks-dolly-15k.jsonl``.  ``process=True``
puts both sides through the training text processor, as MiniGPT-v2's unnatural-instruction
loader does (lowercase, 50 words); off by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mgv2.errors import TaskError
from tasks.readers.base import DataError, field, iter_jsonl, read_json
from tasks.records import ConversationRecord
from tasks.text import process_text

DEFAULT_FILES = {
    "unnatural": ("unnatural_instruction_filer.json", "unnatural_instructions.json", "core_data.jsonl"),
    "alpaca": ("alpaca_data.json", "alpaca.json", "databricks-dolly-15k.jsonl"),
}


def _locate(root: str | Path, kind: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        return root
    for name in DEFAULT_FILES[kind]:
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {kind} file in {root}: expected one of {', '.join(DEFAULT_FILES[kind])}")


def _entries(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, entry) for a JSON list or a jsonl file."""
    if path.suffix == ".jsonl":
        for line, obj in iter_jsonl(path, "instruction jsonl"):
            yield f"{path}:{line}", obj
        return
    data = read_json(path, "instruction file")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of instructions, got {type(data).__name__}")
    for k, obj in enumerate(data):
        yield f"{path} record #{k}", obj


def _record(user: str, assistant: str, meta: dict, where: str, process: bool) -> ConversationRecord:
    if process:
        user, assistant = process_text(user), process_text(assistant)
    try:
        return ConversationRecord(image=None, turns=[(user, assistant)], meta=meta)
    except TaskError as err:
        raise DataError(f"{where}: {err}") from err


def read_unnatural_instructions(
    root: str | Path, split: str = "train", all_instances: bool = False, process: bool = False
) -> list[ConversationRecord]:
    if split != "train":
        raise DataError(f"Unnatural Instructions is training data only; use split='train', not {split!r}")
    path = _locate(root, "unnatural")
    out: list[ConversationRecord] = []
    for where, entry in _entries(path):
        instances = field(entry, "instances", where, list)
        if not instances:
            raise DataError(f"{where}: 'instances' is empty")
        for i, inst in enumerate(instances if all_instances else instances[:1]):
            iwhere = f"{where} instance #{i}"
            user = field(inst, "instruction_with_input", iwhere, str)
            constraints = inst.get("constraints") if isinstance(inst, dict) else None
            if constraints is not None:
                if not isinstance(constraints, str):
                    raise DataError(f"{iwhere}: 'constraints' should be a string or null")
                user = f"{user} {constraints}"
            output = field(inst, "output", iwhere, str)
            out.append(_record(user, output, {"index": len(out)}, iwhere, process))
    return out


def read_alpaca(root: str | Path, split: str = "train", process: bool = False) -> list[ConversationRecord]:
    """Alpaca-style (instruction/input/output) or Dolly-style (instruction/context/response)."""
    if split != "train":
        raise DataError(f"instruction sets are training data only; use split='train', not {split!r}")
    path = _locate(root, "alpaca")
    out: list[ConversationRecord] = []
    for where, entry in _entries(path):
        instruction = field(entry, "instruction", where, str).strip()
        context_key = "input" if "input" in entry else "context" if "context" in entry else None
        context = field(entry, context_key, where, str).strip() if context_key else ""
        answer_key = "output" if "output" in entry or "response" not in entry else "response"
        answer = field(entry, answer_key, where, str)
        user = f"{instruction}\n\n{context}" if context else instruction
        meta = {"index": len(out)}
        if isinstance(entry.get("category"), str):
            meta["category"] = entry["category"]
        out.append(_record(user, answer.strip(), meta, where, process))
    return out
