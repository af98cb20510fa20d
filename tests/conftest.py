"""Shared fixtures: the tiny preset (same code as the 7B one, small numbers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY = ROOT / "configs" / "model" / "tiny.yaml"


def load_script(name: str):
    """A file of scripts/ imported as a module (scripts/ is not a package), registered in
    sys.modules under ``name`` so its functions pickle by reference (worker processes)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A 60-picture synthetic world (seed 0), shared by the script tests."""
    from mgv2.synth import export

    out = tmp_path_factory.mktemp("small_world")
    export(out, seed=0, images=60, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_cfg():
    from mgv2.config import ModelConfig, load_yaml

    return load_yaml(ModelConfig, TINY)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_cfg):
    from mgv2.tokenizer import load_tokenizer

    return load_tokenizer(tiny_cfg.path(tiny_cfg.llm.tokenizer), pad_token=tiny_cfg.llm.pad_token)


@pytest.fixture()
def tiny_pipeline(tiny_cfg):
    """A fresh random-init tiny model (seeded), with dropout off."""
    from mgv2.pipeline import Pipeline

    torch.manual_seed(0)
    return Pipeline.from_config(tiny_cfg, device="cpu", verbose=False)


@pytest.fixture(scope="session")
def scene_image():
    """A small picture with a red disc and a blue square (no synthetic world needed)."""
    import numpy as np
    from PIL import Image

    a = np.full((120, 160, 3), 230, dtype=np.uint8)
    yy, xx = np.mgrid[:120, :160]
    a[(yy - 40) ** 2 + (xx - 50) ** 2 < 400] = (220, 30, 30)
    a[70:110, 100:140] = (30, 40, 220)
    return Image.fromarray(a)
