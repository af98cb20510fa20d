"""What ``mgv2 eval`` leaves behind: ``metrics.json``, ``report.md``, an IoU histogram and a
contact sheet of the worst cases (ground truth green, prediction red), all written atomically.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from mgv2.draw import GT_COLOR, PRED_COLOR, draw_boxes, save_image_atomic
from mgv2.errors import ImageError
from mgv2.image import load_image
from mgv2.io import atomic_path, atomic_write_text

METRICS = "metrics.json"
REPORT = "report.md"
HISTOGRAM = "iou_hist.png"
SHEET = "worst_cases.png"


@dataclass
class SplitResult:
    """One evaluated split: its records, per-item rows and corpus metrics."""

    split: str
    records: Sequence[Any]
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


# --------------------------------------------------------------------------- pictures


def iou_histogram(ious: dict[str, Sequence[float]], path: str | Path, title: str, threshold: float = 0.5) -> Path:
    """Histogram of IoU per split (unparseable answers are IoU 0 and land in the first bin)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    bins = [k / 20 for k in range(21)]
    for split, values in ious.items():
        ax.hist(list(values), bins=bins, histtype="step", linewidth=1.6, label=f"{split} (n={len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"IoU {threshold}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU with the ground-truth box")
    ax.set_ylabel("expressions")
    ax.set_title(title)
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


@dataclass
class Tile:
    image: Any  # path / PIL image, or None
    size: tuple[float, float] | None  # recorded (width, height), used when the image is unavailable
    caption: list[str]
    groups: list[tuple[str | None, list[Sequence[float]]]] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)


def _picture(tile: Tile) -> Image.Image:
    try:
        return load_image(tile.image)
    except ImageError:
        w, h = tile.size or (448, 448)
        canvas = Image.new("RGB", (max(1, int(w)), max(1, int(h))), (90, 90, 90))
        ImageDraw.Draw(canvas).text((8, 8), "image not available", fill=(230, 230, 230))
        return canvas


def contact_sheet(tiles: Sequence[Tile], path: str | Path, columns: int = 4, tile_px: int = 256) -> Path | None:
    """A grid of pictures with boxes drawn and a caption under each; ``None`` when empty."""
    if not tiles:
        return None
    font = ImageFont.load_default()
    line_h, chars = 12, max(20, tile_px // 6)
    captions = [[part for line in t.caption for part in (textwrap.wrap(line, chars) or [""])][:6] for t in tiles]
    cap_h = line_h * max(len(c) for c in captions) + 8
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile_px, rows * (tile_px + cap_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        pic = _picture(tile)
        if tile.groups:
            pic = draw_boxes(pic, tile.groups, colors=tile.colors or None)
        pic.thumbnail((tile_px - 4, tile_px - 4))
        x0, y0 = (k % columns) * tile_px, (k // columns) * (tile_px + cap_h)
        sheet.paste(pic, (x0 + (tile_px - pic.width) // 2, y0 + (tile_px - pic.height) // 2))
        for j, line in enumerate(caption):
            draw.text((x0 + 4, y0 + tile_px + 2 + j * line_h), line, fill="black", font=font)
    return save_image_atomic(sheet, path)


def refer_tiles(results: Sequence[SplitResult], k: int, plus_one: bool = False) -> list[Tile]:
    """The ``k`` worst expressions over all splits: missing/unparseable first, then lowest IoU."""
    key = "iou_official" if plus_one else "iou"
    ranked = sorted(
        ((r, j) for r in results for j in range(len(r.rows))),
        key=lambda rj: (rj[0].rows[rj[1]]["status"] == "ok", rj[0].rows[rj[1]][key]),
    )
    tiles = []
    for res, j in ranked[:k]:
        row, rec = res.rows[j], res.records[j]
        groups: list[tuple[str | None, list[Sequence[float]]]] = [("GT", [row["gt"]])]
        colors = [GT_COLOR]
        if row["pred"] is not None:
            groups.append(("pred", [row["pred"]]))
            colors.append(PRED_COLOR)
        verdict = f"IoU {row[key]:.2f}" if row["status"] == "ok" else f"{row['status']}: {str(row['answer'])[:60]!r}"
        tiles.append(Tile(rec.image, (rec.width, rec.height), [f"{res.split} #{j}: {rec.expression}", verdict],
                          groups, colors))
    return tiles


def vqa_tiles(results: Sequence[SplitResult], k: int) -> list[Tile]:
    """Up to ``k`` questions scored 0 (missing and empty answers first)."""
    ranked = sorted(
        ((r, j) for r in results for j in range(len(r.rows)) if r.rows[j]["score"] == 0.0),
        key=lambda rj: rj[0].rows[rj[1]]["status"] == "ok",
    )
    tiles = []
    for res, j in ranked[:k]:
        row, rec = res.rows[j], res.records[j]
        gt = ", ".join(dict.fromkeys(rec.answers))
        tiles.append(Tile(rec.image, None, [f"{res.split} #{j}: {rec.question}", f"pred: {row['answer']!r}",
                                             f"gt: {gt}"]))
    return tiles


def identify_tiles(results: Sequence[SplitResult], k: int) -> list[Tile]:
    """Up to ``k`` objects answered wrongly (missing and empty answers first), GT box drawn."""
    ranked = sorted(
        ((r, j) for r in results for j in range(len(r.rows)) if not r.rows[j]["correct"]),
        key=lambda rj: rj[0].rows[rj[1]]["status"] == "ok",
    )
    tiles = []
    for res, j in ranked[:k]:
        row, rec = res.rows[j], res.records[j]
        tiles.append(Tile(rec.image, (rec.width, rec.height),
                          [f"{res.split} #{j}: pred {str(row['answer'])[:60]!r}", "refs: " + " | ".join(row["references"])],
                          [("GT", [row["gt"]])], [GT_COLOR]))
    return tiles


# --------------------------------------------------------------------------- markdown


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def refer_markdown(results: Sequence[SplitResult], plus_one: bool) -> str:
    rule = "official +1-pixel IoU > 0.5" if plus_one else "continuous IoU >= 0.5"
    main = _table(
        ["split", "expressions", f"Acc@0.5 ({rule})", "Acc@0.5 continuous", "Acc@0.5 official +1",
         "Acc@0.75", "mean IoU", "centre acc", "parse failures"],
        [[r.split, r.metrics["n"], _pct(r.metrics["acc50"]), _pct(r.metrics["acc50_continuous"]),
          _pct(r.metrics["acc50_official"]), _pct(r.metrics["acc75"]), _pct(r.metrics["miou"]),
          _pct(r.metrics["centre_acc"]), _pct(r.metrics["parse_failure_rate"])] for r in results],
    )
    fails = _table(
        ["split", "wrong answers", "unparseable", "wrong object (IoU < 0.1)", "loose box (0.1 <= IoU, miss)",
         "missing prediction"],
        [[r.split, r.metrics["n"] - r.metrics["n_correct"], r.metrics["n_unparseable"], r.metrics["n_wrong_object"],
          r.metrics["n_loose_box"], r.metrics["n_missing"]] for r in results],
    )
    return (
        f"Accuracy in %, one box per expression, denominator = all expressions; "
        f"headline convention: **{rule}**. Unparseable answers count as wrong and are never re-sampled.\n\n"
        f"{main}\n\n## Failure breakdown\n\n{fails}\n\n"
        f"## IoU histogram\n\n![IoU histogram]({HISTOGRAM})\n\n"
        f"## Worst cases (green: ground truth, red: prediction)\n\n![worst cases]({SHEET})\n"
    )


def vqa_markdown(results: Sequence[SplitResult]) -> str:
    m0 = results[0].metrics
    what = (f"VQA accuracy ({m0.get('vqa_variant')} variant of the GT-Vision-Lab evaluator)"
            if m0["metric"] == "vqa_acc" else "exact match after VQA answer normalisation")
    main = _table(
        ["split", "questions", "accuracy", "wrong", "of the wrong kind", "empty answers", "missing"],
        [[r.split, r.metrics["n"], _pct(r.metrics["accuracy"]), r.metrics["n_wrong"], r.metrics["n_off_type"],
          r.metrics["n_empty"], r.metrics["n_missing"]] for r in results],
    )
    out = (f"Metric: **{what}**, in %, over every question; the prediction is the model's answer lower-cased "
           f"and stripped. *Of the wrong kind*: yes/no, true/false or an open answer where the references "
           f"are of another kind (\"yes\" to a what-question).\n\n{main}\n")
    for r in results:
        if "by_answer_type" in r.metrics:
            out += f"\n### {r.split} by answer type\n\n" + _table(
                ["answer type", "questions", "accuracy", "of the wrong kind"],
                [[k, v["n"], _pct(v["accuracy"]), v["n_off_type"]] for k, v in r.metrics["by_answer_type"].items()],
            ) + "\n"
    return out + f"\n## Wrong answers\n\n![wrong answers]({SHEET})\n"


def detection_markdown(results: Sequence[SplitResult]) -> str:
    main = _table(
        ["split", "images", "mAP@[.5:.95]", "AP50", "AP75", "AR@100", "supervision mAP", "max |diff|",
         "detections", "unparseable", "unknown phrases"],
        [[r.split, r.metrics["n"], _pct(r.metrics["map50_95"]), _pct(r.metrics["map50"]), _pct(r.metrics["map75"]),
          _pct(r.metrics["ar100"]), _pct(r.metrics["supervision"]["map50_95"]),
          f"{r.metrics['cross_check_max_abs_diff']:.4f}", r.metrics["n_detections"], r.metrics["n_unparseable"],
          r.metrics["n_unknown_phrase"]] for r in results],
    )
    return ("pycocotools COCOeval (bbox), cross-checked with supervision MeanAveragePrecision; the query names the "
            f"categories present in each image; detection scores follow answer order.\n\n{main}\n")


def identify_markdown(results: Sequence[SplitResult]) -> str:
    main = _table(
        ["split", "objects", "expressions", "exact (any reference)", "exact, light normalisation", "token F1",
         "wrong", "empty answers", "missing"],
        [[r.split, r.metrics["n"], r.metrics["n_references"], _pct(r.metrics["accuracy"]),
          _pct(r.metrics["exact_light"]), _pct(r.metrics["token_f1"]), r.metrics["n_wrong"], r.metrics["n_empty"],
          r.metrics["n_missing"]] for r in results],
    )
    return ("In %, one item per object (image + box), denominator = every object: the answer is correct when its "
            "VQA-normalised text equals that of ANY expression of the object; token F1 (bag of words, not CIDEr) "
            f"against the best expression.\n\n{main}\n\n## Wrong answers (green: the object)\n\n"
            f"![wrong answers]({SHEET})\n")


def grounding_markdown(results: Sequence[SplitResult]) -> str:
    rule = "official +1-pixel IoU > 0.5" if results and results[0].metrics["iou_convention"] == "official" \
        else "continuous IoU >= 0.5"
    main = _table(
        ["split", "captions", "GT phrases", "phrase recall", "text-only recall", "predicted phrases",
         "phrase precision", "caption F1", "parse failures", "no phrase", "missing"],
        [[r.split, r.metrics["n"], r.metrics["n_phrases"], _pct(r.metrics["phrase_recall"]),
          _pct(r.metrics["text_recall"]), r.metrics["n_pred_phrases"], _pct(r.metrics["phrase_precision"]),
          _pct(r.metrics["caption_f1"]), _pct(r.metrics["parse_failure_rate"]), r.metrics["n_ungrounded"],
          r.metrics["n_missing"]] for r in results],
    )
    return ("In %. Phrase recall: share of ALL ground-truth phrases for which the answer writes the same phrase "
            f"(light normalisation) with a box at **{rule}** to one of its boxes; text-only recall ignores the "
            "boxes; precision: share of the predicted phrases that are matched so; parse failures: share of "
            "captions whose box markup could not all be read (what was read is still scored); caption F1 is "
            f"bag-of-words overlap of the plain text, not CIDEr.\n\n{main}\n")


def world_markdown(results: Sequence[SplitResult]) -> str:
    """The ``--world`` judgements (:mod:`eval.world`), one table per split and grouping."""
    out = "\n## Judged by the world's scenes (`--world`)\n"
    for r in results:
        w = r.metrics.get("world")
        if not w:
            continue
        if "names_object" in w:
            out += (f"\n### {r.split}: does the answer name the object?\n\nIn %, of every object: an answer names "
                    "it when the world's grammar reads it as true of that object alone (any such description, "
                    "not only the exported ones).  The export writes 1-3 of an object's true descriptions at random, "
                    f"so exact match has a ceiling: an answerer that always names the object with its likeliest "
                    f"exported expression can expect {_pct(w['exact_ceiling'])}% (the exact-match ceiling).\n\n")
            n = max(1, r.metrics["n"])
            out += _table(list(w["verdicts"]), [[_pct(v / n) for v in w["verdicts"].values()]])
            out += "\n\n" + _table(["picture", "objects", "names it"],
                                   [[k, v["n"], _pct(v["names_object"])] for k, v in w["by_objects"].items()]) + "\n"
            continue
        for title, key in (("expression family", "by_family"), ("objects in the picture", "by_objects"),
                           ("object size (square root of the box's share of the picture)", "by_size")):
            if key not in w:  # metrics written before the size groups existed
                continue
            out += f"\n### {r.split} by {title}\n\n" + _table(
                [title, "expressions", "Acc@0.5", "wrong object", "loose box"],
                [[k, v["n"], _pct(v["acc50"]), _pct(v["wrong_object"]), _pct(v["loose_box"])] for k, v in w[key].items()],
            ) + "\n"
    return out


def write_outputs(out: str | Path, bench, results: Sequence[SplitResult], settings: dict[str, Any],
                  plus_one: bool = False, worst: int = 16) -> dict[str, Any]:
    """Write metrics.json (+ one per split), report.md and the pictures; return the metrics payload."""
    out = Path(out)
    payload = {
        "benchmark": bench.name,
        "metric": bench.metric,
        "settings": settings,
        "splits": {r.split: r.metrics for r in results},
    }
    write_json(out / METRICS, payload)
    for r in results:
        write_json(out / r.split / METRICS, {"benchmark": bench.name, "split": r.split, "settings": settings,
                                             **r.metrics})
    head = [f"# mgv2 eval {bench.name}", "", bench.description, ""]
    head += [f"- {k}: `{v}`" for k, v in settings.items()]
    pictures = []
    if bench.metric == "refer":
        key = "iou_official" if plus_one else "iou"
        iou_histogram({r.split: [row[key] for row in r.rows] for r in results}, out / HISTOGRAM,
                      f"{bench.name}: IoU ({'official +1' if plus_one else 'continuous'})")
        pictures.append(HISTOGRAM)
        body = refer_markdown(results, plus_one)
        sheet = contact_sheet(refer_tiles(results, worst, plus_one), out / SHEET)
    elif bench.metric == "coco_map":
        body, sheet = detection_markdown(results), None
    elif bench.metric == "identify_exact":
        body = identify_markdown(results)
        sheet = contact_sheet(identify_tiles(results, worst), out / SHEET)
    elif bench.metric == "phrase_recall":
        body, sheet = grounding_markdown(results), None
    else:
        body = vqa_markdown(results)
        sheet = contact_sheet(vqa_tiles(results, worst), out / SHEET)
    if any("world" in r.metrics for r in results):
        body += world_markdown(results)
    if sheet is None:
        (out / SHEET).unlink(missing_ok=True)  # no stale picture from an earlier run
        body = body.replace(f"![worst cases]({SHEET})", "(none)").replace(f"![wrong answers]({SHEET})", "(none)")
    atomic_write_text(out / REPORT, "\n".join(head) + "\n\n" + body)
    return payload
