"""MiniGPT-v2 demo: pick or upload an image, click a task identifier, type, see the boxes.

    streamlit run app/main.py                                       # bundled default model
    streamlit run app/main.py -- --model CONFIG --checkpoint PATH   # real weights (or MGV2_MODEL /
                                                                    # MGV2_CHECKPOINT, see app/config.py)

The second page (sidebar: "evaluation run") browses a run folder written by ``mgv2 eval``.

Test hook: ``MGV2_APP_FAKE_ANSWER`` replaces generation by a fixed answer (browser test only; the
page shows a warning while it is set).  See app/config.py.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run app/main.py` puts app/ on the path, not the repository
    sys.path.insert(0, _ROOT)

import streamlit as st
from PIL import Image

from app import core
from app.config import AppConfig, load_config
from app.samples import SampleImage, load_samples
from mgv2.errors import ImageError, TaskError
from mgv2.model import GenerationSettings

try:  # region marking on the picture (maintained component, frontend bundled in the wheel)
    from streamlit_image_coordinates import streamlit_image_coordinates
except ImportError:  # pragma: no cover - the corner number inputs still work without it
    streamlit_image_coordinates = None

REGION_COLOR = "#FFD400"
DEMO = GenerationSettings.demo()  # SPEC §8 sampling defaults


# -- cached resources -----------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model ...")
def cached_model(model: str, checkpoint: str | None, device: str, fake_answer: str | None) -> core.LoadedModel:
    """Loaded once per (model, checkpoint, device); a failure is cached too (see Retry)."""
    return core.load_model(model, checkpoint, device, fake_answer)


@st.cache_resource(show_spinner=False)
def cached_samples() -> list[SampleImage]:
    return load_samples()


# -- state ---------------------------------------------------------------------------------------


def _init_state() -> None:
    ss = st.session_state
    ss.setdefault("task", "chat")
    ss.setdefault("message", "")
    ss.setdefault("history", [])
    ss.setdefault("image_id", None)
    ss.setdefault("picker", core.RegionPicker())
    ss.setdefault("pending", None)  # instruction waiting for generation
    ss.setdefault("send_error", None)


def _pick_task(key: str) -> None:
    """Task button callback: set the identifier and fill the message box like the official shortcuts."""
    st.session_state.task = key
    st.session_state.message = core.SHORTCUTS[key].text


def _restart() -> None:
    st.session_state.history = []
    st.session_state.pending = None
    st.session_state.send_error = None


def _region_from_inputs() -> tuple[float, float, float, float] | None:
    ss = st.session_state
    keys = ("reg_x1", "reg_y1", "reg_x2", "reg_y2")
    if not all(k in ss for k in keys):
        return None
    return tuple(float(ss[k]) for k in keys)  # type: ignore[return-value]


def _on_send() -> None:
    """Send callback: compose the instruction now (the message box is then cleared)."""
    ss = st.session_state
    ss.send_error = None
    region = None
    size = ss.get("image_size")
    if core.SHORTCUTS[ss.task].needs_region or ss.message.strip().startswith("[identify]"):
        xyxy = _region_from_inputs()
        if xyxy is not None and size:
            region = core.grid_region(xyxy, *size)
    try:
        ss.pending = core.compose_instruction(ss.task, ss.message, region)
    except TaskError as err:
        ss.send_error = str(err)
        return
    ss.message = ""


# -- page parts ----------------------------------------------------------------------------------


def _sidebar(cfg: AppConfig, loaded: core.LoadedModel) -> GenerationSettings | None:
    sb = st.sidebar
    sb.header("Model")
    if cfg.fake_answer is not None:
        sb.warning("TEST HOOK MGV2_APP_FAKE_ANSWER is set: no model runs, every answer is that fixed text.")
    if loaded.error:
        sb.error(f"The model failed to load: {loaded.error}")
        if sb.button("Retry loading", key="retry_model"):
            cached_model.clear()
            st.rerun()
    else:
        sb.caption(loaded.description)
    sb.caption("Choose another model: `streamlit run app/main.py -- --model CONFIG --checkpoint PATH`")

    sb.header("Generation")
    mode = sb.radio("Decoding", ["sampling", "greedy"], key="decoding", horizontal=True,
                    help="sampling: the official demo's default (SPEC §8); greedy: the benchmark setting")
    sampling = mode == "sampling"
    temperature = sb.slider("Temperature", 0.05, 2.0, DEMO.temperature, 0.05, key="temperature", disabled=not sampling)
    top_p = sb.slider("Top-p", 0.05, 1.0, DEMO.top_p, 0.05, key="top_p", disabled=not sampling)
    rep = sb.slider("Repetition penalty", 1.0, 2.0, DEMO.repetition_penalty, 0.01, key="repetition_penalty")
    max_new = sb.number_input("Max new tokens", 1, 4096, DEMO.max_new_tokens, 1, key="max_new_tokens")
    try:
        return core.settings_from(sampling, temperature, top_p, rep, int(max_new))
    except ValueError as err:
        sb.error(f"Generation settings: {err}")
        return None


def _uploader_kwargs(cfg: AppConfig) -> dict:
    if "max_upload_size" in inspect.signature(st.file_uploader).parameters:
        return {"max_upload_size": cfg.max_upload_mb}
    return {}


def _choose_image(cfg: AppConfig) -> tuple[Image.Image, str, SampleImage | None] | None:
    """The picture to talk about: (image, identity, sample or None); None after an error message."""
    source = st.radio("Image", ["sample", "upload"], key="image_source", horizontal=True,
                      format_func=lambda s: {"sample": "Pick a sample", "upload": "Upload"}[s])
    if source == "upload":
        up = st.file_uploader(f"Upload an image (at most {cfg.max_upload_mb} MB)", key="upload",
                              type=["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"],
                              **_uploader_kwargs(cfg))
        if up is None:
            st.info("Choose a picture file, or switch to a sample.")
            return None
        data = up.getvalue()
        try:
            image = core.read_upload(up.name, data, cfg.max_upload_mb)
        except ImageError as err:
            st.error(f"This upload cannot be used: {err}")
            return None
        return image, "upload:" + hashlib.sha1(data).hexdigest(), None
    samples = cached_samples()
    names = [s.name for s in samples]
    name = st.selectbox("Sample", names, key="sample_name")
    sample = samples[names.index(name)] if name in names else samples[0]
    return sample.image, "sample:" + sample.name, sample


def _reset_for_image(image_id: str, size: tuple[int, int]) -> None:
    ss = st.session_state
    if ss.image_id == image_id:
        return
    if ss.history:
        st.toast("New image: the conversation was restarted.")
    ss.image_id = image_id
    ss.image_size = size
    ss.history = []
    ss.picker = core.RegionPicker()
    w, h = size
    ss.reg_x1, ss.reg_y1, ss.reg_x2, ss.reg_y2 = w // 4, h // 4, (3 * w) // 4, (3 * h) // 4


def _region_editor(image: Image.Image) -> None:
    """[identify]: mark a region by a drag or two clicks on the picture, or type its corners."""
    ss = st.session_state
    w, h = image.size
    if _region_from_inputs() is None:  # the corner inputs were not on the last page: start centred
        ss.reg_x1, ss.reg_y1, ss.reg_x2, ss.reg_y2 = w // 4, h // 4, (3 * w) // 4, (3 * h) // 4
    region = _region_from_inputs()
    preview = core.draw_region(image, region, ss.picker.pending, REGION_COLOR)
    if streamlit_image_coordinates is not None:
        st.caption("Drag a rectangle on the picture, or click two opposite corners.")
        event = streamlit_image_coordinates(preview, key="region_canvas", click_and_drag=True,
                                            width=min(w, 520), cursor="crosshair")
        new = ss.picker.feed(event, (w, h))
        if new is not None:
            ss.reg_x1, ss.reg_y1, ss.reg_x2, ss.reg_y2 = (round(v) for v in new)
            st.rerun()  # redraw the preview with the new region
        if ss.picker.pending is not None:
            x, y = ss.picker.pending
            st.caption(f"First corner at ({x:.0f}, {y:.0f}); click the opposite corner.")
    else:
        st.image(preview, caption="Region preview")
    cols = st.columns(4)
    for col, key, top in zip(cols, ("reg_x1", "reg_y1", "reg_x2", "reg_y2"), (w, h, w, h)):
        col.number_input(key[-2:], 0, top, step=1, key=key)
    region = _region_from_inputs()
    grid = core.grid_region(region, w, h) if region else None
    if grid is None:
        st.warning("The region has no area: x2 must be right of x1 and y2 below y1.")
    else:
        from mgv2.boxes import box_text

        st.caption(f"Region sent with [identify]: `{box_text(grid)}`")


def _task_buttons() -> None:
    st.write("**Task**")
    cols = st.columns(len(core.SHORTCUTS))
    for col, (key, sc) in zip(cols, core.SHORTCUTS.items()):
        col.button(sc.label, key=f"task_{key}", help=sc.help, on_click=_pick_task, args=(key,),
                   type="primary" if st.session_state.task == key else "secondary")


def _message_form(model_ready: bool) -> None:
    sc = core.SHORTCUTS[st.session_state.task]
    with st.form("ask", clear_on_submit=False, border=False):
        label = f"Message for {sc.label}" if sc.identifier else "Message (plain chat)"
        st.text_input(label, key="message", placeholder="e.g. red balloon")
        cols = st.columns([1, 1, 4])
        cols[0].form_submit_button("Send", type="primary", on_click=_on_send, key="send", disabled=not model_ready)
    st.button("Restart conversation", key="restart", on_click=_restart)
    if st.session_state.send_error:
        st.warning(st.session_state.send_error)


def _generate(loaded: core.LoadedModel, image: Image.Image, settings: GenerationSettings) -> None:
    ss = st.session_state
    instruction = ss.pending
    ss.pending = None
    if instruction is None:
        return
    if loaded.model is None:
        st.error(f"No model is loaded, so nothing can be answered: {loaded.error}")
        return
    with st.spinner("Generating ..."):
        try:
            text = core.generate(loaded.model, image, instruction, ss.history, settings)
        except Exception as err:  # noqa: BLE001 - the UI boundary: report and keep the app alive
            st.error(f"Generation failed: {type(err).__name__}: {err}")
            return
    ss.history = [*ss.history, core.Exchange(instruction, text, core.task_name(instruction))]


def _output(image: Image.Image) -> None:
    history: list[core.Exchange] = st.session_state.history
    if not history:
        st.image(image, caption="The answer's boxes will be drawn here.")
        return
    last = history[-1]
    annotated = core.annotate(image, last.parsed)
    if last.task == "identify":  # show the asked region, labelled with the answer
        annotated = core.draw_asked_region(annotated, last, REGION_COLOR)
    with st.container(key="answer_image"):
        st.image(annotated, caption=f"{last.instruction}", output_format="PNG")
    c1, c2 = st.columns(2)
    c1.download_button("Download parsed JSON", core.answer_json(last, image.size), file_name="answer.json",
                       mime="application/json", key="dl_json")
    c2.download_button("Download annotated image", core.png_bytes(annotated), file_name="answer.png",
                       mime="image/png", key="dl_png")


def _conversation() -> None:
    history: list[core.Exchange] = st.session_state.history
    for i, ex in enumerate(history):
        with st.chat_message("user"):
            st.text(ex.instruction)
        with st.chat_message("assistant"):
            st.markdown(f'<div class="mgv2-answer">{core.answer_html(ex.parsed)}</div>', unsafe_allow_html=True)
            for note in core.problems(ex):
                st.warning(note)
            with st.expander("Raw model text", expanded=False):
                st.code(ex.answer or "(empty)", language=None)


def main() -> None:
    st.set_page_config(page_title="MiniGPT-v2 demo", layout="wide")
    _init_state()
    cfg = load_config()
    loaded = cached_model(cfg.model, cfg.checkpoint, cfg.device, cfg.fake_answer)
    settings = _sidebar(cfg, loaded)

    st.title("MiniGPT-v2")
    if loaded.error:
        st.error(f"The model failed to load, so answers are off (pictures still work): {loaded.error}")

    chosen = _choose_image(cfg)
    if chosen is None:
        return
    image, image_id, _sample = chosen
    _reset_for_image(image_id, image.size)
    if settings is not None:
        _generate(loaded, image, settings)
    elif st.session_state.pending:
        st.session_state.pending = None
        st.error("Fix the generation settings in the sidebar first.")

    _task_buttons()
    left, right = st.columns(2)
    with left:
        if core.SHORTCUTS[st.session_state.task].needs_region:
            _region_editor(image)
        else:
            st.image(image, caption=f"Input {image.size[0]}x{image.size[1]}")
        _message_form(model_ready=loaded.model is not None)
    with right:
        _output(image)
        _conversation()


main()
