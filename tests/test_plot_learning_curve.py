"""bench/plot_learning_curve.py: stages laid end to end, after stage 0's minutes."""

from __future__ import annotations

import json

from bench.plot_learning_curve import build_curves, stage0_minutes


def _log(folder, times):
    folder.mkdir()
    lines = [{"step": 10 * (i + 1), "loss": 2.0 - 0.1 * i, "time": t} for i, t in enumerate(times)]
    (folder / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_stages_follow_stage0(tmp_path):
    s1 = _log(tmp_path / "s1", [1000.0 + 60 * i for i in range(4)])  # 10 steps a minute: starts 1 min before its first line
    s2 = _log(tmp_path / "s2", [5000.0 + 30 * i for i in range(3)])
    (tmp_path / "vision0.json").write_text(json.dumps({"minutes": 5.5, "steps": 2000}))
    assert stage0_minutes(tmp_path / "vision0.json") == 5.5
    assert stage0_minutes(tmp_path / "missing.json") == 0.0 and stage0_minutes(None) == 0.0
    _, _, step_time, ends = build_curves([s1, s2], start=5.5)
    assert step_time[1][0] == (10, 6.5)  # stage 0, then one minute of stage 1
    assert ends[0] == (1, 5.5 + 4.0) and abs(ends[1][1] - (9.5 + 1.5)) < 1e-9
    _, _, _, plain = build_curves([s1, s2])
    assert abs(plain[1][1] - 5.5) < 1e-9
