"""The box text format (mgv2/boxes.py): official text, round trips, a parser that never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgv2 import boxes as B


def test_official_text_and_truncation():
    # x/W*100 truncated with int(): 10/200*100 = 5, 110/200*100 = 55, 20/400*100 = 5, 220/400*100 = 55
    assert B.format_box((10, 20, 110, 220), 200, 400) == "{<5><5><55><55>}"
    assert B.format_box((0, 0, 199.9, 399.9), 200, 400) == "{<0><0><99><99>}"  # truncation, not rounding
    assert B.format_box(B.xywh_to_xyxy((10, 20, 100, 200)), 200, 400) == "{<5><5><55><55>}"
    assert B.phrase_text("balloon", [(1, 2, 3, 4), (5, 6, 7, 8)]) == "<p>balloon</p> {<1><2><3><4>}<delim>{<5><6><7><8>}"


def test_outside_the_image_is_clamped_and_flagged():
    b = B.from_pixels((-10, 5, 250, 50), 200, 100)
    assert b.coords == (0, 5, 100, 50) and b.clamped
    with pytest.raises(ValueError, match="positive"):
        B.from_pixels((0, 0, 1, 1), 0, 10)
    with pytest.raises(ValueError, match="0..100"):
        B.box_text((0, 0, 101, 5))


@pytest.mark.parametrize(
    "text, groups",
    [
        ("{<12><30><41><77>}", [(None, [(12, 30, 41, 77)])]),
        ("<<12><30><41><77>>", [(None, [(12, 30, 41, 77)])]),  # the design card's spelling
        ("{ <12> <30> <41> <77> }", [(None, [(12, 30, 41, 77)])]),
        ("<p>balloon</p> {<1><2><3><4>}<delim>{<5><6><7><8>}", [("balloon", [(1, 2, 3, 4), (5, 6, 7, 8)])]),
        (
            "<p>a man</p> {<1><2><3><4>} rides <p>a horse</p> {<5><6><7><8>} .",
            [("a man", [(1, 2, 3, 4)]), ("a horse", [(5, 6, 7, 8)])],
        ),
        ("just words", []),
    ],
)
def test_parse_groups(text, groups):
    p = B.parse(text)
    assert [(g.phrase, [b.coords for b in g.boxes]) for g in p.groups] == groups
    assert p.ok


def test_parse_grounded_caption_text_keeps_phrases():
    p = B.parse("<p>a man</p> {<1><2><3><4>} rides <p>a horse</p> {<5><6><7><8>}")
    assert p.text == "a man rides a horse"


@pytest.mark.parametrize(
    "text, words",
    [
        ("{<12><30>", "unreadable"),
        ("<p>cat</p> sits", "no box"),
        ("{<12><30><141><77>}", "clamped"),
        ("{<50><30><41><77>}", "inverted"),
    ],
)
def test_parse_reports_what_it_could_not_read(text, words):
    p = B.parse(text)
    assert any(words in issue for issue in p.issues)


def test_inverted_and_out_of_range_boxes_are_kept():
    p = B.parse("{<50><30><41><77>} {<-5><0><300><10>}")
    assert len(p.boxes) == 2
    assert p.boxes[0].inverted and not p.boxes[0].valid
    assert p.boxes[1].coords == (0, 0, 100, 10) and p.boxes[1].clamped


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(1, 5000),
    h=st.integers(1, 5000),
    fx=st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=2),
    fy=st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=2),
)
def test_round_trip_within_one_unit(w, h, fx, fy):
    x1, x2 = sorted(v * w for v in fx)
    y1, y2 = sorted(v * h for v in fy)
    text = B.format_box((x1, y1, x2, y2), w, h)
    (box,) = B.parse(text).boxes
    px = B.to_pixels(box, w, h)
    for got, want, size in zip(px, (x1, y1, x2, y2), (w, h, w, h)):
        assert abs(got - want) <= size / B.SCALE + 1e-6  # within one grid unit
        assert got <= want + 1e-6  # truncation never moves a coordinate forward


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}<>p/delim0123456789- abc\n")), max_size=80) | st.text(max_size=80))
def test_parse_never_raises(text):
    p = B.parse(text)
    assert isinstance(p.groups, list) and isinstance(p.issues, list)
    for b in p.boxes:
        assert all(0 <= v <= B.SCALE for v in b.coords)


def test_parse_non_text():
    assert B.parse(None).issues and B.parse(12).issues
