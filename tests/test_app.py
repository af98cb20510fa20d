"""The Streamlit app: its logic (plain functions) and its pages driven by ``streamlit.testing``.

The AppTest flows use the real tiny model (random weights, greedy, few tokens) unless a test sets
the ``MGV2_APP_FAKE_ANSWER`` test hook to get a known answer.  The real-browser test is in
``tests/test_app_browser.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed: pip install -e '.[app]'")

from streamlit.testing.v1 import AppTest

from app import core
from app.config import DEFAULT_MODEL, ROOT, load_config
from app.runs import RunError, metrics_rows, read_run
from app.samples import demo_sample
from mgv2 import boxes as B
from mgv2.draw import phrase_colors
from mgv2.errors import ImageError, TaskError

MAIN = str(ROOT / "app" / "main.py")
EVAL_PAGE = str(ROOT / "app" / "pages" / "evaluation_run.py")
ENV_KEYS = ("MGV2_MODEL", "MGV2_CHECKPOINT", "MGV2_DEVICE", "MGV2_EVAL_RUN", "MGV2_APP_MAX_UPLOAD_MB",
            "MGV2_APP_FAKE_ANSWER")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MGV2_DEVICE", "cpu")


# ---------------------------------------------------------------------------------------- config


def test_config_cli_beats_env_beats_default():
    script = str(ROOT / "app" / "main.py")
    assert load_config([script], {}).model == DEFAULT_MODEL
    assert load_config([script], {}).checkpoint is None
    env = {"MGV2_MODEL": "env.yaml", "MGV2_CHECKPOINT": "env.pth", "MGV2_APP_MAX_UPLOAD_MB": "5"}
    cfg = load_config([script], env)
    assert (cfg.model, cfg.checkpoint, cfg.max_upload_mb) == ("env.yaml", "env.pth", 5)
    cfg = load_config([script, "--model", "cli.yaml", "--checkpoint", "cli.pth", "--run", "runs/x"], env)
    assert (cfg.model, cfg.checkpoint, cfg.eval_run) == ("cli.yaml", "cli.pth", "runs/x")
    assert cfg.fake_answer is None
    # another program's argv (pytest under AppTest) is not read as app arguments
    assert load_config(["/usr/bin/pytest", "--model", "x.yaml"], {}).model == DEFAULT_MODEL
    assert load_config([script], {"MGV2_APP_FAKE_ANSWER": "hi"}).fake_answer == "hi"
    assert load_config([script], {}).model_path.is_file()  # relative to the repository root


# ------------------------------------------------------------------------------------ shortcuts


def test_shortcuts_give_the_official_demo_text():
    assert core.compose_instruction("grounding", core.SHORTCUTS["grounding"].text) == (
        "[grounding] describe this image in detail"
    )
    assert core.compose_instruction("refer", "red balloon") == "[refer] red balloon"
    assert core.compose_instruction("detection", "  red   balloon ") == "[detection] red balloon"
    assert core.compose_instruction("vqa", "what colour is the balloon?") == "[vqa] what colour is the balloon?"
    assert core.compose_instruction("caption", core.SHORTCUTS["caption"].text) == "[caption] Briefly describe this image."
    assert core.compose_instruction("chat", "hello there") == "hello there"
    assert core.compose_instruction("identify", "what is this", (10, 20, 30, 40)) == (
        "[identify] what is this {<10><20><30><40>}"
    )
    assert core.compose_instruction("identify", "", (10, 20, 30, 40)) == "[identify] what is this {<10><20><30><40>}"
    # an identifier typed by the user wins over the active button
    assert core.compose_instruction("detection", "[refer] the cup") == "[refer] the cup"


@pytest.mark.parametrize("task,text,region", [("refer", "", None), ("chat", "  ", None),
                                              ("identify", "what is this", None), ("chat", "[nope] x", None)])
def test_compose_refuses_what_cannot_be_sent(task, text, region):
    with pytest.raises(TaskError):
        core.compose_instruction(task, text, region)


def test_region_picker_drag_and_two_clicks():
    picker = core.RegionPicker()
    # a drag on a picture shown at half size -> corners scaled to the image
    drag = {"x1": 10, "y1": 50, "x2": 60, "y2": 5, "width": 160, "height": 120, "unix_time": 1}
    assert picker.feed(drag, (320, 240)) == (20.0, 10.0, 120.0, 100.0)
    assert picker.feed(drag, (320, 240)) is None  # the component repeats its last value: ignored
    click1 = {"x1": 100, "y1": 100, "x2": 101, "y2": 100, "width": 320, "height": 240, "unix_time": 2}
    click2 = {"x1": 40, "y1": 30, "x2": 40, "y2": 30, "width": 320, "height": 240, "unix_time": 3}
    assert picker.feed(click1, (320, 240)) is None and picker.pending == (100.0, 100.0)
    assert picker.feed(click2, (320, 240)) == (40.0, 30.0, 100.0, 100.0)
    assert picker.pending is None
    outside = {"x1": -5, "y1": -5, "x2": 500, "y2": 500, "width": 320, "height": 240, "unix_time": 4}
    assert picker.feed(outside, (320, 240)) == (0.0, 0.0, 320.0, 240.0)
    assert picker.feed({"junk": 1, "unix_time": 5}, (320, 240)) is None


def test_grid_region_matches_the_box_module():
    assert core.grid_region((120, 100, 20, 10), 320, 240) == B.from_pixels((20, 10, 120, 100), 320, 240).coords
    assert core.grid_region((5, 5, 5, 50), 320, 240) is None


# -------------------------------------------------------------------------------------- answers


def test_answer_html_colours_phrases_like_their_boxes():
    parsed = B.parse("a <p>red balloon</p> {<19><18><36><48>} over <p>blue box</p> {<59><54><81><81>} <b>")
    html = core.answer_html(parsed)
    colors = phrase_colors(parsed)
    assert f'color:{colors["red balloon"]}' in html and f'color:{colors["blue box"]}' in html
    assert colors["red balloon"] != colors["blue box"]
    assert "&lt;b&gt;" in html and "<b>" not in html  # escaped
    bare = core.answer_html(B.parse("{<1><2><3><4>}"))
    assert "{&lt;1&gt;&lt;2&gt;&lt;3&gt;&lt;4&gt;}" in bare
    assert "empty answer" in core.answer_html(B.parse(""))


def test_answer_json_has_grid_and_pixel_boxes():
    ex = core.Exchange("[refer] red balloon", "{<10><20><30><40>}", "refer")
    data = json.loads(core.answer_json(ex, (200, 100)))
    box = data["parsed"]["groups"][0]["boxes"][0]
    assert box["box"] == [10, 20, 30, 40] and box["pixels"] == [20.0, 20.0, 60.0, 40.0]
    assert data["instruction"] == "[refer] red balloon" and data["image_size"] == [200, 100]


def test_problems_say_when_no_box_could_be_read():
    assert core.problems(core.Exchange("[refer] x", "no idea", "refer"))
    assert not core.problems(core.Exchange("[refer] x", "{<1><2><30><40>}", "refer"))
    assert not core.problems(core.Exchange("[vqa] x", "blue", "vqa"))
    assert any("unreadable" in p for p in core.problems(core.Exchange("[refer] x", "{<1><2><3", "refer")))


def test_read_upload_limits_and_errors():
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "red").save(buf, format="PNG")
    assert core.read_upload("ok.png", buf.getvalue(), 1).size == (8, 6)
    with pytest.raises(ImageError, match="upload limit is 1 MB"):
        core.read_upload("big.png", b"\0" * (2 * 2**20), 1)
    with pytest.raises(ImageError, match="notes.png"):
        core.read_upload("notes.png", b"this is not a picture", 1)
    with pytest.raises(ImageError):
        core.read_upload("cut.png", buf.getvalue()[:40], 1)


def test_settings_from_the_sidebar():
    greedy = core.settings_from(False, 0.6, 0.9, 1.05, 20)
    assert not greedy.do_sample and greedy.max_new_tokens == 20
    sampling = core.settings_from(True, 0.6, 0.9, 1.05, 500)
    assert sampling.do_sample and (sampling.temperature, sampling.top_p) == (0.6, 0.9)


def test_demo_sample_ground_truth_is_measured_from_its_pixels():
    sample = demo_sample()
    x1, y1, x2, y2 = sample.box_of("red balloon")
    a = np.asarray(sample.image)
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    assert a[cy, cx, 0] > 150 and a[cy, cx, 1] < 80  # the box is around red pixels
    assert 40 < x2 - x1 < 80 and 50 < y2 - y1 < 90


# ------------------------------------------------------------------------------ evaluation runs


def _make_run(folder: Path) -> Path:
    """A small hand-made run folder in the shape `mgv2 eval` writes."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = demo_sample()
    sample.image.save(folder / "scene.png")
    balloon = list(sample.box_of("red balloon"))
    blue = list(sample.box_of("blue box"))
    common = {"image": "scene.png", "width": 320, "height": 240}
    rows = [
        {"id": "r1", "split": "val", "sent": "red balloon", "answer": "{<19><18><36><48>}", "gt": balloon,
         "pred": [60.8, 43.2, 115.2, 115.2], "iou": 0.9, "status": "ok", **common},
        {"id": "r2", "split": "val", "sent": "blue box", "answer": "no idea", "gt": blue, "pred": None,
         "iou": 0.0, "status": "unparseable", **common},
        {"id": "r3", "split": "testA", "sent": "blue box", "answer": "{<19><18><36><48>}", "gt": blue,
         "pred": [60.8, 43.2, 115.2, 115.2], "iou": 0.0, "status": "ok", **common},
        {"id": "r4", "split": "testA", "sent": "red balloon", "answer": "{<10><10><60><60>}", "gt": balloon,
         "pred": [32.0, 24.0, 192.0, 144.0], "iou": 0.2, "status": "ok", **common, "image": "gone.png"},
        # no pred field: parsed from the answer with the image size
        {"id": "r5", "split": "testA", "sent": "red balloon", "answer": "{<19><18><36><48>}", "gt": balloon, **common},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"val": {"acc50": 0.5, "n": 2}, "testA": {"acc50": 1 / 3, "n": 3}}))
    (folder / "report.md").write_text("# Run report\n\nhand-made for the app tests\n")
    Image.new("RGB", (120, 60), (20, 20, 200)).save(folder / "iou_histogram.png")
    Image.new("RGB", (120, 60), (20, 200, 20)).save(folder / "contact_sheet.png")
    return folder


def test_read_run_outcomes_filters_and_metrics(tmp_path):
    run = read_run(_make_run(tmp_path / "run"))
    outcomes = {i.id: i.outcome for i in run.items}
    assert outcomes == {"r1": "correct", "r2": "unparseable", "r3": "wrong object", "r4": "loose box",
                        "r5": "correct"}
    assert run.items[4].pred and run.items[4].iou > 0.8  # parsed + IoU computed
    assert len(run.skipped) == 1 and "line 6" in run.skipped[0]
    assert run.splits == ["testA", "val"]
    assert [i.id for i in run.filter(["testA"], ["loose box", "wrong object"])] == ["r3", "r4"]
    assert run.histogram.name == "iou_histogram.png" and run.contact_sheet.name == "contact_sheet.png"
    assert metrics_rows(run.metrics) == [{"split": "val", "acc50": 0.5, "n": 2}, {"split": "testA", "acc50": 1 / 3, "n": 3}]
    assert metrics_rows({"acc50": 0.5, "by": {"a": 1}}) == [{"metric": "acc50", "value": 0.5},
                                                           {"metric": "by.a", "value": 1}]
    with pytest.raises(RunError, match="predictions.jsonl"):
        read_run(tmp_path)
    with pytest.raises(RunError, match="not a folder"):
        read_run(tmp_path / "nope")


# ------------------------------------------------------------------------------------- AppTest


def _app(timeout: float = 120) -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=timeout).run()


def _greedy_short(at: AppTest, tokens: int = 12) -> None:
    at.sidebar.radio(key="decoding").set_value("greedy")
    at.sidebar.number_input(key="max_new_tokens").set_value(tokens)


def _send(at: AppTest, text: str | None = None) -> AppTest:
    if text is not None:
        at.text_input(key="message").input(text)
    return at.button(key="send").click().run()


def test_app_detection_flow_with_the_real_tiny_model():
    at = _app()
    assert not at.exception
    assert [b.label for b in at.button][:7] == [s.label for s in core.SHORTCUTS.values()]
    _greedy_short(at)
    at.button(key="task_detection").click().run()
    assert at.text_input(key="message").value == ""
    assert at.text_input(key="message").label == "Message for [detection]"
    _send(at, "red balloon")
    assert not at.exception
    history = at.session_state["history"]
    assert [e.instruction for e in history] == ["[detection] red balloon"]
    assert at.text_input(key="message").value == ""  # cleared after sending
    assert any(e.label == "Raw model text" for e in at.expander)
    assert {d.label for d in at.get("download_button")} == {"Download parsed JSON", "Download annotated image"}
    answer_md = [m.value for m in at.markdown if "mgv2-answer" in m.value]
    assert len(answer_md) == 1
    # random weights: whatever it said, an answer without boxes is reported, not an error
    if not [b for b in history[0].parsed.boxes if b.valid]:
        assert any("no readable box" in w.value for w in at.warning)


def test_app_shortcuts_identify_region_multi_turn_and_restart():
    at = _app()
    _greedy_short(at, 8)
    at.button(key="task_grounding").click().run()
    assert at.text_input(key="message").value == "describe this image in detail"
    _send(at)
    at.button(key="task_identify").click().run()
    assert at.text_input(key="message").value == "what is this"
    for key, value in (("reg_x1", 62), ("reg_y1", 44), ("reg_x2", 118), ("reg_y2", 116)):
        at.number_input(key=key).set_value(value)
    at.run()
    region = B.box_text(B.from_pixels((62, 44, 118, 116), *at.session_state["image_size"]))
    assert any(region in c.value for c in at.caption)  # the live region text
    _send(at)
    assert not at.exception
    instructions = [e.instruction for e in at.session_state["history"]]
    assert instructions == ["[grounding] describe this image in detail", f"[identify] what is this {region}"]
    assert len(at.chat_message) == 4
    at.button(key="restart").click().run()
    assert at.session_state["history"] == [] and len(at.chat_message) == 0


def test_app_refuses_empty_refer_with_a_message():
    at = _app()
    at.button(key="task_refer").click().run()
    _send(at, "")
    assert not at.exception
    assert any("nothing after the identifier" in w.value for w in at.warning)
    assert at.session_state["history"] == []


def test_app_unparseable_answer_is_reported_and_the_app_keeps_working(monkeypatch):
    monkeypatch.setenv("MGV2_APP_FAKE_ANSWER", "<p>red balloon</p> {<19><18><3")
    at = _app()
    assert any("TEST HOOK" in w.value for w in at.sidebar.warning)
    at.button(key="task_refer").click().run()
    _send(at, "red balloon")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "no readable box" in warnings and "unreadable box markup" in warnings
    _send(at, "blue box")  # still works
    assert len(at.session_state["history"]) == 2


def test_app_model_that_fails_to_load(monkeypatch, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("llm: {hidden_size: -3}\n")
    monkeypatch.setenv("MGV2_MODEL", str(bad))
    at = _app()
    assert not at.exception
    assert any("failed to load" in e.value for e in at.error)
    assert at.button(key="send").disabled
    at.button(key="task_detection").click().run()  # the rest of the page works
    assert not at.exception and at.text_input(key="message").label == "Message for [detection]"


def test_app_bad_and_too_large_uploads(monkeypatch):
    monkeypatch.setenv("MGV2_APP_MAX_UPLOAD_MB", "1")
    at = _app()
    at.radio(key="image_source").set_value("upload").run()
    at.file_uploader(key="upload").upload("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png").run()
    assert not at.exception
    assert any("cannot be used" in e.value and "broken.png" in e.value for e in at.error)
    at.file_uploader(key="upload").upload("huge.png", b"\0" * (2**20 + 10), "image/png").run()
    assert any("upload limit is 1 MB" in e.value for e in at.error)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buf, format="PNG")
    at.file_uploader(key="upload").upload("fine.png", buf.getvalue(), "image/png").run()
    assert not at.error and any("Input 40x30" in c for im in at.get("image") for c in im.captions)


def test_eval_page_metrics_histogram_items_and_filters(monkeypatch, tmp_path):
    run = _make_run(tmp_path / "run")
    monkeypatch.setenv("MGV2_EVAL_RUN", str(run))
    at = AppTest.from_file(EVAL_PAGE, default_timeout=60).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["split"]) == ["val", "testA"]
    captions = [c for im in at.get("image") for c in im.captions]
    assert any("IoU histogram" in c for c in captions)
    item_captions = [c for c in captions if " · #" in c]
    assert len(item_captions) == 5
    assert any(c.startswith("loose box · IoU 0.20 · testA") for c in item_captions)
    at.multiselect(key="f_outcome").set_value(["wrong object", "unparseable"]).run()
    item_captions = [c for im in at.get("image") for c in im.captions if " · #" in c]
    assert sorted(c.split(" · ")[0] for c in item_captions) == ["unparseable", "wrong object"]
    at.multiselect(key="f_split").set_value(["val"]).run()
    item_captions = [c for im in at.get("image") for c in im.captions if " · #" in c]
    assert [c.split(" · ")[0] for c in item_captions] == ["unparseable"]
    at.text_input(key="run_folder").input(str(tmp_path / "nope")).run()
    assert any("not a folder" in e.value for e in at.error)
