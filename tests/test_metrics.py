"""eval.metrics: box IoU conventions, greedy matching, and the VQA accuracy of the official evaluator."""

from __future__ import annotations

import pytest

from eval.metrics import (
    box_iou,
    is_hit,
    match_boxes,
    normalize_answer,
    token_f1,
    vqa_accuracy,
    vqa_punctuation,
)

# ----------------------------------------------------------------------------- IoU


def test_iou_continuous_and_plus_one_hand_computed():
    a, b = (0, 0, 10, 10), (5, 5, 15, 15)
    assert box_iou(a, b) == pytest.approx(25 / 175)
    # +1 pixel: intersection 6x6, each area 11x11
    assert box_iou(a, b, plus_one=True) == pytest.approx(36 / (121 + 121 - 36))


def test_iou_identical_disjoint_degenerate():
    assert box_iou((1, 2, 30, 40), (1, 2, 30, 40)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 0.0  # zero union
    assert box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0  # inverted box has no area


def test_hit_boundary_conventions():
    half = box_iou((0, 0, 10, 10), (0, 0, 20, 10))
    assert half == pytest.approx(0.5)
    assert is_hit(half)  # continuous: IoU >= 0.5
    # official: (x2-x1+1) areas; (0,0,9,9) vs (0,0,19,9): 100 / 200 = exactly 0.5, and needs > 0.5
    official = box_iou((0, 0, 9, 9), (0, 0, 19, 9), plus_one=True)
    assert official == pytest.approx(0.5)
    assert not is_hit(official, plus_one=True)
    assert not is_hit(0.4999)


def test_match_boxes_greedy_one_to_one():
    gt = [(0, 0, 10, 10), (20, 0, 30, 10)]
    # two predictions on the first gt box: only one may match it
    counts = match_boxes([(0, 0, 10, 10), (0, 0, 10, 9), (20, 0, 30, 10)], gt)
    assert (counts.tp, counts.n_pred, counts.n_gt) == (2, 3, 2)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == 1.0
    assert counts.f1 == pytest.approx(0.8)
    blocked = match_boxes([(0, 0, 10, 10)], gt, compatible=lambda i, j: False)
    assert blocked.tp == 0 and blocked.precision == 0.0 and blocked.f1 == 0.0
    empty = match_boxes([], gt)
    assert empty.precision == 0.0 and empty.recall == 0.0


def test_token_f1():
    assert token_f1("A dog, running.", "a dog running") == 1.0
    assert token_f1("a dog", "a cat") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0
    assert token_f1("", "x") == 0.0


# ----------------------------------------------------------------------------- VQA accuracy


def _answers(match: str, n_match: int, other: str = "cat") -> list[str]:
    return [match] * n_match + [other] * (10 - n_match)


@pytest.mark.parametrize(
    ("n_match", "expected"),
    [
        (0, 0.0),
        (1, 0.3),  # 1 x 0/3 + 9 x 1/3 -> 3/10
        (2, 0.6),  # 2 x 1/3 + 8 x 2/3 -> 6/10
        (3, 0.9),  # 3 x 2/3 + 7 x 1   -> 9/10 (leave-one-out: 3 matches is not yet 1.0)
        (4, 1.0),  # 4 x 1   + 6 x 1
        (10, 1.0),
    ],
)
def test_leave_one_out_average(n_match, expected):
    assert vqa_accuracy("dog", _answers("dog", n_match)) == pytest.approx(expected)
    assert vqa_accuracy("dog", _answers("dog", n_match), variant="legacy") == pytest.approx(expected)


def test_number_words_articles_contractions_punctuation():
    assert vqa_accuracy("two", _answers("2", 5)) == 1.0
    assert vqa_accuracy("The dog", _answers("dog", 4)) == 1.0
    assert vqa_accuracy("dog", _answers("the dog", 4)) == 1.0
    assert vqa_accuracy("isnt", _answers("isn't", 4, other="no")) == 1.0
    assert vqa_accuracy("yes.", _answers("yes", 4, other="no")) == 1.0
    assert vqa_accuracy(" yes\n", _answers("yes", 4, other="no")) == 1.0


def test_identical_answers_skip_normalisation_only_in_official():
    same = ["2"] * 10
    assert vqa_accuracy("two", same) == 0.0  # official: no normalisation when all answers agree
    assert vqa_accuracy("two", same, variant="legacy") == 1.0  # legacy always normalises the prediction
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10, variant="legacy") == 1.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


def test_legacy_answers_get_punctuation_rule_only():
    answers = _answers("the dog", 4)
    assert vqa_accuracy("dog", answers) == 1.0
    assert vqa_accuracy("dog", answers, variant="legacy") == 0.0  # "the dog" keeps its article in legacy


def test_punctuation_rule_details():
    assert vqa_punctuation("a,b") == "a b"  # mark not touching a space -> space
    assert vqa_punctuation("a, b") == "a b"  # mark touching a space -> deleted
    assert vqa_punctuation("1,000") == "1000"  # digit,digit anywhere -> every mark deleted
    assert vqa_punctuation("3.5") == "3.5"  # period before a digit kept
    assert vqa_punctuation("e.g.") == "eg"
    assert normalize_answer("Three Dogs!") == "3 dogs"
    assert normalize_answer("none") == "0"


def test_vqa_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("x", [])
    with pytest.raises(ValueError, match="variant"):
        vqa_accuracy("x", ["x"], variant="new")  # type: ignore[arg-type]
    assert vqa_accuracy("x", ["x"]) == 0.0  # a single answer has no "other" annotators
