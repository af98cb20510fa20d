"""Text about a scene: referring expressions, questions, statements, captions, conversations.

Every fact comes from the scene model (:mod:`mgv2.synth.world`): counts, colours, kinds, exact
spatial relations and occlusion.  Each generator takes a ``numpy`` generator, so the text of a
scene is a pure function of the seed.  Box text is written with :mod:`mgv2.boxes` only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

import numpy as np

from mgv2 import boxes
from mgv2.synth.world import (
    COLOR_NAMES,
    FOCUS_KIND,
    KINDS,
    NUMBER_WORDS,
    OPPOSITE,
    PLURALS,
    Scene,
)

# How the world words a relation in statements (VSR's own relation names where it has them).
VSR_RELATION = {
    "left of": "at the left side of",
    "right of": "at the right side of",
    "above": "above",
    "below": "below",
    "in front of": "in front of",
    "behind": "behind",
}
SENTENCE_RELATION = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "in front of": "in front of",
    "behind": "behind",
}
BACKGROUND_WORDS = {
    "plain": "plain",
    "striped": "striped",
    "checkered": "checkered",
    "dotted": "dotted",
    "speckled": "speckled",
    "wavy": "wavy",
}
NEIGHBOUR_COLOR = {
    "red": "orange",
    "orange": "yellow",
    "yellow": "orange",
    "green": "blue",
    "blue": "purple",
    "purple": "blue",
    "pink": "red",
    "brown": "orange",
}


def pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------------ groups


@dataclass
class Group:
    """Objects of one colour and kind, left to right."""

    kind: str
    color: str
    members: list[int]

    @property
    def noun(self) -> str:
        """``red balloon`` / ``red balloons`` (no article or number)."""
        kind = self.kind if len(self.members) == 1 else PLURALS[self.kind]
        return f"{self.color} {kind}"

    @property
    def phrase(self) -> str:
        """``a red balloon`` / ``two red balloons``."""
        if len(self.members) == 1:
            return f"{article(self.color)} {self.noun}"
        return f"{number_word(len(self.members))} {self.noun}"


def groups(scene: Scene) -> list[Group]:
    """Colour-kind groups, the focus kind first, then by leftmost member."""
    by: dict[tuple[str, str], list[int]] = {}
    for o in scene.objects:
        by.setdefault((o.kind, o.color), []).append(o.index)
    out = []
    for (kind, color), members in by.items():
        members.sort(key=lambda i: scene.objects[i].center[0])
        out.append(Group(kind, color, members))
    out.sort(key=lambda g: (g.kind != scene.focus, scene.objects[g.members[0]].center[0]))
    return out


def join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def grid_boxes(scene: Scene, members: list[int]) -> list[boxes.Box]:
    return [boxes.from_pixels(scene.objects[i].visible_box, scene.width, scene.height) for i in members]


def _singletons(scene: Scene) -> dict[int, str]:
    """Objects that "the <colour> <kind>" (or "the <kind>") names uniquely -> that noun."""
    out = {}
    for o in scene.objects:
        if len(scene.of_kind(o.kind)) == 1:
            out[o.index] = o.kind
        elif len(scene.of_kind(o.kind, o.color)) == 1:
            out[o.index] = f"{o.color} {o.kind}"
    return out


def relation_facts(scene: Scene, singletons: dict[int, str] | None = None) -> list[tuple[int, str, int]]:
    """``(a, relation, b)`` that hold strictly between uniquely nameable objects (occlusion first)."""
    names = _singletons(scene) if singletons is None else singletons
    facts = []
    for rel in ("in front of", "left of", "right of", "above", "below", "behind"):
        for a in names:
            for b in names:
                if a != b and scene.holds(a, rel, b):
                    facts.append((a, rel, b))
    return facts


# ------------------------------------------------------------------------------------ refs

_FAMILY_WEIGHT = {
    "kind": 0.5,
    "color": 1.0,
    "superlative": 2.0,
    "color+superlative": 1.0,
    "relation": 3.0,
    "color+relation": 1.5,
}


def expressions_by_family(options) -> dict[str, list[str]]:
    """An object's unique descriptions (``Scene.unique[i]``: ``(text, Desc)`` pairs) -> family ->
    its texts, sorted (the lists :func:`referring_sentences` picks from; repeats kept)."""
    by_family: dict[str, list[str]] = {}
    for text, desc in options:
        by_family.setdefault(desc.family, []).append(text)
    return {f: sorted(by_family[f]) for f in sorted(by_family)}


def _choose_families(rng: np.random.Generator, families: list[str], max_sentences: int) -> list[int]:
    """Indices (ascending) of the families one object's expressions come from: 1..``max_sentences``
    of them, without repeats, weighted by :data:`_FAMILY_WEIGHT`."""
    weights = np.array([_FAMILY_WEIGHT.get(f, 1.0) for f in families])
    k = min(len(families), int(rng.integers(1, max_sentences + 1)))
    chosen = rng.choice(len(families), size=k, replace=False, p=weights / weights.sum())
    return [int(c) for c in sorted(chosen)]


def referring_sentences(scene: Scene, rng: np.random.Generator, max_sentences: int = 3) -> dict[int, list[str]]:
    """Object index -> 1..``max_sentences`` unambiguous expressions from different families
    (relations and superlatives are favoured, so that colour alone rarely suffices)."""
    out: dict[int, list[str]] = {}
    for i, options in sorted(scene.unique.items()):
        by_family = expressions_by_family(options)
        families = list(by_family)
        out[i] = [pick(rng, by_family[families[c]]) for c in _choose_families(rng, families, max_sentences)]
    return out


@cache
def family_subset_odds(families: tuple[str, ...], max_sentences: int = 3, draws: int = 10000,
                       seed: int = 0) -> MappingProxyType[frozenset[str], float]:
    """How often :func:`referring_sentences` writes an object's expressions from exactly each
    subset of its ``families`` (sorted names), estimated from ``draws`` seeded runs of its own family
    draw (numpy's weighted choice without replacement has no simple closed form; the standard
    error of each odd is at most 0.5 / sqrt(draws))."""
    if list(families) != sorted(set(families)) or not families:
        raise ValueError(f"families must be distinct, sorted and not empty; got {families}")
    rng = np.random.default_rng(seed)
    seen = Counter(frozenset(families[c] for c in _choose_families(rng, list(families), max_sentences))
                   for _ in range(draws))
    # read-only: the result is cached and shared
    return MappingProxyType({subset: n / draws for subset, n in seen.items()})


def describe_for_question(scene: Scene, i: int, rng: np.random.Generator, avoid_color: bool) -> str | None:
    """An unambiguous noun phrase for object ``i`` (without the article), or None."""
    options = scene.unique.get(i, [])
    texts = [t for t, d in options if not t.startswith("the ") and not (avoid_color and d.color)]
    return pick(rng, sorted(texts)) if texts else None


# ------------------------------------------------------------------------------------ VQA


@dataclass
class QA:
    question: str
    answer: str
    answer_type: str  # VQAv2: "yes/no", "number", "other"
    question_type: str
    alternatives: tuple[str, ...] = ()  # plausible wrong answers (annotator noise)
    spellings: tuple[str, ...] = ()  # same answer written differently
    full_answer: str = ""
    structural: str = "query"  # GQA structural type
    semantic: str = "attr"  # GQA semantic type


def _count_qa(scene: Scene, rng) -> QA:
    if rng.random() < 0.7:
        kind = pick(rng, sorted({o.kind for o in scene.objects}))
        n = len(scene.of_kind(kind))
        q = f"How many {PLURALS[kind]} are there?"
        full = f"There {'is' if n == 1 else 'are'} {number_word(n)} {kind if n == 1 else PLURALS[kind]}."
    else:
        color = pick(rng, sorted({o.color for o in scene.objects}))
        n = sum(o.color == color for o in scene.objects)
        q = f"How many {color} objects are there?"
        full = f"There {'is' if n == 1 else 'are'} {number_word(n)} {color} object{'s' if n != 1 else ''}."
    alts = tuple(str(v) for v in (n - 1, n + 1) if v >= 0)
    return QA(q, str(n), "number", "how many", alts, (number_word(n),), full, "query", "obj")


def _color_qa(scene: Scene, rng) -> QA | None:
    order = [int(i) for i in rng.permutation(len(scene.objects))]
    for i in order:
        noun = describe_for_question(scene, i, rng, avoid_color=True)
        if noun:
            color = scene.objects[i].color
            return QA(f"What color is the {noun}?", color, "other", "what color is the",
                      (NEIGHBOUR_COLOR[color],), (), f"The {noun} is {color}.", "query", "attr")
    return None


def _kind_qa(scene: Scene, rng) -> QA | None:
    colors = [c for c in COLOR_NAMES if sum(o.color == c for o in scene.objects) == 1]
    if not colors:
        return None
    color = pick(rng, colors)
    (obj,) = [o for o in scene.objects if o.color == color]
    others = [k for k in KINDS if k != obj.kind]
    return QA(f"What is the {color} object?", obj.kind, "other", "what is the", (pick(rng, others),), (),
              f"The {color} object is {article(obj.kind)} {obj.kind}.", "query", "cat")


def _side_qa(scene: Scene, rng) -> QA | None:
    for i in [int(i) for i in rng.permutation(len(scene.objects))]:
        cx = scene.objects[i].center[0]
        if abs(cx - scene.width / 2) < 0.1 * scene.width:
            continue
        noun = describe_for_question(scene, i, rng, avoid_color=False)
        if noun and "left" not in noun and "right" not in noun:
            side = "left" if cx < scene.width / 2 else "right"
            other = "right" if side == "left" else "left"
            return QA(f"Is the {noun} on the left or the right side of the picture?", side, "other", "is the",
                      (other,), (), f"The {noun} is on the {side} of the image.", "choose", "rel")
    return None


def _exists_qa(scene: Scene, rng) -> QA:
    present = sorted({o.kind for o in scene.objects})
    absent = [k for k in KINDS if k not in present]
    kind = pick(rng, present) if (rng.random() < 0.5 or not absent) else pick(rng, absent)
    yes = kind in present
    ans = "yes" if yes else "no"
    full = f"{'Yes' if yes else 'No'}, there {'is' if yes else 'is no'} {kind if not yes else article(kind) + ' ' + kind}."
    return QA(f"Is there {article(kind)} {kind} in the picture?", ans, "yes/no", "is there a",
              ("no" if yes else "yes",), (), full, "verify", "obj")


def _relation_qa(scene: Scene, rng) -> QA | None:
    names = _singletons(scene)
    facts = relation_facts(scene, names)
    if not facts:
        return None
    a, rel, b = facts[int(rng.integers(len(facts)))]
    if rng.random() < 0.5:
        asked, ans = rel, "yes"
    else:
        asked, ans = OPPOSITE[rel], "no"
    words = SENTENCE_RELATION[asked]
    full = f"{'Yes' if ans == 'yes' else 'No'}, the {names[a]} is {SENTENCE_RELATION[rel]} the {names[b]}."
    return QA(f"Is the {names[a]} {words} the {names[b]}?", ans, "yes/no", "is the",
              ("no" if ans == "yes" else "yes",), (), full, "verify", "rel")


def _which_qa(scene: Scene, rng) -> QA | None:
    names = _singletons(scene)
    facts = relation_facts(scene, names)
    rng.shuffle(facts)
    for a, rel, b in facts:
        # which objects of ANY kind stand in this relation to b: it must be one, strictly and loosely
        strict = [i for i in range(len(scene.objects)) if i != b and scene.holds(i, rel, b, True)]
        loose = [i for i in range(len(scene.objects)) if i != b and scene.holds(i, rel, b, False)]
        if strict == [a] and loose == [a]:
            kind = scene.objects[a].kind
            return QA(f"What is {SENTENCE_RELATION[rel]} the {names[b]}?", kind, "other", "what is",
                      (pick(rng, [k for k in KINDS if k != kind]),), (),
                      f"The {kind} is {SENTENCE_RELATION[rel]} the {names[b]}.", "query", "rel")
    return None


def _bigger_qa(scene: Scene, rng) -> QA | None:
    names = _singletons(scene)
    idx = sorted(names)
    pairs = [(a, b) for a in idx for b in idx if a < b]
    rng.shuffle(pairs)
    for a, b in pairs:
        big, small = (a, b) if scene.objects[a].area >= scene.objects[b].area else (b, a)
        if scene.objects[big].area >= 1.5 * scene.objects[small].area:
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            return QA(f"Which is bigger, the {names[first]} or the {names[second]}?", names[big], "other",
                      "which", (names[small],), (), f"The {names[big]} is bigger than the {names[small]}.",
                      "compare", "attr")
    return None


QUESTION_MAKERS = (_count_qa, _color_qa, _kind_qa, _side_qa, _exists_qa, _relation_qa, _which_qa, _bigger_qa)
GQA_MAKERS = tuple(m for m in QUESTION_MAKERS if m is not _count_qa)  # GQA asks no "how many"


def questions(scene: Scene, rng: np.random.Generator, n: int, makers=QUESTION_MAKERS) -> list[QA]:
    """Up to ``n`` distinct questions of different kinds about ``scene``."""
    out: list[QA] = []
    seen = set()
    for k in rng.permutation(len(makers)):
        qa = makers[int(k)](scene, rng)
        if qa is not None and qa.question not in seen:
            seen.add(qa.question)
            out.append(qa)
        if len(out) >= n:
            break
    return out


def annotator_answers(qa: QA, rng: np.random.Generator, n: int = 10) -> list[str]:
    """``n`` human-like answers: mostly the answer, a few other spellings, rare mistakes."""
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.06 and qa.alternatives:
            out.append(pick(rng, list(qa.alternatives)))
        elif u < 0.16 and qa.spellings:
            out.append(pick(rng, list(qa.spellings)))
        elif u < 0.2:
            out.append(cap(qa.answer))
        else:
            out.append(qa.answer)
    return out


def most_common(answers: list[str]) -> str:
    counts = Counter(a.lower() for a in answers)
    best = max(counts.values())
    return next(a.lower() for a in answers if counts[a.lower()] == best)


# ------------------------------------------------------------------------------------ VSR


def statements(scene: Scene, rng: np.random.Generator, n: int) -> list[dict]:
    """VSR-style statements ``{caption, label, relation, subj, obj, a, b}`` about two objects whose
    kinds are unique in the scene; half true, half false (the opposite relation holds)."""
    kinds = Counter(o.kind for o in scene.objects)
    unique = [o.index for o in scene.objects if kinds[o.kind] == 1]
    facts = [(a, rel, b) for a in unique for b in unique for rel in VSR_RELATION if a != b and scene.holds(a, rel, b)]
    rng.shuffle(facts)
    out = []
    for a, rel, b in facts[:n]:
        true = bool(rng.random() < 0.5)
        said = rel if true else OPPOSITE[rel]
        subj, obj = scene.objects[a].kind, scene.objects[b].kind
        out.append(
            {
                "caption": f"The {subj} is {VSR_RELATION[said]} the {obj}.",
                "label": int(true),
                "relation": VSR_RELATION[said],
                "subj": subj,
                "obj": obj,
                "a": a,
                "b": b,
            }
        )
    return out


# ------------------------------------------------------------------------------------ captions


def captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` different short captions (COCO style: one sentence, capitalised, final period)."""
    gs = groups(scene)
    bg = BACKGROUND_WORDS[scene.background]
    listing = join_list([g.phrase for g in gs])
    focus_n = len(scene.of_kind(scene.focus))
    focus_word = f"{number_word(focus_n)} {PLURALS[scene.focus]}"
    colors = sorted({o.color for o in scene.objects}, key=COLOR_NAMES.index)
    names = _singletons(scene)
    facts = relation_facts(scene, names)
    rest = len(scene.objects) - focus_n
    cands = [
        f"{listing} on a {bg} background",
        f"a {bg} background with {listing}",
        f"a picture of {focus_word} and {number_word(rest)} other object{'s' if rest != 1 else ''}",
        f"{focus_word} in {join_list(sorted({c for c in (scene.objects[i].color for i in scene.of_kind(scene.focus))}))}",
        f"{number_word(len(scene.objects))} toys in {join_list(colors)} on a {bg} background",
        f"some {PLURALS[scene.focus]} and other things on a {bg} background",
    ]
    for a, rel, b in facts[:3]:
        cands.append(f"{article(names[a])} {names[a]} {SENTENCE_RELATION[rel]} {article(names[b])} {names[b]}")
    order = rng.permutation(len(cands))[:n]
    return [cap(cands[int(k)]) + "." for k in order]


@dataclass
class GroundedCaption:
    """A caption in pieces: plain text and, for grounded pieces, the object indices."""

    pieces: list[tuple[str, list[int] | None]]

    @property
    def plain(self) -> str:
        return "".join(t for t, _ in self.pieces)

    def grounded(self, scene: Scene) -> str:
        """The caption with ``<p>phrase</p> {<..>}<delim>..`` after each grounded phrase."""
        return "".join(
            t if objs is None else boxes.phrase_text(t, grid_boxes(scene, objs)) for t, objs in self.pieces
        )

    def phrase_groups(self) -> list[tuple[str, list[int]]]:
        return [(t, objs) for t, objs in self.pieces if objs is not None]


def grounded_caption(scene: Scene, rng: np.random.Generator, with_relation: bool = True) -> GroundedCaption:
    """Flickr30k-Entities-style caption: every colour-kind group is a grounded phrase; maybe a
    second sentence relating two uniquely named objects."""
    gs = groups(scene)
    bg = BACKGROUND_WORDS[scene.background]
    pieces: list[tuple[str, list[int] | None]] = []
    style = int(rng.integers(3))
    if style == 0:
        pieces.append(("A picture of ", None))
    elif style == 1:
        pieces.append(("An image showing ", None))
    else:
        pieces.append((f"On a {bg} background there {'is' if len(gs[0].members) == 1 else 'are'} ", None))
    for k, g in enumerate(gs):
        if k:
            pieces.append((" and " if k == len(gs) - 1 else ", ", None))
        pieces.append((g.phrase, list(g.members)))
    pieces.append((f" on a {bg} background." if style != 2 else ".", None))
    names = _singletons(scene)
    facts = relation_facts(scene, names)
    if with_relation and facts and rng.random() < 0.8:
        a, rel, b = facts[0] if rng.random() < 0.5 else facts[int(rng.integers(len(facts)))]
        pieces += [(" ", None), (f"The {names[a]}", [a]), (f" is {SENTENCE_RELATION[rel]} ", None),
                   (f"the {names[b]}", [b]), (".", None)]
    return GroundedCaption(pieces)


def phrase_queries(scene: Scene, rng: np.random.Generator, n: int = 2) -> list[tuple[str, list[int]]]:
    """Phrase -> all objects it names (``red balloons``, ``balloons``, ``star``)."""
    cands: list[tuple[str, list[int]]] = []
    for g in groups(scene):
        cands.append((g.noun, list(g.members)))
    for kind in sorted({o.kind for o in scene.objects}):
        members = sorted(scene.of_kind(kind), key=lambda i: scene.objects[i].center[0])
        cands.append((kind if len(members) == 1 else PLURALS[kind], members))
    seen, out = set(), []
    for k in rng.permutation(len(cands)):
        phrase, members = cands[int(k)]
        if phrase not in seen:
            seen.add(phrase)
            out.append((phrase, members))
        if len(out) >= n:
            break
    return out


# ------------------------------------------------------------------------------------ LLaVA

DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "What do you see happening in this image?",
    "Can you elaborate on the elements of the picture provided?",
    "Write a detailed description of the given image.",
    "Explain the visual content of the image in great detail.",
)


def with_image(text: str, rng) -> str:
    return f"<image>\n{text}" if rng.random() < 0.5 else f"{text}\n<image>"


def conversation(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """A LLaVA-style multi-turn chat (questions answered in full sentences)."""
    gs = groups(scene)
    bg = BACKGROUND_WORDS[scene.background]
    turns = [(with_image(pick(rng, ["What objects can you see in this picture?", "What is in this image?",
                                      "What does the picture show?"]), rng),
              f"The picture shows {join_list([g.phrase for g in gs])} on a {bg} background.")]
    for qa in questions(scene, rng, int(rng.integers(1, 4))):
        turns.append((qa.question, qa.full_answer))
    return turns


def where(scene: Scene, i: int) -> str:
    """Where an object is in the picture, in words (thirds of the width and height)."""
    cx, cy = scene.objects[i].center
    col = "left" if cx < scene.width / 3 else "right" if cx > 2 * scene.width / 3 else ""
    row = "top" if cy < scene.height / 3 else "bottom" if cy > 2 * scene.height / 3 else ""
    if not col and not row:
        return "in the middle"
    if not row:
        return f"on the {col}"
    return f"at the {row} {col}".rstrip()


def detail(scene: Scene, rng: np.random.Generator) -> str:
    """A paragraph: what is there, where, and what hides what."""
    gs = groups(scene)
    bg = BACKGROUND_WORDS[scene.background]
    parts = [f"The image shows {join_list([g.phrase for g in gs])} on a {bg} background."]
    for g in gs:
        places = [where(scene, i) for i in g.members]
        if len(places) == 1:
            parts.append(f"The {g.noun} is {places[0]}.")
        else:
            parts.append(f"The {g.noun} are {join_list(places)}, from left to right.")
    names = _singletons(scene)
    for a, rel, b in relation_facts(scene, names):
        if rel == "in front of":
            parts.append(f"The {names[a]} is in front of the {names[b]} and hides part of it.")
    return " ".join(parts)


def detail_turn(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A LLaVA detail-description turn: a prompt (with ``<image>``) and the paragraph."""
    prompt = with_image(pick(rng, list(DETAIL_PROMPTS)), rng)
    return prompt, detail(scene, rng)


def reasoning_turn(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """A LLaVA complex-reasoning turn (prompt with ``<image>``), or None when the scene has none."""
    qa = reasoning(scene, rng)
    return None if qa is None else (with_image(qa[0], rng), qa[1])


def reasoning(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """A question whose answer needs a step of reasoning (occlusion or counting)."""
    names = _singletons(scene)
    fronts = [(a, b) for a, rel, b in relation_facts(scene, names) if rel == "in front of"]
    if fronts and rng.random() < 0.6:
        a, b = fronts[int(rng.integers(len(fronts)))]
        return (f"Which object would you have to move to see the whole {names[b]}?",
                (f"You would have to move the {names[a]}. It is in front of the {names[b]} and covers part of "
                 f"it, so some of the {names[b]} is hidden."))
    kinds = sorted({o.kind for o in scene.objects}, key=lambda k: (-len(scene.of_kind(k)), k))  # ties by name: no set order
    if len(kinds) >= 2:
        k1, k2 = kinds[0], kinds[1]
        n1, n2 = len(scene.of_kind(k1)), len(scene.of_kind(k2))
        if n1 != n2:
            return (f"Are there more {PLURALS[k1]} or more {PLURALS[k2]} in the picture?",
                    (f"There are more {PLURALS[k1]}. I count {number_word(n1)} {PLURALS[k1] if n1 != 1 else k1} "
                     f"and {number_word(n2)} {PLURALS[k2] if n2 != 1 else k2}, and {n1} is more than {n2}."))
    return None


# ------------------------------------------------------------------------------------ text only

_MIX = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("blue", "red"): "purple", ("red", "white"): "pink"}


def text_instruction(rng: np.random.Generator) -> tuple[str, str, str]:
    """``(instruction, input, output)`` of a small text-only task (no picture)."""
    k = int(rng.integers(7))
    if k == 0:
        kind = pick(rng, list(KINDS))
        return ("Give the plural of the word.", kind, PLURALS[kind])
    if k == 1:
        word = pick(rng, list(KINDS) + list(COLOR_NAMES))
        return ("Reverse the letters of the word.", word, word[::-1])
    if k == 2:
        (a, b), c = pick(rng, list(_MIX.items()))
        return (f"What color do you get when you mix {a} and {b} paint?", "", c)
    if k == 3:
        nums = [int(v) for v in rng.integers(0, 50, size=int(rng.integers(3, 6)))]
        return ("Sort these numbers from smallest to largest.", ", ".join(map(str, nums)), ", ".join(map(str, sorted(nums))))
    if k == 4:
        a, b = (int(v) for v in rng.integers(0, 30, size=2))
        return (f"What is {a} plus {b}?", "", str(a + b))
    if k == 5:
        n = int(rng.integers(0, 11))
        return ("Write the number in words.", str(n), NUMBER_WORDS[n])
    color = pick(rng, list(COLOR_NAMES))
    kind = pick(rng, [k for k in KINDS if k != FOCUS_KIND])
    sentence = f"the {color} {kind} is next to the {FOCUS_KIND}"
    return ("Count the words in the sentence.", sentence, str(len(sentence.split())))
