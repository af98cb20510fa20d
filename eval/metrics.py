"""Metrics shared by tasks and benchmarks: box IoU, greedy box matching, VQA accuracy, text overlap.

Pure Python, no model imports.  Every function documents which convention it computes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

# --------------------------------------------------------------------------- boxes


def box_iou(a: Sequence[float], b: Sequence[float], plus_one: bool = False) -> float:
    """Intersection over union of two pixel boxes ``(x1, y1, x2, y2)``.

    ``plus_one=False`` (default): continuous IoU, widths are ``x2 - x1`` (the convention of
    Qwen-VL / lmms-eval, used with ``IoU >= 0.5``).  ``plus_one=True``: the official MiniGPT-v2
    ``computeIoU``, widths are ``x2 - x1 + 1`` (used there with ``IoU > 0.5``).  Negative
    extents (inverted boxes) count as zero in both conventions; a zero union gives 0.0.
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    one = 1.0 if plus_one else 0.0

    def extent(lo: float, hi: float) -> float:
        return max(0.0, hi - lo + one)

    inter = extent(max(ax1, bx1), min(ax2, bx2)) * extent(max(ay1, by1), min(ay2, by2))
    area_a = extent(ax1, ax2) * extent(ay1, ay2)
    area_b = extent(bx1, bx2) * extent(by1, by2)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def is_hit(iou: float, plus_one: bool = False, threshold: float = 0.5) -> bool:
    """Acc@threshold decision: ``iou >= t`` for continuous IoU, ``iou > t`` for the official +1 variant."""
    return iou > threshold if plus_one else iou >= threshold


@dataclass(frozen=True)
class MatchCounts:
    """Result of :func:`match_boxes`: true positives and the sizes of both sides."""

    tp: int
    n_pred: int
    n_gt: int

    @property
    def precision(self) -> float:
        """``tp / n_pred``; 0.0 when nothing was predicted."""
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        """``tp / n_gt``; 1.0 when there is nothing to find and nothing was predicted, else 0.0."""
        if self.n_gt:
            return self.tp / self.n_gt
        return 1.0 if self.n_pred == 0 else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def match_boxes(
    pred: Sequence[Sequence[float]],
    gt: Sequence[Sequence[float]],
    threshold: float = 0.5,
    compatible: Callable[[int, int], bool] | None = None,
    plus_one: bool = False,
) -> MatchCounts:
    """Greedy one-to-one matching of predicted to ground-truth pixel boxes.

    All pairs with IoU at or above ``threshold`` (and ``compatible(i, j)`` true, e.g. same
    phrase) are visited in decreasing IoU order (ties: lower indices first); a pair is taken when
    neither box is taken yet.
    """
    pairs: list[tuple[float, int, int]] = []
    for i, p in enumerate(pred):
        for j, g in enumerate(gt):
            if compatible is not None and not compatible(i, j):
                continue
            iou = box_iou(p, g, plus_one=plus_one)
            if is_hit(iou, plus_one=plus_one, threshold=threshold):
                pairs.append((iou, i, j))
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_g: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return MatchCounts(tp=len(used_p), n_pred=len(pred), n_gt=len(gt))


# --------------------------------------------------------------------------- text overlap

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


def normalize_for_match(text: str) -> str:
    """Light normalisation for exact match: lowercase, punctuation -> space, collapse whitespace."""
    return " ".join(_WORD_RE.findall(text.lower()))


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts after :func:`normalize_for_match` (SQuAD style).

    Two empty texts score 1.0; one empty text scores 0.0.  This is a cheap overlap measure,
    not CIDEr/BLEU.
    """
    p = normalize_for_match(prediction).split()
    r = normalize_for_match(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- VQA accuracy
# Tables and rules of the GT-Vision-Lab VQA evaluator (vqaEval.py), written out here.

_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = ';/[]"{}()=+\\_-><@`,?!'  # the evaluator's marks, in its order
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The evaluator's period rule: a "." not followed by a digit is deleted.  It passes re.UNICODE
# (== 32) as the ``count`` argument of ``sub``, so at most 32 periods are removed; kept as is.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_MAX = 32

VQAVariant = Literal["official", "legacy"]


def vqa_punctuation(text: str) -> str:
    """The evaluator's punctuation rule.

    Each mark of ``;/[]"{}()=+\\_->@<`,?!`` is deleted when it touches a space in the input (or
    the input holds ``digit,digit`` anywhere), otherwise replaced by a space; then every ``.``
    not followed by a digit is deleted.
    """
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX)


def vqa_digit_article(text: str) -> str:
    """The evaluator's word rule: lowercase, number words zero..ten (and "none") to digits,
    drop a/an/the, expand the contraction table (``isnt`` -> ``isn't``), join with single spaces."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Full VQA answer normalisation: whitespace clean-up, punctuation rule, word rule."""
    return vqa_digit_article(vqa_punctuation(_clean_ws(text)))


def _clean_ws(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str], variant: VQAVariant = "official") -> float:
    """VQA accuracy of one prediction against the annotators' answers (10 in VQAv2/OK-VQA).

    For each answer i: ``acc_i = min(1, #{j != i : answer_j == prediction} / 3)``; the result is
    the mean over i (so 3 or more matching answers out of 10 give 1.0; 2 give 0.6; 1 gives 0.3).
    With a single answer the leave-one-out count is always 0, so the score is 0.0: use exact
    match for single-answer data (GQA).

    ``variant="official"`` follows the current GT-Vision-Lab ``vqaEval.py``: newlines/tabs become
    spaces and both sides are stripped; only when the answers are not all identical are answers
    and prediction normalised (punctuation rule, then lowercase/number words/articles/contractions).
    Otherwise the comparison is on the raw (stripped) strings.

    ``variant="legacy"`` follows the older copies in LAVIS and MiniGPT-4: the prediction is always
    normalised (punctuation + word rule); the answers get only the punctuation rule, and only when
    they are not all identical.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    if variant not in ("official", "legacy"):
        raise ValueError(f"unknown VQA accuracy variant {variant!r}; use 'official' or 'legacy'")
    pred = _clean_ws(prediction)
    gts = [_clean_ws(a) for a in answers]
    differ = len(set(gts)) > 1
    if variant == "official":
        if differ:
            gts = [normalize_answer(a) for a in gts]
            pred = normalize_answer(pred)
    else:
        pred = vqa_digit_article(vqa_punctuation(pred))
        if differ:
            gts = [vqa_punctuation(a) for a in gts]
    matches = sum(a == pred for a in gts)
    # Leave-one-out: for answer i the matches among the others are matches - [gt_i == pred].
    per_answer = [min(1.0, (matches - (a == pred)) / 3) for a in gts]
    return sum(per_answer) / len(per_answer)
