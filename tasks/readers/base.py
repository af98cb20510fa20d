"""What every reader shares: file loading with clear errors, and a safe unpickler."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mgv2.errors import MGV2Error


class DataError(MGV2Error):
    """A dataset file or record is malformed; the message names the file and the record."""


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def read_json(path: str | Path, what: str = "annotation file") -> Any:
    path = require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from err


def iter_jsonl(path: str | Path, what: str = "jsonl file") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; a bad line names file and line."""
    path = require_file(path, what)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not valid JSON ({err})") from err
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def field(record: dict, key: str, where: str, types: type | tuple[type, ...] = object) -> Any:
    """``record[key]`` checked for presence and type; errors name ``where`` (file + record)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(record)[:10]})")
    value = record[key]
    if types is not object and not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise DataError(f"{where}: field {key!r} should be {names}, got {type(value).__name__} {value!r:.60}")
    return value


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (dict, list, str, numbers, tuples) and refuses every class or
    function reference, so a pickle cannot run code.  The refer toolkit's ``refs(unc).p``
    files hold only such data."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only plain data (dicts, lists, strings, numbers) is allowed"
        )


def load_data_pickle(path: str | Path, what: str = "pickle file") -> Any:
    """Load a pickle of plain data safely (python 2 pickles included)."""
    path = require_file(path, what)
    data = path.read_bytes()
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DataError(f"{path}: cannot load as a plain-data pickle ({err})") from err
