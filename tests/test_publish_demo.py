"""scripts/publish_demo.py: what it runs and how it counts the training minutes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_script

pd = load_script("publish_demo")


def test_refer_runs_every_expression_unless_limited():
    data = Path("runs/demo_synth")
    full = pd.benchmarks(data, 500)
    assert "--limit" not in full["refer"] and full["identify"][-4:-2] == ["--limit", "500"]
    cut = pd.benchmarks(data, 500, refer_limit=2000)
    assert cut["refer"][-4:-2] == ["--limit", "2000"]
    # refer and identify answers are also judged by the world's scenes (eval/world.py)
    assert full["refer"][-2:] == full["identify"][-2:] == ["--world", str(data)]
    assert {k: v for k, v in cut.items() if k != "refer"} == {k: v for k, v in full.items() if k != "refer"}


def test_training_minutes_add_stage0(tmp_path):
    stage = tmp_path / "stage1"
    stage.mkdir()
    lines = [{"step": 10 * (i + 1), "loss": 1.0, "time": 100.0 + 60 * i} for i in range(3)]  # 10 steps / min
    (stage / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert abs(pd.training_minutes([stage]) - 3.0) < 1e-9
    (tmp_path / "vision0.json").write_text(json.dumps({"minutes": 5.65}))
    assert abs(pd.training_minutes([stage], tmp_path / "vision0.json") - 8.65) < 1e-9
    assert abs(pd.training_minutes([stage], tmp_path / "none.json") - 3.0) < 1e-9


def test_ship_refuses_a_model_config_other_than_the_default(tmp_path, monkeypatch, capsys):
    """--model scores a candidate of another config (e.g. image_pos_embed: coords); shipping it
    would pair its weights with configs/model/demo.yaml, so --ship refuses before evaluating."""
    import sys

    import pytest

    other = tmp_path / "other.yaml"
    other.write_text("name: demo\n")
    monkeypatch.setattr(sys, "argv", ["publish_demo.py", "--model", str(other), "--ship", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="change configs/model/demo.yaml to match it first"):
        pd.main()
    assert not (tmp_path / "o").exists()
