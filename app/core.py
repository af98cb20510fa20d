"""The app's logic without Streamlit: instructions, regions, answers, pictures, model loading.

Everything here is plain Python so it is tested directly; ``app/main.py`` only lays it out.
Box text is read and written through :mod:`mgv2.boxes`, pictures drawn by :mod:`mgv2.draw`.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from mgv2 import boxes as B
from mgv2.draw import draw_parsed, phrase_colors
from mgv2.errors import ImageError, MGV2Error, TaskError
from mgv2.image import load_image
from mgv2.model import GenerationSettings
from mgv2.sample import Turn

# -- task buttons -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shortcut:
    """One task button: the identifier it sets and the text it puts in the message box.

    Together they give the official demo's shortcut text (SPEC §8): ``[grounding] describe this
    image in detail``, ``[refer] ``, ``[detection] ``, ``[identify] what is this `` (+ the marked
    region), ``[vqa] ``.  ``[caption]`` gets the caption task's inference instruction.
    """

    key: str  # task name ("chat" for plain chat)
    label: str  # the button text
    identifier: str  # "" for plain chat
    text: str  # what the message box is filled with
    help: str
    needs_region: bool = False
    boxes_expected: bool = False


SHORTCUTS: dict[str, Shortcut] = {
    s.key: s
    for s in (
        Shortcut("grounding", "[grounding]", "[grounding]", "describe this image in detail",
                 "describe the image; every grounded phrase gets boxes", boxes_expected=True),
        Shortcut("refer", "[refer]", "[refer]", "", "type an object; the answer is one box", boxes_expected=True),
        Shortcut("detection", "[detection]", "[detection]", "",
                 "type an object class; the answer is all its boxes", boxes_expected=True),
        Shortcut("identify", "[identify]", "[identify]", "what is this",
                 "mark a region on the image; the answer names what is there", needs_region=True),
        Shortcut("vqa", "[vqa]", "[vqa]", "", "ask a question; the answer is short"),
        Shortcut("caption", "[caption]", "[caption]", "Briefly describe this image.", "a short caption"),
        Shortcut("chat", "chat", "", "", "plain chat, no task identifier"),
    )
}


def compose_instruction(task_key: str, text: str, region: Sequence[int] | None = None) -> str:
    """The instruction sent to the model for the active task button and the typed text.

    Text that starts with an identifier of its own (``[refer] the cup``) is sent as typed.  For
    ``[identify]`` the region's box text ``{<x1><y1><x2><y2>}`` is appended, as the official demo
    does.  Raises :class:`TaskError` with a message for the user when nothing can be sent.
    """
    from tasks import split_identifier, task_for_prompt

    shortcut = SHORTCUTS[task_key]
    body = " ".join(text.split())
    typed_identifier, _ = split_identifier(body)
    if typed_identifier is not None:
        instruction = body
    else:
        if shortcut.needs_region and not body:
            body = shortcut.text
        instruction = f"{shortcut.identifier} {body}".strip()
    task, _ = task_for_prompt(instruction if instruction.strip() else "")  # empty / unknown -> TaskError
    if task.name == "identify" and not B.parse(instruction).boxes:
        if region is None:
            raise TaskError("[identify] needs a region: drag on the image, or click two corners")
        instruction = f"{instruction} {B.box_text(region)}"
    return instruction


# -- regions for [identify] ---------------------------------------------------------------------


def grid_region(xyxy: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel corners (any order) -> grid box (0..100); None when the region has no area."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    box = B.from_pixels((x1, y1, x2, y2), width, height)
    return box.coords if box.valid else None


@dataclass
class RegionPicker:
    """Turns the image component's events into a pixel region (two clicks or one drag).

    The component (``streamlit-image-coordinates`` with ``click_and_drag``) reports the mouse-down
    and mouse-up points in displayed pixels.  A drag sets the region at once; a click (both points
    within ``click_tolerance`` pixels) is one corner: the first click is remembered, the second
    completes the region.
    """

    click_tolerance: float = 3.0
    pending: tuple[float, float] | None = None  # first corner of a two-click region (image pixels)
    last_event: float | None = None  # the event already handled (the component repeats its value)

    def feed(self, event: dict | None, image_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
        """Handle one component value; returns a new pixel region (x1, y1, x2, y2) or None."""
        if not event or event.get("unix_time") == self.last_event:
            return None
        self.last_event = event.get("unix_time")
        try:
            shown_w, shown_h = float(event["width"]), float(event["height"])
            sx, sy = image_size[0] / shown_w, image_size[1] / shown_h
            x1, y1, x2, y2 = (float(event[k]) for k in ("x1", "y1", "x2", "y2"))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        w, h = image_size

        def clip(x: float, y: float) -> tuple[float, float]:
            return min(max(x * sx, 0.0), float(w)), min(max(y * sy, 0.0), float(h))

        a, b = clip(x1, y1), clip(x2, y2)
        if abs(x2 - x1) <= self.click_tolerance and abs(y2 - y1) <= self.click_tolerance:
            if self.pending is None:
                self.pending = a
                return None
            a, b, self.pending = self.pending, a, None
        else:
            self.pending = None
        region = (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
        if region[2] - region[0] < 1 or region[3] - region[1] < 1:
            return None
        return region


# -- answers ------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One turn of the conversation as the app keeps it."""

    instruction: str
    answer: str  # the model's raw text
    task: str  # task name routed from the instruction
    parsed: B.Parsed = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.parsed is None:
            self.parsed = B.parse(self.answer)

    def to_json(self) -> dict:
        return {"instruction": self.instruction, "task": self.task, "answer": self.answer,
                "parsed": self.parsed.to_json()}


def task_name(instruction: str) -> str:
    from tasks import task_for_prompt

    try:
        return task_for_prompt(instruction)[0].name
    except TaskError:
        return "chat"


def problems(exchange: Exchange) -> list[str]:
    """What to tell the user about an answer whose boxes cannot be (fully) read."""
    notes = list(exchange.parsed.issues)
    shortcut = SHORTCUTS.get(exchange.task)
    drawable = [b for b in exchange.parsed.boxes if b.valid]
    if shortcut is not None and shortcut.boxes_expected and not drawable:
        notes.insert(0, f"the answer to [{exchange.task}] has no readable box, so nothing is drawn")
    return notes


def answer_html(parsed: B.Parsed) -> str:
    """The answer text (box markup removed) with each phrase in the colour of its boxes.

    Phrases are found in the cleaned text in answer order; everything is HTML-escaped.
    """
    text = parsed.text
    colors = phrase_colors(parsed)
    out: list[str] = []
    pos = 0
    for group in parsed.groups:
        phrase = group.phrase
        if phrase is None or phrase not in colors:
            continue
        at = text.find(phrase, pos)
        if at < 0:
            continue
        out.append(html.escape(text[pos:at]))
        color = colors[phrase]
        out.append(
            f'<span class="mgv2-phrase" style="color:{color};border-bottom:3px solid {color};'
            f'font-weight:600">{html.escape(phrase)}</span>'
        )
        pos = at + len(phrase)
    out.append(html.escape(text[pos:]))
    body = "".join(out).strip()
    if not body and parsed.boxes:
        # a bare box (refer): show the box text itself in the colour it is drawn with
        from mgv2.draw import PALETTE

        color = PALETTE.by_idx(0).as_hex()
        body = " ".join(
            f'<span class="mgv2-phrase" style="color:{color};font-weight:600">{html.escape(b.text())}</span>'
            for b in parsed.boxes
        )
    return body or "<em>(empty answer)</em>"


def annotate(image: Image.Image, parsed: B.Parsed) -> Image.Image:
    """The image with the answer's boxes (one colour and label per phrase; refer: a bare box)."""
    return draw_parsed(image, parsed)


def draw_region(image: Image.Image, region: Sequence[float] | None, pending: tuple[float, float] | None,
                color: str) -> Image.Image:
    """The [identify] preview: the marked region (pixels) and a dot for a pending first corner."""
    from PIL import ImageDraw

    from mgv2.draw import draw_boxes

    out = draw_boxes(image, [(None, [region] if region else [])], colors=[color])
    if pending is not None:
        x, y = pending
        r = max(3, round(min(image.size) / 80))
        ImageDraw.Draw(out).ellipse((x - r, y - r, x + r, y + r), fill=color, outline="black")
    return out


def draw_asked_region(image: Image.Image, exchange: Exchange, color: str) -> Image.Image:
    """[identify]: the region the instruction asked about, labelled with the answer text."""
    from mgv2.draw import draw_boxes

    width, height = image.size
    regions = [B.to_pixels(b, width, height) for b in B.parse(exchange.instruction).boxes if b.valid]
    label = " ".join(exchange.parsed.text.split()[:8]) or None
    return draw_boxes(image, [(label, regions)], colors=[color])


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def answer_json(exchange: Exchange, image_size: tuple[int, int]) -> str:
    """The downloadable JSON: instruction, raw answer, parsed groups (grid and pixel boxes)."""
    width, height = image_size
    payload = exchange.to_json()
    payload["image_size"] = [width, height]
    for group_json, group in zip(payload["parsed"]["groups"], exchange.parsed.groups):
        for box_json, box in zip(group_json["boxes"], group.boxes):
            box_json["pixels"] = [round(v, 2) for v in B.to_pixels(box, width, height)]
    return json.dumps(payload, indent=2)


# -- images -------------------------------------------------------------------------------------


def read_upload(name: str, data: bytes, max_mb: int) -> Image.Image:
    """An uploaded file -> RGB image; :class:`ImageError` with a message for the user otherwise."""
    size_mb = len(data) / 2**20
    if size_mb > max_mb:
        raise ImageError(f"{name} is {size_mb:.1f} MB; the upload limit is {max_mb} MB. Use a smaller picture.")
    try:
        return load_image(data)
    except ImageError as err:
        raise ImageError(f"{name}: {err}") from None


def settings_from(sampling: bool, temperature: float, top_p: float, repetition_penalty: float,
                  max_new_tokens: int) -> GenerationSettings:
    if sampling:
        return GenerationSettings(max_new_tokens=int(max_new_tokens), do_sample=True, temperature=float(temperature),
                                  top_p=float(top_p), repetition_penalty=float(repetition_penalty))
    return GenerationSettings(max_new_tokens=int(max_new_tokens), do_sample=False,
                              repetition_penalty=float(repetition_penalty))


# -- the model ----------------------------------------------------------------------------------


class FakeModel:
    """TEST HOOK (``MGV2_APP_FAKE_ANSWER``): answers every instruction with one fixed text.

    Used only by the browser test, so that it can check the drawn pixels; never a default.
    """

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def predict(self, images, instructions, settings=None, history=None) -> list[str]:
        return [self.answer for _ in instructions]


@dataclass
class LoadedModel:
    """A model, or the reason there is none (the app keeps working without one)."""

    model: object | None
    description: str
    error: str | None = None


def load_model(model: str, checkpoint: str | None, device: str, fake_answer: str | None = None) -> LoadedModel:
    """``Pipeline.from_config`` for the app; never raises (a failure is returned as ``error``)."""
    from app.config import resolve

    if fake_answer is not None:
        return LoadedModel(FakeModel(fake_answer), "test hook MGV2_APP_FAKE_ANSWER: fixed answers, no model")
    what = f"{model}" + (f" + {checkpoint}" if checkpoint else " (weights: config's, random where none)")
    try:
        from mgv2.config import ModelConfig, load_yaml
        from mgv2.pipeline import Pipeline

        cfg = load_yaml(ModelConfig, resolve(model))
        pipe = Pipeline.from_config(cfg, checkpoint=resolve(checkpoint) if checkpoint else None, device=device,
                                    verbose=False)
    except (MGV2Error, OSError, ValueError, RuntimeError, ImportError, KeyError) as err:
        return LoadedModel(None, what, f"{type(err).__name__}: {err}")
    return LoadedModel(pipe, f"{what} on {pipe.device}")


def generate(model, image: Image.Image, instruction: str, history: Sequence[Exchange],
             settings: GenerationSettings) -> str:
    """One answer to ``instruction`` about ``image`` after the earlier turns ``history``."""
    turns = [Turn(e.instruction, e.answer) for e in history]
    (text,) = model.predict([image], [instruction], settings, history=[turns])
    return text
