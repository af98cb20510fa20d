"""Every YAML in configs/ validates; typed configs refuse bad values with a clear message."""

from __future__ import annotations

import pytest

from mgv2.config import ConfigError, ModelConfig, TrainConfig, from_dict, load_yaml, save_yaml, to_dict
from tests.conftest import ROOT

CONFIG_DIR = ROOT / "configs"


def _config_class(path):
    kind = path.relative_to(CONFIG_DIR).parts[0]
    if kind == "model":
        return ModelConfig
    if kind == "train":
        return TrainConfig
    raise AssertionError(f"no config class for configs/{kind}; add it to this test")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_loads_and_round_trips(path, tmp_path):
    cfg = load_yaml(_config_class(path), path)
    save_yaml(cfg, tmp_path / "again.yaml")
    again = load_yaml(type(cfg), tmp_path / "again.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_there_are_model_presets():
    names = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")}
    assert {"minigptv2_7b", "tiny", "smol"} <= names


def test_7b_preset_is_the_official_shape():
    cfg = load_yaml(ModelConfig, CONFIG_DIR / "model" / "minigptv2_7b.yaml")
    v, llm, lora = cfg.vision, cfg.llm, cfg.lora
    assert (v.img_size, v.patch_size, v.width, v.depth, v.heads, v.mlp_hidden) == (448, 14, 1408, 39, 16, 6144)
    assert (llm.hidden_size, llm.num_layers, llm.vocab_size, llm.pad_token) == (4096, 32, 32000, "$$")
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (64, 16, 0.05, ["q_proj", "v_proj"])
    assert cfg.num_image_tokens == 256 and cfg.trainable == ["projector", "lora"]


@pytest.mark.parametrize(
    "data, words",
    [
        ({"vision": {"widht": 3}}, "unknown key"),
        ({"vision": {"width": "wide"}}, "expected an integer"),
        ({"vision": {"img_size": 450}}, "multiple of patch_size"),
        ({"lora": {"dropout": 1.5}}, "dropout"),
        ({"trainable": ["projector", "everything"]}, "unknown part"),
        ({"vision_precision": "fp8"}, "not one of"),
        ({"llm": {"hidden_size": 100, "num_heads": 32}}, "divisible"),
        ({"merge_tokens": 3}, "merge_tokens"),
        ({"merge_tokens": 2, "merge_layout": "square"}, "square number"),
        ({"merge_layout": "diagonal"}, "not one of"),
        ({"llm": {"load_in_8bit": "yes"}}, "true/false"),
    ],
)
def test_bad_values_name_the_key(data, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(ModelConfig, data)


def test_overrides_and_errors_name_the_file(tmp_path):
    cfg = load_yaml(ModelConfig, CONFIG_DIR / "model" / "tiny.yaml", ["llm.num_layers=2", "lora.r=4"])
    assert cfg.llm.num_layers == 2 and cfg.lora.r == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("vision: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(ModelConfig, bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_yaml(ModelConfig, CONFIG_DIR / "model" / "tiny.yaml", ["lora.r"])
