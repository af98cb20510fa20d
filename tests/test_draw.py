"""mgv2.draw: boxes on the right pixels, labels only for phrases, stable colours, atomic save."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from mgv2 import boxes as B
from mgv2.draw import GT_COLOR, PRED_COLOR, draw_boxes, draw_parsed, phrase_colors, save_image_atomic

W, H = 400, 300
# {<30><40><70><80>} on 400 x 300 -> pixels (120, 120, 280, 240)
BOX = "{<30><40><70><80>}"
X1, Y1, X2, Y2 = 120, 120, 280, 240
WHITE = np.array([255, 255, 255], dtype=np.uint8)


def _blank() -> Image.Image:
    return Image.new("RGB", (W, H), "white")


def _rgb(hex_color: str) -> tuple[int, int, int]:
    c = sv.Color.from_hex(hex_color)
    return (c.r, c.g, c.b)


def _label_area(a: np.ndarray) -> np.ndarray:
    """Pixels just above the box's top-left corner, where the label sits."""
    return a[Y1 - 15 : Y1 - 3, X1 + 3 : X1 + 30]


def test_box_edges_coloured_and_inside_untouched() -> None:
    img = _blank()
    parsed = B.parse(f"<p>dog</p> {BOX}")
    out = draw_parsed(img, parsed, thickness=2)
    a = np.asarray(out)
    color = _rgb(phrase_colors(parsed)["dog"])
    for x, y in [((X1 + X2) // 2, Y1), ((X1 + X2) // 2, Y2), (X1, (Y1 + Y2) // 2), (X2, (Y1 + Y2) // 2)]:
        assert tuple(a[y, x]) == color, (x, y)
    assert (a[Y1 + 10 : Y2 - 10, X1 + 10 : X2 - 10] == WHITE).all()
    assert (a[Y2 + 10 :, :] == WHITE).all()
    assert out.size == (W, H) and out is not img
    assert (np.asarray(img) == WHITE).all(), "the input image must not be drawn on"


def test_phrase_has_label_bare_box_has_none() -> None:
    labelled = np.asarray(draw_parsed(_blank(), B.parse(f"<p>dog</p> {BOX}"), thickness=2))
    bare = np.asarray(draw_parsed(_blank(), B.parse(BOX), thickness=2))
    assert (_label_area(bare) == WHITE).all()
    assert not (_label_area(labelled) == WHITE).all()
    assert (_label_area(labelled) != _label_area(bare)).any()
    # the bare box itself is drawn
    assert not (bare[Y1, X1 + 10 : X2 - 10] == WHITE).all()


def test_label_of_box_at_top_edge_stays_in_picture() -> None:
    # box at pixels (40, 0, 240, 90): no room above for the label, so it goes just below the box,
    # where it hides neither the box's top edge nor the top of the object
    a = np.asarray(draw_parsed(_blank(), B.parse("<p>sky</p> {<10><0><60><30>}"), thickness=2))
    assert (a[5:85, 45:235] == WHITE).all(), "nothing drawn inside the box"
    assert (a[95:115, 45:100] != WHITE).any(axis=-1).sum() > 20
    # no room above nor below: the label stays in the picture, over the top of the box
    b = np.asarray(draw_parsed(_blank(), B.parse("<p>sky</p> {<10><0><60><95>}"), thickness=2))
    assert (b[5:20, 45:100] != WHITE).any(axis=-1).sum() > 20


def test_each_phrase_one_colour() -> None:
    text = f"<p>dog</p> {BOX}<delim>{{<5><5><20><20>}} and <p>cat</p> {{<80><5><95><30>}}"
    parsed = B.parse(text)
    colors = phrase_colors(parsed)
    assert set(colors) == {"dog", "cat"} and colors["dog"] != colors["cat"]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors.values())
    a = np.asarray(draw_parsed(_blank(), parsed, thickness=2))
    dog, cat = _rgb(colors["dog"]), _rgb(colors["cat"])
    assert tuple(a[Y2, 200]) == dog
    small_box_bottom = int(20 / 100 * H)
    assert tuple(a[small_box_bottom, int(12 / 100 * W)]) == dog
    cat_box_bottom = int(30 / 100 * H)
    assert tuple(a[cat_box_bottom, int(88 / 100 * W)]) == cat


def test_phrase_colors_stable() -> None:
    text = "<p>a man</p> {<1><1><50><50>} holds <p>a cup</p> {<40><40><60><60>} near <p>a man</p> {<60><60><90><90>}"
    first = phrase_colors(B.parse(text))
    assert first == phrase_colors(B.parse(text))
    assert list(first) == ["a man", "a cup"]
    # colours follow the order of appearance, from supervision's default palette
    assert first["a man"] == sv.ColorPalette.DEFAULT.by_idx(0).as_hex()
    assert first["a cup"] == sv.ColorPalette.DEFAULT.by_idx(1).as_hex()


def test_phrase_without_box_not_coloured() -> None:
    parsed = B.parse(f"<p>tree</p> and <p>dog</p> {BOX}")
    assert list(phrase_colors(parsed)) == ["dog"]


def test_invalid_boxes_skipped_image_returned() -> None:
    parsed = B.parse("{<70><40><30><80>}")  # inverted
    assert parsed.boxes and not parsed.boxes[0].valid
    out = draw_parsed(_blank(), parsed)
    assert out.size == (W, H) and (np.asarray(out) == WHITE).all()
    assert phrase_colors(B.parse("<p>x</p> {<70><40><30><80>}")) == {}
    assert (np.asarray(draw_parsed(_blank(), B.parse("no boxes at all"))) == WHITE).all()


def test_full_image_box_visible() -> None:
    a = np.asarray(draw_parsed(_blank(), B.parse("{<0><0><100><100>}"), thickness=2))
    for x, y in [(0, H // 2), (W - 1, H // 2), (W // 2, 0), (W // 2, H - 1)]:
        assert not (a[y, x] == WHITE).all(), (x, y)


def test_draw_parsed_non_rgb_input() -> None:
    out = draw_parsed(Image.new("L", (W, H), 255), B.parse(BOX))
    assert out.mode == "RGB" and out.size == (W, H)


def test_draw_boxes_ground_truth_vs_prediction() -> None:
    gt = (X1, Y1, X2, Y2)
    pred = (50.0, 40.0, 100.0, 90.0)
    a = np.asarray(
        draw_boxes(_blank(), [("gt", [gt]), (None, [pred])], colors=[GT_COLOR, PRED_COLOR], thickness=2)
    )
    assert tuple(a[Y2, 200]) == _rgb(GT_COLOR)
    assert tuple(a[90, 75]) == _rgb(PRED_COLOR)


def test_draw_boxes_skips_bad_boxes_and_checks_colours() -> None:
    groups = [("x", [(10, 10, 5, 50), (float("nan"), 0, 10, 10), (0, 0, 0, 0)])]
    out = draw_boxes(_blank(), groups)
    assert (np.asarray(out) == WHITE).all()
    with pytest.raises(ValueError, match="one per group"):
        draw_boxes(_blank(), groups, colors=["#ff0000", "#00ff00"])


@pytest.mark.parametrize("name", ["pic.png", "pic.jpg", "sub/dir/pic.webp"])
def test_save_image_atomic(tmp_path: Path, name: str) -> None:
    img = draw_parsed(_blank(), B.parse(f"<p>dog</p> {BOX}"))
    path = save_image_atomic(img, tmp_path / name)
    assert path.is_file()
    with Image.open(path) as back:
        assert back.size == (W, H)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_save_image_atomic_rgba_to_jpeg(tmp_path: Path) -> None:
    path = save_image_atomic(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), tmp_path / "a.jpeg")
    with Image.open(path) as back:
        assert back.mode == "RGB" and min(back.getpixel((4, 4))) >= 250


def test_save_image_atomic_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        save_image_atomic(_blank(), tmp_path / "pic.unknownext")
    assert not list(tmp_path.iterdir())
