"""Sample pictures to pick from, with their ground truth (phrase + pixel box per object).

The first sample is always the demo scene (:func:`mgv2.demo.demo_scene`, a red balloon and a blue
box); its ground truth is measured from its own pixels, so it stays right if the drawing changes.
Scenes from the synthetic world (``mgv2.synth``) are added after it when that package is there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class SampleImage:
    name: str
    image: Image.Image
    objects: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)  # phrase, xyxy

    def box_of(self, phrase: str) -> tuple[float, float, float, float] | None:
        for name, box in self.objects:
            if name == phrase:
                return box
        return None


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel box (x1, y1, x2, y2) around a mask, edges exclusive (x2 = last column + 1)."""
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def demo_sample() -> SampleImage:
    from mgv2.demo import demo_scene

    image = demo_scene()
    a = np.asarray(image).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    red = (r > 150) & (g < 80) & (b < 80)
    blue = (b > 150) & (r < 80) & (g < 100)
    return SampleImage("demo scene: red balloon and blue box", image,
                       [("red balloon", _mask_box(red)), ("blue box", _mask_box(blue))])


def _synth_samples(limit: int) -> list[SampleImage]:
    """Scenes of the synthetic world, when ``mgv2.synth`` exists and offers a sample set.

    Reads a folder with ``scenes.jsonl`` (one scene per line: ``image`` path and ``objects`` with
    ``phrase``/``name`` and a pixel ``box``/``bbox``); the folder comes from
    ``mgv2.synth.sample_dir()`` when that function exists.  Anything missing: no synth samples.
    """
    try:
        import mgv2.synth as synth  # noqa: F401 - optional, built in parallel
    except ImportError:
        return []
    folder = None
    for attr in ("sample_dir", "samples_dir", "bundled_samples"):
        fn = getattr(synth, attr, None)
        if callable(fn):
            try:
                folder = Path(fn())
            except Exception as err:  # noqa: BLE001 - optional samples must never break the app
                log.warning("mgv2.synth.%s() failed: %s", attr, err)
            break
    if folder is None:
        return []
    return read_scenes(folder, limit)


def read_scenes(folder: Path, limit: int = 12) -> list[SampleImage]:
    """Samples from ``folder/scenes.jsonl`` (see :func:`_synth_samples`); bad lines are skipped."""
    from mgv2.errors import ImageError
    from mgv2.image import load_image

    index = folder / "scenes.jsonl"
    if not index.is_file():
        return []
    out: list[SampleImage] = []
    for line in index.read_text().splitlines():
        if len(out) >= limit:
            break
        try:
            scene = json.loads(line)
            image = load_image(folder / scene["image"])
        except (ValueError, KeyError, TypeError, ImageError) as err:
            log.warning("skipping a scene of %s: %s", index, err)
            continue
        objects = []
        for obj in scene.get("objects", []):
            phrase = obj.get("phrase") or obj.get("name")
            box = obj.get("box") or obj.get("bbox") or obj.get("xyxy")
            if phrase and box and len(box) == 4:
                objects.append((str(phrase), tuple(float(v) for v in box)))
        out.append(SampleImage(str(scene.get("id") or scene.get("name") or Path(scene["image"]).stem), image, objects))
    return out


def load_samples(limit: int = 12) -> list[SampleImage]:
    return [demo_sample(), *_synth_samples(limit)]
