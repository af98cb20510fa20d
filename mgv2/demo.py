"""`make demo`: draw a small scene, ask the model "[refer] red balloon", write the picture.

Until the bundled demo model exists this runs the tiny preset with random weights, so the
boxes it draws are arbitrary: it shows the pipeline (image -> prompt -> generation -> parsed
boxes -> picture), not a trained model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mgv2.cli import DEFAULT_MODEL
from mgv2.cli import main as cli_main


def demo_scene(width: int = 320, height: int = 240) -> Image.Image:
    """A sky with a red balloon (ellipse + string) and a blue box on the ground."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    a[:] = (235, 225, 200)
    a[int(height * 0.75):] = (90, 160, 90)
    cv2.ellipse(a, (90, 80), (28, 36), 0, 0, 360, (200, 30, 40), -1)
    cv2.line(a, (90, 116), (96, 170), (60, 60, 60), 1)
    cv2.rectangle(a, (190, 130), (260, 195), (40, 60, 200), -1)
    return Image.fromarray(a)


def run(out: Path, model: str = DEFAULT_MODEL, prompt: str = "[refer] red balloon") -> int:
    out.mkdir(parents=True, exist_ok=True)
    scene = out / "scene.png"
    demo_scene().save(scene)
    print(f"scene written to {scene}")
    return cli_main(["predict", "--model", model, "--image", str(scene), "--out", str(out / "annotated.png"),
                     "--max-new-tokens", "24", prompt])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    return run(Path(args.out), args.model)


if __name__ == "__main__":
    raise SystemExit(main())
