"""Answers judged by the synthetic world's own meaning of its words.

A benchmark of an ``mgv2 synth`` folder scores answers against the few expressions the export
wrote for each object (SPEC §7's metrics).  The world itself knows more: which description
(kind, colour, superlative, relation) each expression is, and, for any sentence in the world's
grammar, which objects of the picture it is true of (:func:`mgv2.synth.world.text_meanings`).
:class:`WorldJudge` reads the folder's ``scenes.jsonl`` and answers three questions about one
benchmark record (picture + box):

* :meth:`WorldJudge.locate`: which object of which scene the record's box is;
* :meth:`WorldJudge.family`: what an expression of that object relies on (``kind``, ``color``,
  ``superlative``, ``relation`` and their combinations; ``unknown`` if the world never wrote it);
* :meth:`WorldJudge.judge_description`: whether a generated description (an identify answer)
  names the object: ``names it`` (true of it alone), ``ambiguous`` (true of it and others),
  ``another object`` (true of others only) or ``not true`` (of no object, or not a sentence of
  the world's grammar).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from eval.metrics import box_iou, normalize_answer, normalize_for_match
from mgv2.errors import MGV2Error
from mgv2.synth.language import expressions_by_family, family_subset_odds
from mgv2.synth.world import Scene, scene_from_manifest, text_meanings

VERDICTS = ("names it", "ambiguous", "another object", "not true")
# a record's box is the visible box the export wrote (rounded to 0.01 px): anything looser is
# not a box of this world
_MIN_IOU = 0.9


class WorldError(MGV2Error, ValueError):
    """The folder is not an ``mgv2 synth`` world, or a record does not belong to it."""


# lower case, punctuation dropped, single spaces: the world's own texts come out unchanged
normalise = normalize_for_match


class WorldJudge:
    """The scenes of one ``mgv2 synth`` folder, keyed by picture file name (built lazily)."""

    def __init__(self, folder: str | Path) -> None:
        manifest = Path(folder) / "scenes.jsonl"
        if not manifest.is_file():
            raise WorldError(f"{folder} has no scenes.jsonl: pass the folder `mgv2 synth --out` wrote")
        self._entries: dict[str, dict] = {}
        for line in manifest.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                self._entries[entry["file_name"]] = entry
        self._scenes: dict[str, Scene] = {}
        self._meanings: dict[int, dict[str, set[int]]] = {}  # by image id

    def scene(self, image: str | Path) -> Scene:
        name = Path(str(image)).name
        if name not in self._entries:
            raise WorldError(f"picture {name} is not in this world's scenes.jsonl; pass the world the benchmark came from")
        if name not in self._scenes:
            self._scenes[name] = scene_from_manifest(self._entries[name])
        return self._scenes[name]

    def locate(self, image: str | Path, box_xyxy: Sequence[float]) -> tuple[Scene, int]:
        """``(scene, object index)`` of a record: the object whose visible box is the record's box."""
        scene = self.scene(image)
        ious = [box_iou(o.visible_box, box_xyxy) for o in scene.objects]
        best = max(range(len(ious)), key=ious.__getitem__)
        if ious[best] < _MIN_IOU:
            raise WorldError(
                f"no object of {Path(str(image)).name} has the box {list(box_xyxy)} (best IoU {ious[best]:.2f}); "
                "the annotations are not from this world"
            )
        return scene, best

    def family(self, scene: Scene, index: int, sentence: str) -> str:
        """The description family of ``sentence`` as an expression of object ``index``."""
        text = normalise(sentence)
        for t, desc in scene.unique.get(index, []):
            if t == text:
                return desc.family
        return "unknown"

    def judge_description(self, scene: Scene, index: int, text: str) -> str:
        """One of :data:`VERDICTS` for ``text`` as a description of object ``index``."""
        text = normalise(text)
        if any(t == text for t, _ in scene.unique.get(index, [])):  # unique_texts: it and only it, strictly
            return "names it"
        if scene.image_id not in self._meanings:
            self._meanings[scene.image_id] = text_meanings(scene)
        objects = self._meanings[scene.image_id].get(text, set()) - {-1}
        if index in objects:
            return "ambiguous"
        return "another object" if objects else "not true"

    def best_guess(self, scene: Scene, index: int) -> tuple[str, float]:
        """``(answer, odds)``: the description of object ``index`` (one of the world's own texts)
        most likely to be among the expressions the export wrote for it, and how likely that is
        (answers compared as the identify metric compares them, :func:`eval.metrics.normalize_answer`).  No answerer can
        expect a higher exact match on this object: the export draws 1-3 of its many true
        descriptions at random (:func:`mgv2.synth.language.referring_sentences`)."""
        by_family = expressions_by_family(scene.unique.get(index, []))
        if not by_family:
            raise WorldError(f"object {index} of picture {scene.image_id} has no unique description")
        odds = family_subset_odds(tuple(by_family))
        shares: dict[str, dict[str, float]] = {}  # normalised answer -> family -> share of its texts
        wording: dict[str, str] = {}  # normalised answer -> the first of the world's texts for it
        for family, texts in by_family.items():
            for text in texts:
                key = normalize_answer(text)
                wording[key] = min(wording.get(key, text), text)
                per = shares.setdefault(key, {})
                per[family] = per.get(family, 0.0) + 1.0 / len(texts)
        best, best_odds = "", -1.0
        for key, per in sorted(shares.items()):
            # P(written) = sum over the family subsets the export may draw of P(subset) * P(one of
            # the answer's texts is picked in one of them); one text is picked per family
            p = sum(q * (1.0 - math.prod(1.0 - per.get(f, 0.0) for f in subset)) for subset, q in odds.items())
            if p > best_odds:
                best, best_odds = wording[key], p
        return best, best_odds


def _grouped(keys: Sequence, items: Sequence, by_size: bool) -> dict[str, list]:
    """``items`` grouped by ``keys``: families largest group first (``by_size``), object counts
    (ints) in order and named ``"N objects"``."""
    out: dict = {}
    for k, item in zip(keys, items):
        out.setdefault(k, []).append(item)
    if by_size:
        return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))
    return {f"{k} objects": v for k, v in sorted(out.items())}


# Object sizes: the square root of the box's share of the picture, as a fraction of its side.  In a
# 128-px model frame the edges are 16, 24, 32 and 40 px (1, 1.5, 2 and 2.5 patches of 16 px).
SIZE_EDGES = (0.125, 0.1875, 0.25, 0.3125)


def size_group(box_xyxy: Sequence[float], width: float, height: float) -> str:
    """The :data:`SIZE_EDGES` group of a box, e.g. ``"side 12-19%"`` (of the picture's side)."""
    x1, y1, x2, y2 = box_xyxy
    side = math.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1) / (width * height))
    edges = (0.0, *SIZE_EDGES, math.inf)
    k = next(i for i in range(len(edges) - 1) if side < edges[i + 1])
    lo, hi = edges[k], edges[k + 1]
    if hi == math.inf:
        return f"side {lo * 100:g}%+"
    return f"side {lo * 100:g}-{hi * 100:g}%" if lo else f"side < {hi * 100:g}%"


def refer_breakdown(judge: WorldJudge, records: Sequence, rows: Sequence[dict], plus_one: bool = False) -> dict:
    """Refer accuracy by expression family, by the number of objects in the picture and by the
    object's size (:func:`size_group`), each group scored by :func:`eval.scoring.aggregate_refer`:
    Acc@0.5, wrong object, loose box."""
    from eval.scoring import aggregate_refer

    families, counts, sizes = [], [], []
    for rec in records:
        scene, index = judge.locate(rec.image, rec.box_xyxy)
        families.append(judge.family(scene, index, rec.expression))
        counts.append(len(scene.objects))
        sizes.append(size_group(rec.box_xyxy, rec.width, rec.height))

    def table(keys: list, by_size: bool) -> dict:
        out = {}
        for k, group in _grouped(keys, rows, by_size).items():
            m = aggregate_refer(group, plus_one=plus_one)
            out[k] = {"n": m["n"], "acc50": m["acc50"], "wrong_object": m["n_wrong_object"] / m["n"],
                      "loose_box": m["n_loose_box"] / m["n"]}
        return out

    order = {size_group((0, 0, e * 0.999, e * 0.999), 1.0, 1.0): i for i, e in enumerate((*SIZE_EDGES, 1.0))}
    by_size = dict(sorted(table(sizes, True).items(), key=lambda kv: order[kv[0]]))
    return {"by_family": table(families, True), "by_objects": table(counts, False), "by_size": by_size}


def identify_breakdown(judge: WorldJudge, records: Sequence, rows: Sequence[dict]) -> dict:
    """How often an identify answer names the boxed object in the world's own semantics (any
    true, unambiguous description counts, not only the exported ones), with the other verdicts
    (:data:`VERDICTS`; ``no answer`` for missing or empty ones), overall and by objects in the picture,
    and ``exact_ceiling``: the exact match an answerer that always names the object can expect."""
    verdicts, counts, ceiling = [], [], []
    for rec, row in zip(records, rows):
        scene, index = judge.locate(rec.image, rec.box_xyxy)
        ok = row["status"] == "ok" and row["text"]
        verdicts.append(judge.judge_description(scene, index, row["text"]) if ok else "no answer")
        counts.append(len(scene.objects))
        ceiling.append(judge.best_guess(scene, index)[1])
    n = len(rows)
    names = [float(v == "names it") for v in verdicts]
    return {
        "names_object": sum(names) / n if n else 0.0,
        # the expected exact match of an answerer that always names the object with its likeliest
        # exported expression (WorldJudge.best_guess): the most any model can expect here
        "exact_ceiling": sum(ceiling) / n if n else 0.0,
        "verdicts": {v: sum(x == v for x in verdicts) for v in (*VERDICTS, "no answer")},
        "by_objects": {k: {"n": len(g), "names_object": sum(g) / len(g)}
                       for k, g in _grouped(counts, names, False).items()},
    }
