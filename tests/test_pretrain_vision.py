"""scripts/pretrain_vision.py: per-patch labels from the scenes' outlines, and a saved encoder that
loads strictly as ``vision.checkpoint`` (the eva_vit_g.pth path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgv2.config import ModelConfig, load_yaml
from mgv2.synth.world import COLOR_NAMES, KINDS
from mgv2.vision import EVAViT, load_eva_checkpoint
from tests.conftest import ROOT, load_script

pv = load_script("pretrain_vision")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from mgv2.synth import export

    out = tmp_path_factory.mktemp("synth")
    export(out, seed=0, images=24, progress=False, overwrite=True)
    return out


def test_patch_labels_follow_the_visible_objects(world):
    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()]
    size, patch = 128, 16
    checked = 0
    for e in entries:
        kind, colour, occ = pv.patch_labels(e, size, patch)
        g = size // patch
        assert kind.shape == colour.shape == (g * g,) and occ.shape == (g * g, pv.SUBCELLS ** 2)
        assert ((kind == 0) == (colour == 0)).all()  # background in both or in neither
        # the patch under the centre of the front-most object is labelled with that object
        front = max(e["objects"], key=lambda o: o["index"])
        cx, cy = front["cx"] * size / e["width"], front["cy"] * size / e["height"]
        p = int(cy // patch) * g + int(cx // patch)
        if occ[p].mean() == 1.0:  # fully covered by something: the front object owns it
            assert KINDS[kind[p] - 1] == front["kind"] and COLOR_NAMES[colour[p] - 1] == front["color"]
            checked += 1
        # a patch with no object at all is background; objects cover some patches
        assert (kind[occ.sum(1) == 0] == 0).all() and (kind > 0).any()
    assert checked >= 3


def test_pretrained_encoder_loads_as_vision_checkpoint(world, tmp_path):
    out = tmp_path / "vision0.pth"
    model = str(ROOT / "configs" / "model" / "demo.yaml")
    assert pv.main(["--data", str(world), "--out", str(out), "--model", model, "--steps", "3",
                    "--batch", "4", "--limit", "12"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == 3 and 0.0 <= report["object_patch_colour_acc"] <= 1.0
    cfg = load_yaml(ModelConfig, model).vision
    vit = EVAViT(cfg)
    before = vit.blocks[0].attn.qkv.weight.clone()
    rep = load_eva_checkpoint(vit, out)  # strict: every key, every shape
    assert not rep.ignored
    assert not torch.equal(before, vit.blocks[0].attn.qkv.weight)  # trained weights, not the init
    saved = torch.load(out, weights_only=True)
    assert set(saved) == set(vit.state_dict())
    assert np.isfinite(saved["pos_embed"].numpy()).all()
