"""Reading an evaluation run folder (what ``mgv2 eval`` writes) for the app's second page.

A run folder holds ``predictions.jsonl`` (one item per line), ``metrics.json``, ``report.md``, an
IoU histogram PNG and a contact sheet PNG.  This module is tolerant about field names so that
small changes in the evaluator do not blank the page; what it reads per item:

* ``id`` (else the line number), ``split`` (and ``benchmark`` when present, shown together);
* ``image``: a path, absolute or relative to the run folder / its parent / the repository;
* the prompt (``prompt`` / ``instruction`` / ``question``) and expression (``sent`` ...);
* ``answer``: the raw model text; ``gt`` and ``pred``: pixel boxes ``[x1, y1, x2, y2]`` (one box
  or a list); when ``pred`` is absent the answer is parsed with :mod:`mgv2.boxes`;
* ``iou``, ``status`` and ``outcome``.  Without an ``outcome`` it is derived the way
  ``eval.scoring`` counts failures: no box read -> ``unparseable``; a hit at IoU 0.5 ->
  ``correct``; IoU below ``eval.scoring.WRONG_OBJECT_IOU`` -> ``wrong object``; otherwise
  ``loose box``.  Items without ground-truth boxes (VQA-style) are ``correct`` when their
  ``score`` is positive, else ``wrong answer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgv2 import boxes as B

OUTCOMES = ("correct", "unparseable", "wrong object", "loose box", "wrong answer", "missing")
PREDICTIONS = "predictions.jsonl"

try:  # the evaluator's own threshold, so page and metrics agree
    from eval.scoring import WRONG_OBJECT_IOU
except ImportError:  # pragma: no cover
    WRONG_OBJECT_IOU = 0.1


class RunError(Exception):
    """A folder that is not a readable run; the message says what is missing."""


@dataclass
class EvalItem:
    index: int
    id: str
    split: str
    image: str | None
    prompt: str
    answer: str | None
    gt: list[list[float]]
    pred: list[list[float]]
    iou: float | None
    outcome: str
    size: tuple[int, int] | None = None
    issues: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Run:
    folder: Path
    items: list[EvalItem]
    metrics: dict[str, Any]
    report: str | None
    histogram: Path | None
    contact_sheet: Path | None
    other_pictures: list[Path]
    skipped: list[str]  # lines of predictions.jsonl that could not be read, with the reason

    @property
    def splits(self) -> list[str]:
        return sorted({i.split for i in self.items})

    @property
    def outcomes(self) -> list[str]:
        present = {i.outcome for i in self.items}
        return [o for o in OUTCOMES if o in present] + sorted(present - set(OUTCOMES))

    def filter(self, splits: list[str] | None = None, outcomes: list[str] | None = None) -> list[EvalItem]:
        return [i for i in self.items
                if (splits is None or i.split in splits) and (outcomes is None or i.outcome in outcomes)]


def find_runs(*roots: Path, depth: int = 4) -> list[Path]:
    """Folders holding ``predictions.jsonl`` under ``roots`` (newest first)."""
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for level in range(depth + 1):
            for path in root.glob("/".join(["*"] * level + [PREDICTIONS])):
                found.add(path.parent.resolve())
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _first(row: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return default


def _box_list(value: Any) -> list[list[float]]:
    """One box ``[x1, y1, x2, y2]`` or a list of them -> list of boxes (bad entries dropped)."""
    if not value:
        return []
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        return [[float(v) for v in value]]
    out = []
    if isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, dict):
                v = _first(v, "box", "bbox", "xyxy")
            if isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, (int, float)) for x in v):
                out.append([float(x) for x in v])
    return out


def _outcome(row: dict, gt: list, pred: list, iou: float | None) -> str:
    given = row.get("outcome")
    if isinstance(given, str) and given.strip():
        return given.strip().replace("_", " ").lower()
    status = str(row.get("status", "")).lower()
    if status == "missing":
        return "missing"
    if not gt:  # answer-style item
        score = row.get("score")
        if status in ("empty", "unparseable"):
            return "unparseable"
        return "correct" if isinstance(score, (int, float)) and score > 0 else "wrong answer"
    if status == "unparseable" or not pred or iou is None:
        return "unparseable"
    from eval.metrics import is_hit

    if is_hit(iou):
        return "correct"
    return "wrong object" if iou < WRONG_OBJECT_IOU else "loose box"


def item_from_row(index: int, row: dict) -> EvalItem:
    split = str(_first(row, "split", default="?"))
    bench = row.get("benchmark") or row.get("dataset")
    if bench and str(bench) not in split:
        split = f"{bench} {split}" if split != "?" else str(bench)
    width, height = row.get("width"), row.get("height")
    size = (int(width), int(height)) if isinstance(width, (int, float)) and isinstance(height, (int, float)) else None
    answer = _first(row, "answer", "prediction", "text", "output")
    gt = _box_list(_first(row, "gt", "gt_box", "gt_boxes", "box_xyxy"))
    pred = _box_list(_first(row, "pred", "pred_box", "pred_boxes"))
    issues = [str(i) for i in row.get("issues", []) or []]
    if not pred and isinstance(answer, str) and size is not None and "pred" not in row:
        parsed = B.parse(answer)
        pred = [list(B.to_pixels(b, *size)) for b in parsed.boxes if b.valid]
        issues = issues or list(parsed.issues)
    iou = row.get("iou")
    if not isinstance(iou, (int, float)):
        iou = None
        if gt and pred:
            from eval.metrics import box_iou

            iou = box_iou(pred[0], gt[0])
    prompt = _first(row, "prompt", "instruction", "question", default="")
    expression = _first(row, "sent", "expression", "sentence", "query")
    if expression and str(expression) not in str(prompt):
        prompt = f"{prompt} ({expression})" if prompt else str(expression)
    return EvalItem(
        index=index, id=str(_first(row, "id", "item_id", "ref_id", "question_id", default=index)), split=split,
        image=_first(row, "image", "image_path", "file_name", "img_path"), prompt=str(prompt),
        answer=answer if isinstance(answer, str) or answer is None else str(answer),
        gt=gt, pred=pred, iou=float(iou) if iou is not None else None,
        outcome=_outcome(row, gt, pred, iou), size=size, issues=issues, raw=row,
    )


def _picture(folder: Path, *words: str) -> Path | None:
    for png in sorted(folder.glob("*.png")):
        if any(w in png.name.lower() for w in words):
            return png
    return None


def read_run(folder: str | Path) -> Run:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise RunError(f"{folder} is not a folder; give the folder `mgv2 eval` wrote (it holds {PREDICTIONS})")
    preds = folder / PREDICTIONS
    if not preds.is_file():
        raise RunError(f"{folder} has no {PREDICTIONS}; is it an evaluation run folder?")
    items: list[EvalItem] = []
    skipped: list[str] = []
    for n, line in enumerate(preds.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError("not a JSON object")
            items.append(item_from_row(len(items), row))
        except (ValueError, TypeError) as err:
            skipped.append(f"line {n}: {err}")
    metrics: dict[str, Any] = {}
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        try:
            loaded = json.loads(metrics_path.read_text())
            metrics = loaded if isinstance(loaded, dict) else {"value": loaded}
        except ValueError as err:
            skipped.append(f"metrics.json: {err}")
    report_path = folder / "report.md"
    report = report_path.read_text(errors="replace") if report_path.is_file() else None
    histogram = _picture(folder, "hist", "iou")
    contact = _picture(folder, "contact", "sheet")
    others = [p for p in sorted(folder.glob("*.png")) if p not in (histogram, contact)]
    return Run(folder, items, metrics, report, histogram, contact, others, skipped)


def metrics_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics as table rows.  ``{split: {name: value}}`` -> one row per split with a column per
    scalar metric; anything else -> (metric, value) rows with dotted names."""
    if metrics and all(isinstance(v, dict) for v in metrics.values()):
        rows = []
        for split, values in metrics.items():
            row: dict[str, Any] = {"split": split}
            for k, v in _flatten(values).items():
                row[k] = v
            rows.append(row)
        return rows
    return [{"metric": k, "value": v} for k, v in _flatten(metrics).items()]


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[name] = v
        else:
            out[name] = json.dumps(v)
    return out


def resolve_image(item: EvalItem, run_folder: Path, extra_roots: list[Path] | None = None) -> Path | None:
    if not item.image:
        return None
    p = Path(str(item.image)).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    from app.config import ROOT

    for root in [run_folder, run_folder.parent, Path.cwd(), ROOT, *(extra_roots or [])]:
        if (root / p).is_file():
            return root / p
    return None
