"""Linear probes: do the image tokens a demo model feeds its LLM carry the colour and the kind of
the object under them?  (docs/demo_model.md, fourth session.)

    .venv/bin/python scripts/probe_image_tokens.py --data runs/demo_synth --images 2000 \\
        [--checkpoint runs/demo/stage1/final] [--json runs/diag/probe.json]

For each held-out picture of an ``mgv2 synth`` world, each of the 16 image tokens of the demo
preset (a 1x4 strip of 16 px patches of the 128 px input) is labelled with the object whose
visible box covers most of the strip (at least 15% of it; strips without one are left out).  A
linear classifier (softmax regression, Adam) is fitted on 80% of the tokens and scored on the
other 20%, for three views of the same strip: its raw pixels, the merged ViT output (after
``ln_vision``) and the projected tokens the LLM receives.  The majority-class rate is printed
beside each accuracy: a probe at or under it found nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mgv2.config import ModelConfig, load_yaml
from mgv2.image import load_image
from mgv2.io import atomic_write_text
from mgv2.model import merge_patches
from mgv2.pipeline import Pipeline

MIN_COVER = 0.15


def strip_labels(scene: dict, grid: int, cell: tuple[int, int], size: int) -> list[tuple[int, dict]]:
    """(token index, object) for every token cell (``cell`` = rows x columns of patches, see
    :attr:`mgv2.config.ModelConfig.token_cell`) that an object's visible box covers enough."""
    sx, sy = size / scene["width"], size / scene["height"]
    patch = size // grid
    w, h = patch * cell[1], patch * cell[0]
    out = []
    for t in range(grid * grid // (cell[0] * cell[1])):
        row, col = divmod(t, grid // cell[1])
        cx1, cy1 = col * w, row * h
        best, area = None, 0.0
        for o in scene["objects"]:
            x1, y1, x2, y2 = o["visible_box"]
            a = max(0.0, min(x2 * sx, cx1 + w) - max(x1 * sx, cx1)) * max(0.0, min(y2 * sy, cy1 + h) - max(y1 * sy, cy1))
            if a > area:
                best, area = o, a
        if best is not None and area >= MIN_COVER * w * h:
            out.append((t, best))
    return out


def linear_probe(x: np.ndarray, labels: list[str], steps: int = 300, seed: int = 0) -> tuple[float, float]:
    """(held-out accuracy, held-out majority rate) of softmax regression on standardised features."""
    X = torch.tensor(x, dtype=torch.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    classes = sorted(set(labels))
    Y = torch.tensor([classes.index(c) for c in labels])
    idx = torch.randperm(len(Y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(Y))
    tr, te = idx[:cut], idx[cut:]
    if len(te) == 0:
        raise SystemExit(f"only {len(Y)} labelled tokens: use more pictures (--images)")
    torch.manual_seed(seed)
    lin = torch.nn.Linear(X.shape[1], len(classes))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(X[tr]), Y[tr]).backward()
        opt.step()
    with torch.no_grad():
        acc = float((lin(X[te]).argmax(1) == Y[te]).float().mean())
    major = float(np.bincount(Y[te].numpy()).max() / len(te))
    return acc, major


def read_scenes(data: Path, split: str = "held_out", limit: int | None = None) -> list[dict]:
    """The first ``limit`` scenes of ``data/scenes.jsonl``: the training pictures (``"train"``) or
    the held-out ones (``"held_out"``: val, testA and testB pictures)."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', not {split!r}")
    rows = [json.loads(line) for line in (data / "scenes.jsonl").read_text().splitlines()]
    rows = [s for s in rows if (s["split"] == "train") == (split == "train")]
    return rows[:limit] if limit else rows


def token_views(pipe: Pipeline, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Three views [N, tokens, features] of the image tokens of ``pixels`` [N, 3, S, S], from one ViT
    pass: each token's strip of raw pixels, the merged ViT output after ``ln_vision`` (what the
    projector receives) and the projected tokens (what the LLM receives)."""
    model, cfg = pipe.model.eval(), pipe.cfg
    size, patch = cfg.vision.img_size, cfg.vision.patch_size
    grid = size // patch
    seen: list[torch.Tensor] = []
    hook = model.llama_proj.register_forward_pre_hook(lambda _mod, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            projected = model.embed_images(pixels)
    finally:
        hook.remove()
    n = len(pixels)
    patches = pixels.reshape(n, 3, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, -1)
    strips = merge_patches(patches, cfg.merge_tokens, cfg.merge_layout)
    return {"pixels": strips, "vit_merged": seen.pop(), "projected": projected}


def probe(pipe: Pipeline, data: Path, n_images: int, steps: int = 300) -> dict[str, dict[str, list[float]]]:
    """``{view: {"colour"|"kind": [accuracy, majority]}}`` over the first held-out pictures."""
    cfg = pipe.cfg
    size, grid = cfg.vision.img_size, cfg.vision.img_size // cfg.vision.patch_size
    scenes = read_scenes(data, "held_out", n_images)
    if not scenes:
        raise SystemExit(f"{data}/scenes.jsonl has no held-out pictures")
    views: dict[str, list[np.ndarray]] = {"pixels": [], "vit_merged": [], "projected": []}
    colour, kind = [], []
    for s in scenes:
        got = token_views(pipe, pipe.processor(load_image(data / "images" / s["file_name"]))[None])
        for t, obj in strip_labels(s, grid, cfg.token_cell, size):
            colour.append(obj["color"])
            kind.append(obj["kind"])
            for view, rows in views.items():
                rows.append(got[view][0, t].numpy())
    return {
        view: {name: list(linear_probe(np.array(x), lab, steps)) for name, lab in (("colour", colour), ("kind", kind))}
        for view, x in views.items()
    } | {"tokens": {"n": [float(len(colour))]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/demo_synth", help="an `mgv2 synth` folder")
    ap.add_argument("--model", default="configs/model/demo.yaml")
    ap.add_argument("--checkpoint", default=None, help="default: the model config's (the shipped demo model)")
    ap.add_argument("--images", type=int, default=2000, help="held-out pictures to read")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps of each probe")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # a frozen random ViT that a checkpoint lacks is rebuilt from seed 0
    cfg = load_yaml(ModelConfig, args.model)
    pipe = Pipeline.from_config(cfg, checkpoint=args.checkpoint, device="cpu", verbose=False)
    res = probe(pipe, Path(args.data), args.images, args.steps)
    print(f"{int(res['tokens']['n'][0])} labelled image tokens")
    for view in ("pixels", "vit_merged", "projected"):
        for name in ("colour", "kind"):
            acc, major = res[view][name]
            print(f"{view:11s} {name:6s} held-out accuracy {100 * acc:5.1f}  (majority class {100 * major:5.1f})")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
