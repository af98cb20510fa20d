"""Browse an evaluation run (the folder ``mgv2 eval`` writes): metrics, IoU histogram, every item.

Open a run with ``streamlit run app/main.py -- --run RUN_FOLDER`` (or ``MGV2_EVAL_RUN``), by
picking one found under ``runs/``, or by typing its path.  Items are drawn with the ground truth in
green and the prediction in red, filterable by split and outcome.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st
from PIL import Image

from app.config import ROOT, load_config
from app.runs import EvalItem, Run, RunError, find_runs, metrics_rows, read_run, resolve_image
from mgv2.draw import GT_COLOR, PRED_COLOR, draw_boxes
from mgv2.errors import ImageError
from mgv2.image import load_image

PAGE_SIZES = (6, 12, 24, 48)


@st.cache_data(show_spinner=False, max_entries=8)
def _load_run(folder: str, stamp: float) -> Run:  # stamp: predictions.jsonl mtime, so a rewrite reloads
    return read_run(folder)


@st.cache_data(show_spinner=False, max_entries=256)
def _item_picture(path: str | None, size: tuple[int, int] | None, gt: list, pred: list, stamp: float) -> tuple:
    """(picture with GT green / prediction red, note or None)."""
    note = None
    image = None
    if path is not None:
        try:
            image = load_image(path)
        except ImageError as err:
            note = f"image unreadable: {err}"
    if image is None:
        note = note or "image not found; boxes drawn on a blank canvas"
        w, h = size or (
            int(max([b[2] for b in gt + pred] + [100]) + 10), int(max([b[3] for b in gt + pred] + [100]) + 10)
        )
        image = Image.new("RGB", (max(w, 1), max(h, 1)), (128, 128, 128))
    picture = draw_boxes(image, [("GT", gt), ("pred", pred)], colors=[GT_COLOR, PRED_COLOR])
    return picture, note


def _choose_folder() -> str | None:
    cfg = load_config()
    found = find_runs(Path.cwd() / "runs", ROOT / "runs")
    options = [str(p) for p in found]
    default = cfg.eval_run or (options[0] if options else "")
    if "run_folder" not in st.session_state:
        st.session_state.run_folder = default
    if options:
        picked = st.selectbox("Runs found under runs/", ["(type a path below)", *options], key="run_pick")
        if picked != "(type a path below)" and picked != st.session_state.get("_last_pick"):
            st.session_state._last_pick = picked
            st.session_state.run_folder = picked
    st.text_input("Run folder", key="run_folder", placeholder="runs/refcoco_val_...")
    folder = st.session_state.run_folder.strip()
    if not folder:
        st.info("No run folder yet: run `mgv2 eval ...`, then give its output folder here "
                "(or start the app with `-- --run FOLDER`).")
        return None
    return folder


def _show_metrics(run: Run) -> None:
    st.subheader("Metrics")
    rows = metrics_rows(run.metrics)
    if rows:
        st.dataframe(rows, hide_index=True)
    else:
        st.caption("metrics.json is missing or empty.")
    cols = st.columns(2)
    with cols[0]:
        if run.histogram is not None:
            st.image(str(run.histogram), caption=f"IoU histogram ({run.histogram.name})")
        else:
            st.caption("No IoU histogram picture in this run.")
    with cols[1]:
        if run.contact_sheet is not None:
            with st.expander(f"Contact sheet ({run.contact_sheet.name})"):
                st.image(str(run.contact_sheet))
        for png in run.other_pictures:
            with st.expander(png.name):
                st.image(str(png))
        if run.report:
            with st.expander("report.md"):
                st.markdown(run.report)
    if run.skipped:
        st.warning(f"{len(run.skipped)} line(s) could not be read: " + "; ".join(run.skipped[:5]))


def _caption(item: EvalItem) -> str:
    iou = f"IoU {item.iou:.2f}" if item.iou is not None else "no IoU"
    return f"{item.outcome} · {iou} · {item.split} · #{item.id}"


def _show_items(run: Run) -> None:
    st.subheader("Items")
    c1, c2, c3 = st.columns([2, 2, 1])
    splits = c1.multiselect("Split", run.splits, default=run.splits, key="f_split")
    outcomes = c2.multiselect("Outcome", run.outcomes, default=run.outcomes, key="f_outcome")
    per_page = c3.selectbox("Per page", PAGE_SIZES, index=1, key="per_page")
    items = run.filter(splits, outcomes)
    pages = max(1, -(-len(items) // per_page))
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="page") if pages > 1 else 1
    start = (int(page) - 1) * per_page
    shown = items[start:start + per_page]
    st.caption(f"{len(items)} of {len(run.items)} items match; showing {start + 1 if shown else 0}-"
               f"{start + len(shown)}.  Ground truth green, prediction red.")
    stamp = (run.folder / "predictions.jsonl").stat().st_mtime
    cols = st.columns(3)
    for n, item in enumerate(shown):
        with cols[n % 3], st.container(border=True, key=f"item_{item.index}"):
            path = resolve_image(item, run.folder)
            picture, note = _item_picture(str(path) if path else None, item.size, item.gt, item.pred, stamp)
            st.image(picture, caption=_caption(item))
            st.text(item.prompt)
            st.code(item.answer if item.answer is not None else "(no answer)", language=None)
            if note:
                st.caption(note)
            for issue in item.issues[:3]:
                st.caption(f"issue: {issue}")


def main() -> None:
    st.set_page_config(page_title="MiniGPT-v2 evaluation run", layout="wide")
    st.title("Evaluation run")
    folder = _choose_folder()
    if folder is None:
        return
    path = Path(folder).expanduser()
    try:
        stamp = (path / "predictions.jsonl").stat().st_mtime if (path / "predictions.jsonl").is_file() else 0.0
        run = _load_run(str(path), stamp)
    except (RunError, OSError) as err:
        st.error(str(err))
        return
    st.caption(f"{run.folder} · {len(run.items)} items")
    _show_metrics(run)
    _show_items(run)


main()
