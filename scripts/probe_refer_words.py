"""Does a model choose the object by its words?  Controlled refer prompts on held-out pictures of
an ``mgv2 synth`` world (docs/demo_model.md, fifth session).

    .venv/bin/python scripts/probe_refer_words.py --data runs/demo_synth --images 300 \\
        [--checkpoint runs/demo/stage1/final] [--json runs/diag/words.json]

Three kinds of prompt, each in the benchmark's refer layout (``[refer] give me the location of ..``):

* ``colour kind``: "green balloon" for every object whose colour and kind no other object of the
  picture shares, so the two words name exactly one object;
* ``kind``: "balloon" where the kind alone names one object;
* ``swap``: two objects of one kind and different colours ("green balloon" / "red balloon"): how
  often the two answers land on the same place (box IoU >= 0.5 with each other).  A model that
  reads the colour word never does; one that ignores it always does.

Each accuracy (Acc@0.5 against the object's visible box) is printed beside its chance rate: the
mean of 1 / (objects in the picture), what choosing an object of the picture at random would get.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Protocol

import torch

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from probe_image_tokens import read_scenes

from eval.metrics import box_iou
from mgv2 import boxes
from mgv2.io import atomic_write_text
from tasks.refer import BENCHMARK_PROMPT


class Predictor(Protocol):
    def predict(self, images: list, instructions: list[str]) -> list[str]: ...


def queries(scene: dict) -> list[tuple[str, str, int]]:
    """(prompt kind, expression, object index) of one picture."""
    objs = scene["objects"]
    pairs = Counter((o["color"], o["kind"]) for o in objs)
    kinds = Counter(o["kind"] for o in objs)
    out = []
    for i, o in enumerate(objs):
        if pairs[(o["color"], o["kind"])] == 1:
            out.append(("colour kind", f"{o['color']} {o['kind']}", i))
        if kinds[o["kind"]] == 1:
            out.append(("kind", o["kind"], i))
    return out


def swap_pairs(scene: dict) -> list[tuple[int, int]]:
    """Object pairs of one kind, different colours, each named uniquely by colour and kind."""
    objs = scene["objects"]
    pairs = Counter((o["color"], o["kind"]) for o in objs)
    unique = [i for i, o in enumerate(objs) if pairs[(o["color"], o["kind"])] == 1]
    return [(a, b) for n, a in enumerate(unique) for b in unique[n + 1:]
            if objs[a]["kind"] == objs[b]["kind"] and objs[a]["color"] != objs[b]["color"]]


def _first_box(answer: str, scene: dict) -> tuple[float, float, float, float] | None:
    parsed = boxes.parse(answer).boxes
    return boxes.to_pixels(parsed[0], scene["width"], scene["height"]) if parsed else None


def probe(model: Predictor, data: Path, n_images: int) -> dict:
    """Accuracy and chance per prompt kind, accuracy by object count, and the swap rate."""
    scenes = read_scenes(data, "held_out", n_images)
    if not scenes:
        raise SystemExit(f"{data}/scenes.jsonl has no held-out pictures")
    tally: dict[str, list[float]] = {}  # kind -> [n, hits, chance sum]
    by_count: dict[int, list[int]] = {}
    same = n_swaps = 0
    for s in scenes:
        qs = queries(s)
        if not qs:
            continue
        answers = model.predict([data / "images" / s["file_name"]] * len(qs),
                                [BENCHMARK_PROMPT.format(expr) for _, expr, _ in qs])
        got: dict[tuple[str, int], tuple | None] = {}
        for (kind, _, i), ans in zip(qs, answers):
            box = _first_box(ans, s)
            got[(kind, i)] = box
            hit = box is not None and box_iou(box, s["objects"][i]["visible_box"]) >= 0.5
            t = tally.setdefault(kind, [0, 0, 0.0])
            t[0] += 1
            t[1] += hit
            t[2] += 1 / len(s["objects"])
            if kind == "colour kind":
                c = by_count.setdefault(len(s["objects"]), [0, 0])
                c[0] += 1
                c[1] += hit
        for a, b in swap_pairs(s):
            ba, bb = got[("colour kind", a)], got[("colour kind", b)]
            n_swaps += 1
            same += ba is not None and bb is not None and box_iou(ba, bb) >= 0.5
    return {
        "prompts": {k: {"n": n, "accuracy": hits / n, "chance": ch / n} for k, (n, hits, ch) in sorted(tally.items())},
        "colour_kind_by_objects": {str(k): {"n": n, "accuracy": h / n} for k, (n, h) in sorted(by_count.items())},
        "swap": {"pairs": n_swaps, "same_place": same / n_swaps if n_swaps else None},
        "images": len(scenes),
    }


def main() -> int:
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.pipeline import Pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/demo_synth", help="an `mgv2 synth` folder")
    ap.add_argument("--model", default="configs/model/demo.yaml")
    ap.add_argument("--checkpoint", default=None, help="default: the model config's (the shipped demo model)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="model config override (e.g. llm.hidden_size=384 for a probe run's checkpoint)")
    ap.add_argument("--images", type=int, default=300, help="held-out pictures to read")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.manual_seed(0)  # a frozen random ViT that a checkpoint lacks is rebuilt from seed 0
    cfg = load_yaml(ModelConfig, args.model, args.overrides)
    pipe = Pipeline.from_config(cfg, checkpoint=args.checkpoint, device="cpu", verbose=False)
    res = probe(pipe, Path(args.data), args.images)
    for kind, r in res["prompts"].items():
        print(f"{kind:12s} n {r['n']:5d}  Acc@0.5 {100 * r['accuracy']:5.1f}  (a random object of the picture {100 * r['chance']:5.1f})")
    print("colour kind by objects in the picture: "
          + ", ".join(f"{k}: {100 * r['accuracy']:.1f} (n {r['n']})" for k, r in res["colour_kind_by_objects"].items()))
    sw = res["swap"]
    if sw["pairs"]:
        print(f"swap: {sw['pairs']} pairs of one kind in two colours; both answers on the same place {100 * sw['same_place']:.1f}%")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
