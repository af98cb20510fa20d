"""The scene model of the synthetic world: objects with exact shapely outlines.

A :class:`Scene` is a picture size, a background and a list of :class:`SceneObject` in drawing
order (later objects are in front).  Everything the exported annotations say is computed here
from the geometry, never from pixels:

* ``visible`` = the object's outline minus the union of the outlines in front of it, so the
  ``visible_box`` (what COCO/RefCOCO call the box) is exact under occlusion;
* spatial relations between objects (:func:`relation`) on the visible boxes, each in a strict
  form (used for true statements) and a loose form (used to prove that no distractor could be
  meant);
* referring expressions (:class:`Desc`): a description resolves to the set of objects it
  matches; :func:`unique_texts` keeps only texts that pick exactly one object, also when every
  description that renders to the same text is taken into account.

Coordinates are continuous pixels: ``x`` in ``[0, width]``, ``y`` in ``[0, height]`` (y down);
pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``.  Scenes are a pure function of
``(seed, index)`` (:func:`make_scene`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

# ------------------------------------------------------------------------------------ vocabulary

KINDS: tuple[str, ...] = ("balloon", "ball", "box", "cup", "star", "kite", "heart")
PLURALS: dict[str, str] = {k: ("boxes" if k == "box" else k + "s") for k in KINDS}
FOCUS_KIND = "balloon"  # testA is about balloons (RefCOCO testA: people), testB about the rest

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 36, 36),
    "orange": (242, 136, 18),
    "yellow": (238, 214, 30),
    "green": (36, 158, 58),
    "blue": (36, 78, 214),
    "purple": (128, 52, 178),
    "pink": (240, 120, 184),
    "brown": (122, 72, 34),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted", "speckled", "wavy")

SIZES: tuple[tuple[int, int], ...] = ((256, 256), (320, 240), (240, 320), (288, 224), (320, 256))

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# Placement rules: every object stays well visible, and no visible piece is a sliver.
MIN_VISIBLE_FRACTION = 0.5
MIN_VISIBLE_AREA = 150.0
MIN_PART_AREA = 25.0
# Referring rules.
SIZE_MARGIN = 1.35  # "biggest": area at least 1.35x the runner-up
POSITION_MARGIN = 0.1  # "leftmost": centre at least 10% of the width ahead of the runner-up
OVERLAP_MIN = 30.0  # "in front of": overlap of at least 30 px^2 ...
OVERLAP_FRACTION = 0.03  # ... and 3% of the smaller outline


# ------------------------------------------------------------------------------------ outlines


def _star(cx: float, cy: float, r_out: float, r_in: float, angle: float) -> Polygon:
    pts = []
    for k in range(10):
        r = r_out if k % 2 == 0 else r_in
        a = angle + k * math.pi / 5 - math.pi / 2
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return Polygon(pts)


def _heart(cx: float, cy: float, size: float) -> Polygon:
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    s = size / 34.0
    return Polygon(list(zip(cx + s * x, cy - s * (y + 2.5))))


def _wavy_line(x0: float, y0: float, length: float, amplitude: float, phase: float) -> LineString:
    ys = np.linspace(0, length, 12)
    xs = amplitude * np.sin(ys / max(length, 1e-6) * 2 * math.pi + phase)
    return LineString(list(zip(x0 + xs, y0 + ys)))


def shape_parts(kind: str, cx: float, cy: float, size: float, angle: float, aspect: float) -> dict:
    """Geometry of one object: ``body`` (the coloured part), optional ``string`` (a thin dark part
    that belongs to the object: balloon string, kite tail) and decoration ``lines``.  ``angle`` is
    in degrees (rotation about the centre), ``aspect`` stretches boxes."""
    s = size
    lines: list[LineString] = []
    string = None
    if kind == "ball":
        body = Point(cx, cy).buffer(s / 2, quad_segs=16)
        lines.append(LineString([(cx - s / 2, cy), (cx + s / 2, cy)]))
    elif kind == "balloon":
        ell = affinity.scale(Point(cx, cy - 0.12 * s).buffer(1.0, quad_segs=16), 0.38 * s, 0.48 * s)
        bottom = cy - 0.12 * s + 0.48 * s
        knot = Polygon([(cx - 0.06 * s, bottom + 0.06 * s), (cx + 0.06 * s, bottom + 0.06 * s), (cx, bottom - 0.04 * s)])
        body = shapely.union(ell, knot)
        string = _wavy_line(cx, bottom + 0.04 * s, 0.42 * s, 0.05 * s, angle).buffer(1.0, quad_segs=2)
    elif kind == "box":
        w, h = 0.84 * s * aspect, 0.84 * s / aspect
        body = box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        lines.append(LineString([(cx - w / 2, cy - h / 4), (cx + w / 2, cy - h / 4)]))
        lines.append(LineString([(cx, cy - h / 2), (cx, cy + h / 2)]))
    elif kind == "cup":
        top, bot, h = 0.66 * s, 0.46 * s, 0.74 * s
        x0 = cx - 0.1 * s
        cup = Polygon([(x0 - top / 2, cy - h / 2), (x0 + top / 2, cy - h / 2), (x0 + bot / 2, cy + h / 2), (x0 - bot / 2, cy + h / 2)])
        hx = x0 + 0.5 * (top + bot) / 2
        ring = Point(hx, cy - 0.02 * s).buffer(0.21 * s, quad_segs=12).difference(Point(hx, cy - 0.02 * s).buffer(0.12 * s, quad_segs=12))
        handle = ring.difference(cup).intersection(box(hx - 0.02 * s, cy - s, hx + s, cy + s))
        body = shapely.union(cup, handle)
        lines.append(LineString([(x0 - top / 2, cy - h / 2 + 0.08 * s), (x0 + top / 2, cy - h / 2 + 0.08 * s)]))
    elif kind == "star":
        body = _star(cx, cy, 0.5 * s, 0.22 * s, math.radians(angle) * 0.3)
    elif kind == "kite":
        top, left, right, bottom = (cx, cy - 0.46 * s), (cx - 0.32 * s, cy - 0.1 * s), (cx + 0.32 * s, cy - 0.1 * s), (cx, cy + 0.42 * s)
        body = Polygon([top, right, bottom, left])
        lines += [LineString([top, bottom]), LineString([left, right])]
        string = _wavy_line(cx, cy + 0.40 * s, 0.38 * s, 0.06 * s, angle).buffer(1.0, quad_segs=2)
    elif kind == "heart":
        body = _heart(cx, cy, s)
    else:
        raise ValueError(f"unknown object kind {kind!r}; kinds are {KINDS}")
    parts = {"body": body, "string": string, "lines": lines}
    if angle and kind not in ("star",):
        rot = angle if kind in ("box", "kite", "balloon") else angle * 0.3
        parts = {
            "body": affinity.rotate(body, rot, origin=(cx, cy)),
            "string": None if string is None else affinity.rotate(string, rot, origin=(cx, cy)),
            "lines": [affinity.rotate(g, rot, origin=(cx, cy)) for g in lines],
        }
    return parts


def _as_polygon(geom) -> Polygon:
    """One valid polygon (parts glued by a hair's width when needed)."""
    geom = shapely.make_valid(geom)
    if geom.geom_type == "Polygon":
        return geom
    glued = geom.buffer(0.3, quad_segs=2).buffer(-0.3, quad_segs=2)
    if glued.geom_type == "Polygon":
        return glued
    return max(getattr(glued, "geoms", [glued]), key=lambda g: g.area)


def polygons_of(geom) -> list[Polygon]:
    """The polygon parts of a geometry (empty list for an empty one)."""
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon" and not g.is_empty]


# ------------------------------------------------------------------------------------ objects


@dataclass
class SceneObject:
    """One object: its parameters (what the manifest stores) and geometry derived from them."""

    kind: str
    color: str
    cx: float
    cy: float
    size: float
    angle: float = 0.0
    aspect: float = 1.0
    index: int = 0  # position in drawing order (0 = furthest back)
    visible: Polygon | MultiPolygon | None = field(default=None, repr=False)
    _vbox: tuple | None = field(default=None, repr=False, compare=False)

    @cached_property
    def parts(self) -> dict:
        return shape_parts(self.kind, self.cx, self.cy, self.size, self.angle, self.aspect)

    @cached_property
    def outline(self) -> Polygon:
        parts = self.parts
        geom = parts["body"] if parts["string"] is None else shapely.union(parts["body"], parts["string"])
        return _as_polygon(geom)

    @property
    def area(self) -> float:
        return float(self.outline.area)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Box of the whole outline (occluded parts included), pixel xyxy."""
        return tuple(float(v) for v in self.outline.bounds)  # type: ignore[return-value]

    @property
    def visible_box(self) -> tuple[float, float, float, float]:
        """Box of what can be seen, pixel xyxy (the annotation box)."""
        if self._vbox is None:
            self._vbox = tuple(float(v) for v in self._visible().bounds)
        return self._vbox  # type: ignore[return-value]

    @property
    def visible_area(self) -> float:
        return float(self._visible().area)

    @property
    def visible_fraction(self) -> float:
        return self.visible_area / self.area

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.visible_box
        return ((x1 + x2) / 2, (y1 + y2) / 2)

    def _visible(self):
        if self.visible is None:
            raise ValueError("visible geometry not computed; build objects through Scene")
        return self.visible

    def params(self) -> dict:
        return {
            "kind": self.kind,
            "color": self.color,
            "cx": round(self.cx, 3),
            "cy": round(self.cy, 3),
            "size": round(self.size, 3),
            "angle": round(self.angle, 3),
            "aspect": round(self.aspect, 3),
        }

    def name(self) -> str:
        return f"{self.color} {self.kind}"


def compute_visibility(objects: list[SceneObject]) -> None:
    """Set ``visible`` of every object: its outline minus the outlines drawn after it."""
    for i, obj in enumerate(objects):
        obj.index = i
        above = [o.outline for o in objects[i + 1 :]]
        obj.visible = obj.outline.difference(shapely.union_all(above)) if above else obj.outline
        obj._vbox = None


@dataclass
class Scene:
    """One picture: size, background and objects in drawing order (last = front)."""

    image_id: int
    width: int
    height: int
    background: str
    background_seed: int
    objects: list[SceneObject]
    focus: str = FOCUS_KIND  # the kind this scene is about (several of it)

    def __post_init__(self) -> None:
        compute_visibility(self.objects)

    @cached_property
    def relations(self) -> dict[tuple[str, bool], np.ndarray]:
        """``(relation, strict) -> bool matrix M`` with ``M[a, b]`` = "a <relation> b"."""
        n = len(self.objects)
        out = {}
        for rel in RELATIONS:
            for strict in (True, False):
                m = np.zeros((n, n), dtype=bool)
                for a in range(n):
                    for b in range(n):
                        if a != b:
                            m[a, b] = relation(self.objects[a], self.objects[b], rel, strict)
                out[(rel, strict)] = m
        return out

    @cached_property
    def unique(self) -> dict[int, list[tuple[str, Desc]]]:
        """:func:`unique_texts` of this scene (computed once)."""
        return unique_texts(self)

    def holds(self, a: int, rel: str, b: int, strict: bool = True) -> bool:
        return bool(self.relations[(rel, strict)][a, b])

    def of_kind(self, kind: str, color: str | None = None) -> list[int]:
        return [o.index for o in self.objects if o.kind == kind and (color is None or o.color == color)]


# ------------------------------------------------------------------------------------ relations

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "in front of", "behind")
OPPOSITE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "in front of": "behind",
    "behind": "in front of",
}


def _overlap(a: SceneObject, b: SceneObject) -> float:
    return float(a.outline.intersection(b.outline).area)


def relation(a: SceneObject, b: SceneObject, rel: str, strict: bool = True) -> bool:
    """Does "a <rel> b" hold?

    Strict (true statements): ``left of`` = a's visible box ends before b's begins (no
    horizontal overlap), likewise ``right of``/``above``/``below``; ``in front of`` = a is drawn
    after b and their outlines overlap by at least ``OVERLAP_MIN`` px^2 and ``OVERLAP_FRACTION``
    of the smaller one.  Loose (could a reader think so?): ``left of`` = a's visible centre is
    left of b's, ``in front of`` = drawn after b with any overlap at all.
    """
    ax1, ay1, ax2, ay2 = a.visible_box
    bx1, by1, bx2, by2 = b.visible_box
    (acx, acy), (bcx, bcy) = a.center, b.center
    if rel == "left of":
        return ax2 <= bx1 if strict else acx < bcx
    if rel == "right of":
        return ax1 >= bx2 if strict else acx > bcx
    if rel == "above":
        return ay2 <= by1 if strict else acy < bcy
    if rel == "below":
        return ay1 >= by2 if strict else acy > bcy
    if rel in ("in front of", "behind"):
        front, back = (a, b) if rel == "in front of" else (b, a)
        if front.index <= back.index:
            return False
        ov = _overlap(front, back)
        if not strict:
            return ov > 0.0
        return ov >= OVERLAP_MIN and ov >= OVERLAP_FRACTION * min(front.area, back.area)
    raise ValueError(f"unknown relation {rel!r}; relations are {RELATIONS}")


# ------------------------------------------------------------------------------------ expressions

SUPERLATIVES: tuple[str, ...] = ("biggest", "smallest", "leftmost", "rightmost", "topmost", "lowest")


@dataclass(frozen=True)
class Desc:
    """A description of an object: kind, optional colour, optional superlative among the objects
    of that kind (and colour), optional relation to a landmark (itself a kind/colour description)."""

    kind: str
    color: str | None = None
    superlative: str | None = None
    relation: str | None = None
    landmark: Desc | None = None

    @property
    def family(self) -> str:
        """What the description relies on: kind, color, superlative, relation (+ combinations)."""
        parts = [p for p, v in (("color", self.color), ("superlative", self.superlative), ("relation", self.relation)) if v]
        return "+".join(parts) or "kind"


def _superlative_key(scene: Scene, i: int, sup: str) -> float:
    """Larger is "more": biggest -> area, leftmost -> -x ..."""
    o = scene.objects[i]
    cx, cy = o.center
    return {
        "biggest": o.area,
        "smallest": -o.area,
        "leftmost": -cx,
        "rightmost": cx,
        "topmost": -cy,
        "lowest": cy,
    }[sup]


def _superlative_clear(scene: Scene, best: float, second: float, sup: str) -> bool:
    if sup == "biggest":
        return best >= SIZE_MARGIN * second
    if sup == "smallest":
        return -second >= SIZE_MARGIN * -best
    extent = scene.width if sup in ("leftmost", "rightmost") else scene.height
    return best - second >= POSITION_MARGIN * extent


def resolve(scene: Scene, desc: Desc, strict: bool = True) -> list[int]:
    """Indices of the objects ``desc`` may mean.

    ``strict=True``: the objects it certainly fits; ``strict=False``: every object a reader might
    take it for (loose relations; a superlative without a clear winner fits all the tied ones).
    A description is unambiguous for ``t`` when both give ``[t]``.
    """
    cands = scene.of_kind(desc.kind, desc.color)
    if desc.relation is not None:
        if desc.landmark is None:
            raise ValueError("a relation needs a landmark")
        lm = resolve(scene, desc.landmark, strict)
        if len(lm) != 1:
            return [] if strict else cands  # no definite landmark: means nothing / anything
        cands = [c for c in cands if c != lm[0] and scene.holds(c, desc.relation, lm[0], strict)]
    if desc.superlative is not None:
        if len(cands) < 2:
            return [] if strict else cands
        ranked = sorted(cands, key=lambda i: _superlative_key(scene, i, desc.superlative), reverse=True)
        k0 = _superlative_key(scene, ranked[0], desc.superlative)
        k1 = _superlative_key(scene, ranked[1], desc.superlative)
        if _superlative_clear(scene, k0, k1, desc.superlative):
            return [ranked[0]]
        return [] if strict else ranked
    return cands


_REL_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
    "in front of": ("in front of",),
    "behind": ("behind",),
}


def _noun(desc: Desc) -> str:
    return f"{desc.color} {desc.kind}" if desc.color else desc.kind


def texts(desc: Desc) -> tuple[str, ...]:
    """Every way the world writes ``desc`` (lower case, refer-style, no final period)."""
    noun = _noun(desc)
    if desc.relation is not None:
        lm = f"the {_noun(desc.landmark)}"  # type: ignore[arg-type]
        return tuple(t for w in _REL_WORDS[desc.relation] for t in (f"{noun} {w} {lm}", f"the {noun} {w} {lm}"))
    sup = desc.superlative
    if sup is None:
        return (noun, f"the {noun}")
    if sup == "biggest":
        return (f"biggest {noun}", f"the biggest {noun}", f"largest {noun}")
    if sup == "smallest":
        return (f"smallest {noun}", f"the smallest {noun}")
    side = {"leftmost": "left", "rightmost": "right", "topmost": "top", "lowest": "bottom"}[sup]
    first = {"leftmost": "leftmost", "rightmost": "rightmost", "topmost": "highest", "lowest": "lowest"}[sup]
    return (f"{first} {noun}", f"{side} {noun}", f"the {noun} on the {side}" if side in ("left", "right") else f"the {noun} at the {side}")


def descriptions(scene: Scene) -> Iterator[Desc]:
    """Every description the world can write about ``scene`` (targets and landmarks alike)."""
    kinds = sorted({o.kind for o in scene.objects}, key=KINDS.index)
    colors = sorted({o.color for o in scene.objects}, key=COLOR_NAMES.index)
    simple = [Desc(k) for k in kinds] + [Desc(k, c) for k in kinds for c in colors if scene.of_kind(k, c)]
    # landmarks must be definite ("the blue box" when there is one blue box); a relation to an
    # ambiguous landmark means nothing and is never written
    landmarks = [d for d in simple if len(resolve(scene, d)) == 1]
    for d in simple:
        yield d
        for sup in SUPERLATIVES:
            yield Desc(d.kind, d.color, superlative=sup)
        for rel in RELATIONS:
            for lm in landmarks:
                if lm.kind != d.kind or lm.color != d.color:
                    yield Desc(d.kind, d.color, relation=rel, landmark=lm)


def unique_texts(scene: Scene) -> dict[int, list[tuple[str, Desc]]]:
    """Object index -> ``(text, description)`` pairs that pick exactly that object.

    A text qualifies only if EVERY description that renders to it resolves, strictly and
    loosely, to the same single object.
    """
    meaning: dict[str, set[int] | None] = {}
    source: dict[str, Desc] = {}
    for d in descriptions(scene):
        strict, loose = resolve(scene, d, True), resolve(scene, d, False)
        ok = len(strict) == 1 and loose == strict
        for t in texts(d):
            if not ok:
                meaning[t] = None
            elif t not in meaning:
                meaning[t] = set(strict)
                source[t] = d
            elif meaning[t] is not None and meaning[t] != set(strict):
                meaning[t] = None
    out: dict[int, list[tuple[str, Desc]]] = {}
    for t, objs in meaning.items():
        if objs is not None and t in source:
            (i,) = objs
            out.setdefault(i, []).append((t, source[t]))
    return out


def text_meanings(scene: Scene) -> dict[str, set[int]]:
    """Text -> union of the objects every description with that text may mean (loose).

    For checking exported expressions: a sentence is unambiguous iff its set is one object.
    """
    out: dict[str, set[int]] = {}
    for d in descriptions(scene):
        objs = set(resolve(scene, d, False)) | set(resolve(scene, d, True))
        for t in texts(d):
            out.setdefault(t, set()).update(objs if objs else {-1})
    return out


# ------------------------------------------------------------------------------------ generation


def _rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _fits(obj: SceneObject, width: int, height: int) -> bool:
    x1, y1, x2, y2 = obj.outline.bounds
    return x1 >= 1 and y1 >= 1 and x2 <= width - 1 and y2 <= height - 1


def _well_visible(objects: list[SceneObject]) -> bool:
    compute_visibility(objects)
    for o in objects:
        if o.visible_area < MIN_VISIBLE_AREA or o.visible_fraction < MIN_VISIBLE_FRACTION:
            return False
        for part in polygons_of(o.visible):
            if part.area < MIN_PART_AREA or part.buffer(-1.5).is_empty:
                return False
    return True


def make_scene(seed: int, index: int, image_id: int | None = None) -> Scene:
    """Scene ``index`` of the world with ``seed`` (independent of how many scenes are made).

    Even indices are balloon scenes (2-4 balloons and 1-3 other objects), odd indices focus on
    another kind (2-4 of it, 1-3 others).  Colours come from a small per-scene palette, so the
    same colour recurs and colour alone rarely tells objects apart.
    """
    rng = _rng(seed, index)
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    others = [k for k in KINDS if k != FOCUS_KIND]
    focus = FOCUS_KIND if index % 2 == 0 else str(rng.choice(others))
    for _attempt in range(50):
        palette = [str(c) for c in rng.choice(COLOR_NAMES, size=int(rng.integers(2, 5)), replace=False)]
        n_focus = int(rng.integers(2, 5))
        n_other = int(rng.integers(1, 4))
        other_kinds = [k for k in KINDS if k != focus]
        specs = [focus] * n_focus + [str(rng.choice(other_kinds)) for _ in range(n_other)]
        order = rng.permutation(len(specs))
        objects: list[SceneObject] = []
        short = min(width, height)
        for j in order:
            kind = specs[int(j)]
            color = str(rng.choice(palette)) if rng.random() < 0.85 else str(rng.choice(COLOR_NAMES))
            placed = None
            for _try in range(40):
                size = float(rng.uniform(0.15, 0.34) * short)
                if objects and rng.random() < 0.35:  # nestle against an existing object
                    anchor = objects[int(rng.integers(len(objects)))]
                    cx = anchor.cx + float(rng.normal(0, 0.45)) * (anchor.size + size) / 2
                    cy = anchor.cy + float(rng.normal(0, 0.45)) * (anchor.size + size) / 2
                else:
                    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
                angle = float(rng.uniform(-25, 25))
                aspect = float(rng.uniform(0.8, 1.25)) if kind == "box" else 1.0
                # parameters are rounded as the manifest stores them, so a scene rebuilt from
                # scenes.jsonl has exactly the same geometry
                cand = SceneObject(kind, color, *(round(v, 3) for v in (cx, cy, size, angle, aspect)))
                if not _fits(cand, width, height):
                    continue
                if _well_visible(objects + [cand]):
                    placed = cand
                    break
            if placed is not None:
                objects.append(placed)
        if sum(o.kind == focus for o in objects) >= 2 and len(objects) >= 3:
            break
    else:  # pragma: no cover - 50 attempts always succeed at these sizes
        raise RuntimeError(f"could not place a scene for seed {seed} index {index}")
    background = str(rng.choice(BACKGROUNDS))
    return Scene(
        image_id=index + 1 if image_id is None else image_id,
        width=width,
        height=height,
        background=background,
        background_seed=int(rng.integers(2**31)),
        objects=objects,
        focus=focus,
    )


def find_scene(seed: int, name: str, count: int = 1, search: int = 200) -> tuple[int, Scene]:
    """The first scene ``(index, scene)`` of the world ``seed`` holding exactly ``count`` objects
    named ``name`` (colour + kind, e.g. ``"red balloon"``); demo and app pictures use it."""
    for index in range(search):
        scene = make_scene(seed, index)
        if [o.name() for o in scene.objects].count(name) == count:
            return index, scene
    raise ValueError(f"no scene among the first {search} of seed {seed} has exactly {count} {name!r}")


def scene_from_manifest(entry: dict) -> Scene:
    """Rebuild a :class:`Scene` from one ``scenes.jsonl`` line (exact: same parameters)."""
    objects = [
        SceneObject(o["kind"], o["color"], o["cx"], o["cy"], o["size"], o["angle"], o["aspect"]) for o in entry["objects"]
    ]
    return Scene(
        image_id=entry["image_id"],
        width=entry["width"],
        height=entry["height"],
        background=entry["background"],
        background_seed=entry["background_seed"],
        objects=objects,
        focus=entry["focus"],
    )
