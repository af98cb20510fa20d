"""scripts/probe_image_tokens.py: strip labels follow the visible boxes; the probe finds what is
linearly there (colour from raw pixels) and nothing where nothing is (shuffled labels)."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests.conftest import ROOT, load_script

pit = load_script("probe_image_tokens")


def test_strip_labels_follow_the_visible_boxes():
    scene = {"width": 256, "height": 128, "objects": [
        {"visible_box": [0, 0, 64, 16], "color": "red", "kind": "ball"},      # 32x16 px at 128: half of strip 0
        {"visible_box": [130, 112, 256, 128], "color": "blue", "kind": "cup"},  # bottom-right strip
    ]}
    got = {t: o["color"] for t, o in pit.strip_labels(scene, grid=8, cell=(1, 4), size=128)}
    assert got == {0: "red", 15: "blue"}
    # 2x2 cells (merge_layout: square): 4 x 4 tokens of 32 x 32 px; red (32 x 16 px) covers half
    # of token 0, blue (x 65-128, y 112-128) the bottom halves of tokens 14 and 15
    got = {t: o["color"] for t, o in pit.strip_labels(scene, grid=8, cell=(2, 2), size=128)}
    assert got == {0: "red", 14: "blue", 15: "blue"}


def test_linear_probe_finds_a_linear_label_and_not_a_shuffled_one():
    rng = np.random.default_rng(0)
    labels = [["a", "b", "c"][i % 3] for i in range(600)]
    x = rng.normal(size=(600, 20))
    x[:, 0] += 4 * np.array([{"a": 0, "b": 1, "c": 2}[lab] for lab in labels])
    acc, major = pit.linear_probe(x, labels)
    assert acc > 0.9 and abs(major - 1 / 3) < 0.1
    shuffled = list(rng.permutation(labels))
    acc_s, _ = pit.linear_probe(x, shuffled)
    assert acc_s < 0.5


def test_probe_on_the_shipped_demo_model(small_world):
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.pipeline import Pipeline

    torch.manual_seed(0)
    cfg = load_yaml(ModelConfig, ROOT / "configs" / "model" / "demo.yaml")
    pipe = Pipeline.from_config(cfg, device="cpu", verbose=False)
    res = pit.probe(pipe, small_world, n_images=40, steps=100)
    assert set(res) == {"pixels", "vit_merged", "projected", "tokens"} and res["tokens"]["n"][0] > 50
    for view in ("pixels", "vit_merged", "projected"):
        for name in ("colour", "kind"):
            acc, major = res[view][name]
            assert 0.0 <= acc <= 1.0 and 0.0 < major <= 1.0
    json.dumps(res)  # what --json writes
