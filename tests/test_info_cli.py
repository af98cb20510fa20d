"""`mgv2 info` on the 7B preset (meta device) and CLI error handling."""

from __future__ import annotations

import json

import pytest

from mgv2.cli import main
from tests.conftest import ROOT

SEVEN_B = ROOT / "configs" / "model" / "minigptv2_7b.yaml"


def test_info_7b_counts_match_the_official_model(capsys):
    assert main(["info", "--model", str(SEVEN_B), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    p = info["parameters"]
    projector = 5632 * 4096 + 4096
    lora = 32 * 2 * (64 * 4096 + 4096 * 64)  # r 64 on q_proj and v_proj of 32 layers
    assert p["projector"] == projector == 23_072_768
    assert p["lora"] == lora == 33_554_432
    assert p["trainable"] == projector + lora == 56_627_200  # "about 56.6M" (SPEC §1)
    assert p["llm"] == 6_738_415_616  # Llama-2-7B
    assert info["image_tokens"] == 256
    # EVA ViT-g without its 40th block, plus ln_vision
    assert 980e6 < p["vision"] < 990e6
    assert p["total"] == p["vision"] + p["projector"] + p["llm"] + p["lora"]
    assert info["memory_gib"]["bf16"] == pytest.approx(p["total"] * 2 / 2**30)


def test_info_text_output(capsys):
    assert main(["info", "--model", str(SEVEN_B)]) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "56.6 M" in out and "int4" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["info", "--model", "nope.yaml"], "config file not found"),
        (["info", "--model", str(SEVEN_B), "--set", "lora.rank=3"], "unknown key"),
        (["info", "--model", str(SEVEN_B), "--set", "llm.hidden_size=big"], "expected an integer"),
    ],
)
def test_cli_config_errors_are_one_clear_line(capsys, args, words):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_predict_refuses_unknown_identifier_and_empty_prompt(capsys, tmp_path, scene_image):
    img = tmp_path / "scene.png"
    scene_image.save(img)
    assert main(["predict", "--image", str(img), "[segment] the ball"]) == 2
    assert "segment" in capsys.readouterr().err
    assert main(["predict", "--image", str(img), "  "]) == 2
    assert "empty" in capsys.readouterr().err.lower()


def test_predict_missing_image(capsys, tmp_path):
    assert main(["predict", "--image", str(tmp_path / "missing.jpg"), "[refer] ball"]) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_predict_json_and_picture(capsys, tmp_path, scene_image, tiny_cfg):
    img = tmp_path / "scene.png"
    scene_image.save(img)
    out = tmp_path / "annotated.png"
    code = main(["predict", "--model", str(ROOT / "configs/model/tiny.yaml"), "--device", "cpu",
                 "--image", str(img), "--json", "--out", str(out), "--max-new-tokens", "8", "[refer] red ball"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"text", "task", "result"} and payload["task"] == "refer"
    assert out.is_file()
