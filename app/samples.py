"""Sample pictures to pick from, with their ground truth (phrase + pixel box per object).

Scenes of the synthetic world (``mgv2.synth``, seed 1: the bundled demo model was trained on seed
0, so every sample is new to it) come first, beginning with the one ``make demo`` uses (exactly
one red balloon); a hand-drawn scene (a red balloon and a blue box, outside the synthetic world's
style) is always last.  Its ground truth is measured from its own pixels, so it stays right if the
drawing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image


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


def drawn_scene(width: int = 320, height: int = 240) -> Image.Image:
    """A sky with a red balloon (ellipse + string) and a blue box on the ground."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    a[:] = (235, 225, 200)
    a[int(height * 0.75):] = (90, 160, 90)
    cv2.ellipse(a, (90, 80), (28, 36), 0, 0, 360, (200, 30, 40), -1)
    cv2.line(a, (90, 116), (96, 170), (60, 60, 60), 1)
    cv2.rectangle(a, (190, 130), (260, 195), (40, 60, 200), -1)
    return Image.fromarray(a)


def demo_sample() -> SampleImage:
    image = drawn_scene()
    a = np.asarray(image).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    red = (r > 150) & (g < 80) & (b < 80)
    blue = (b > 150) & (r < 80) & (g < 100)
    return SampleImage("hand-drawn scene: red balloon and blue box", image,
                       [("red balloon", _mask_box(red)), ("blue box", _mask_box(blue))])


SYNTH_SCENES = 6  # the first scenes of the world, after the one chosen for its red balloon


def _synth_sample(scene, title: str) -> SampleImage:
    from mgv2.synth.render import render

    objects = [(o.name(), tuple(float(v) for v in o.visible_box)) for o in scene.objects]
    names = ", ".join(dict.fromkeys(name for name, _ in objects))
    return SampleImage(f"{title}: {names}", Image.fromarray(render(scene)), objects)


def _synth_samples() -> list[SampleImage]:
    """Scenes of the synthetic world (seed :data:`mgv2.demo.DEMO_SEED`): first the demo scene
    (exactly one red balloon), then the first few scenes.  Ground truth: each object's colour +
    kind and its visible box (the annotation box of the world's datasets)."""
    from mgv2.demo import DEMO_SEED
    from mgv2.synth import find_scene, make_scene

    first, scene = find_scene(DEMO_SEED, "red balloon")
    out = [_synth_sample(scene, f"synthetic scene {first}")]
    out += [_synth_sample(make_scene(DEMO_SEED, i), f"synthetic scene {i}") for i in range(SYNTH_SCENES) if i != first]
    return out


def load_samples() -> list[SampleImage]:
    """Synthetic-world scenes first, then the hand-drawn scene."""
    return [*_synth_samples(), demo_sample()]


def red_balloon_sample(samples: list[SampleImage] | None = None) -> SampleImage:
    """The first sample with exactly one "red balloon" (the hand-drawn scene always has one)."""
    for sample in samples if samples is not None else load_samples():
        if [name for name, _ in sample.objects].count("red balloon") == 1:
            return sample
    return demo_sample()
