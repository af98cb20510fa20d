"""Sample pictures to pick from, with their ground truth (phrase + pixel box per object).

Scenes of the synthetic world (``mgv2.synth``) come first, beginning with one that holds exactly
one red balloon; the demo scene (:func:`mgv2.demo.demo_scene`, a red balloon and a blue box) is
always last, and the only sample when ``mgv2.synth`` is missing.  Its ground truth is measured
from its own pixels, so it stays right if the drawing changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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


SYNTH_SEED = 0
SYNTH_SCENES = 6  # the first scenes of the world, after the one chosen for its red balloon
RED_BALLOON_SEARCH = 60  # scenes searched for one with exactly one red balloon


def _synth_sample(scene, title: str) -> SampleImage:
    from mgv2.synth.render import render

    objects = [(o.name(), tuple(float(v) for v in o.visible_box)) for o in scene.objects]
    names = ", ".join(dict.fromkeys(name for name, _ in objects))
    return SampleImage(f"{title}: {names}", Image.fromarray(render(scene)), objects)


def _synth_samples() -> list[SampleImage]:
    """Scenes of the synthetic world (``mgv2.synth``, seed 0): first one with exactly one red
    balloon, then the first few scenes.  Ground truth: each object's colour + kind and its
    visible box (the annotation box of the world's datasets).  No synth package: no samples."""
    try:
        from mgv2.synth import make_scene
    except ImportError:
        return []
    out: list[SampleImage] = []
    try:
        for index in range(RED_BALLOON_SEARCH):
            scene = make_scene(SYNTH_SEED, index)
            if [o.name() for o in scene.objects].count("red balloon") == 1:
                out.append(_synth_sample(scene, f"synthetic scene {index}"))
                break
        for index in range(SYNTH_SCENES):
            out.append(_synth_sample(make_scene(SYNTH_SEED, index), f"synthetic scene {index}"))
    except Exception as err:  # noqa: BLE001 - a changing optional package must not break the app
        log.warning("synthetic-world samples unavailable: %s", err)
        return []
    return out


def load_samples() -> list[SampleImage]:
    """Synthetic-world scenes first (when ``mgv2.synth`` is there), then the demo scene."""
    return [*_synth_samples(), demo_sample()]


def red_balloon_sample(samples: list[SampleImage] | None = None) -> SampleImage:
    """The first sample with exactly one "red balloon" (the demo scene always has one)."""
    for sample in samples if samples is not None else load_samples():
        if [name for name, _ in sample.objects].count("red balloon") == 1:
            return sample
    return demo_sample()
