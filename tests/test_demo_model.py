"""The bundled demo model (``mgv2/assets/demo_model``, issue #6): what ships, and that it reproduces
its published refer accuracy on the held-out sample that ships beside the tests.

``scripts/publish_demo.py`` wrote ``scores.json`` (every published number and the command behind
it) and cut ``tests/data/demo_heldout`` (the first 200 val expressions of the synthetic world the
model was scored on, with their pictures).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml
from safetensors import safe_open

from mgv2 import boxes
from mgv2.cli import main as cli_main
from mgv2.config import DEFAULT_MODEL, ModelConfig, config_file, load_yaml

ROOT = Path(__file__).resolve().parents[1]
SHIP = ROOT / "mgv2" / "assets" / "demo_model"
HELDOUT = ROOT / "tests" / "data" / "demo_heldout"
SCORES = json.loads((SHIP / "scores.json").read_text())


def test_the_default_model_is_the_shipped_demo_model():
    cfg = load_yaml(ModelConfig, DEFAULT_MODEL)
    assert cfg.path(cfg.checkpoint) == SHIP
    files = sorted(p.name for p in SHIP.iterdir())
    assert files == ["config.yaml", "model.safetensors", "scores.json"]  # no optimizer state
    assert sum(p.stat().st_size for p in SHIP.iterdir()) <= 30 * 2**20
    # the config beside the weights is the preset's, apart from where the weights are
    shipped = yaml.safe_load((SHIP / "config.yaml").read_text())
    preset = yaml.safe_load(config_file(DEFAULT_MODEL).read_text())
    for key in ("vision", "llm", "merge_tokens", "image_embed_norm", "image_embed_scale", "prompt_layout"):
        assert shipped[key] == preset[key], key
    with safe_open(str(SHIP / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("visual_encoder.") for k in keys) and any(k.startswith("llama_proj.") for k in keys)


def test_shipped_model_reaches_its_published_refer_accuracy(tmp_path):
    """200 held-out expressions, default model (= the shipped one): within 3 points of scores.json."""
    published = SCORES["heldout_sample"]
    assert published["n"] == 200
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["eval", "refcoco", "--split", "val", "--data", str(HELDOUT), "--images", str(HELDOUT / "images"),
                        "--out", str(tmp_path / "run"), "--workers", "0", "--no-progress", "--json"])
    assert rc == 0
    got = json.loads(buf.getvalue())["splits"]["val"]
    assert got["n"] == 200
    assert abs(got["acc50"] - published["acc50"]) <= 0.03, (got["acc50"], published["acc50"])


def test_make_demo_boxes_the_red_balloon(tmp_path):
    """`make demo` (without the app): "[detection] red balloon" on an unseen synthetic scene."""
    from eval.metrics import box_iou
    from mgv2.demo import demo_scene_image
    from mgv2.demo import main as demo_main

    assert demo_main(["--out", str(tmp_path), "--no-app"]) == 0
    answer = json.loads((tmp_path / "answer.json").read_text())
    image, scene = demo_scene_image()
    (truth,) = [o.visible_box for o in scene.objects if o.name() == "red balloon"]
    found = [b for g in boxes.parse(answer["text"]).groups for b in g.boxes]
    assert found, answer["text"]
    best = max(box_iou(boxes.to_pixels(b, *image.size), truth) for b in found)
    assert best >= 0.5, (answer["text"], truth)
    assert (tmp_path / "annotated.png").is_file()
