"""bench/gpu_7b.py (the 7B measurements of #3/#4 for a lent GPU) runs its whole path on CPU with
the tiny preset: a real Trainer step on the stage-3 recipe and a real ``mgv2 eval refcoco``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_its_whole_path_on_cpu_with_the_tiny_preset(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "bench/gpu_7b.py"), "--model", str(ROOT / "configs/model/tiny.yaml"),
           "--device", "cpu", "--train-steps", "3", "--expressions", "24", "--workers", "0",
           "--batch-size", "8", "--json", str(out)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(out.read_text())
    train, ev = res["train"], res["eval"]
    assert train["preset"] == "tiny" and train["steps"] == 3 and train["batch"] == 6
    assert train["seconds_per_step"] > 0 and train["trainable_parameters"] > 0
    assert ev["expressions"] == 24 and res["images"] >= 1
    assert ev["expr_per_s"] >= ev["expr_per_s_with_build"] > 0
    assert ev["answers_of_20_tokens_or_more"] >= 20  # random weights: EOS is rare


def test_padded_tokenizer_reaches_the_preset_vocabulary(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.gpu_7b import padded_tokenizer
    from mgv2.tokenizer import load_tokenizer

    tok = load_tokenizer(padded_tokenizer(32000, tmp_path / "tok"))
    assert len(tok) == 32000
    assert tok("[refer] red balloon", add_special_tokens=False).input_ids == load_tokenizer(
        ROOT / "mgv2/assets/tiny_tokenizer")("[refer] red balloon", add_special_tokens=False).input_ids
