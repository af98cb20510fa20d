"""Score a trained demo checkpoint on every held-out synthetic benchmark and ship it (issue #6).

    .venv/bin/python scripts/publish_demo.py --checkpoint runs/demo/stage3/final --data runs/demo_synth --ship

1. runs ``mgv2 eval`` (the same command users run; printed) for refer (val/testA/testB, every
   expression), identify, detection, grounding, VQAv2-style, GQA-style and VSR-style splits;
2. cuts the 200-expression held-out sample the shipped-model test uses (the first 200 val
   expressions and their pictures) and scores it: into ``tests/data/demo_heldout`` with
   ``--ship``, else under ``--out`` (so scoring a candidate never changes the test's data);
3. with ``--ship``: copies ``model.safetensors`` + ``config.yaml`` into ``mgv2/assets/demo_model``
   (atomically, never the optimizer state) with ``scores.json`` beside them, and prints the README
   table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.plot_learning_curve import read_log, stage0_minutes, stage_minutes
from mgv2.cli import main as cli_main
from mgv2.io import atomic_dir, atomic_write_text

SHIP_DIR = ROOT / "mgv2" / "assets" / "demo_model"
HELDOUT_DIR = ROOT / "tests" / "data" / "demo_heldout"
HELDOUT_N = 200
MODEL_CONFIG = "configs/model/demo.yaml"


def benchmarks(data: Path, limit: int | None, refer_limit: int | None = None) -> dict[str, list[str]]:
    """name -> ``mgv2 eval`` arguments (without model / output); ``refer_limit`` None = every
    refer expression."""
    img = ["--images", str(data / "images")]
    lim = ["--limit", str(limit)] if limit else []
    refer_lim = ["--limit", str(refer_limit)] if refer_limit else []
    world = ["--world", str(data)]  # also judged by the world's scenes (eval/world.py)
    return {
        "refer": ["refcoco", "--split", "all", "--data", str(data / "refcoco_eval"), *img, *refer_lim, *world],
        "identify": ["identify", "--split", "all", "--data", str(data / "refcoco_eval"), *img, *lim, *world],
        "detection": ["detection", "--data", str(data / "coco_det" / "instances_val.json"), *img, *lim],
        "grounding": ["grounding", "--data", str(data / "flickr30k"), *img, *lim, "--max-new-tokens", "160"],
        "vqav2": ["vqav2", "--data", str(data / "vqav2"), *img, *lim],
        "gqa": ["gqa", "--data", str(data / "gqa"), *img, *lim],
        "vsr": ["vsr", "--split", "test", "--data", str(data / "vsr" / "test.jsonl"), *img, *lim],
    }


def run_eval(args: list[str]) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["eval", *args, "--json", "--no-progress", "--workers", "0"])
    if rc != 0:
        raise SystemExit(f"mgv2 eval {' '.join(args)} failed with exit code {rc}")
    return json.loads(buf.getvalue())


def cut_heldout(data: Path, n: int, dest: Path) -> Path:
    """The first ``n`` val expressions of the world and their pictures -> ``dest``."""
    records = json.loads((data / "refcoco_eval" / "refcoco_val.json").read_text())[:n]
    with atomic_dir(dest) as tmp:
        (tmp / "images").mkdir()
        for name in sorted({r["img_id"][:27] + ".jpg" for r in records}):
            shutil.copyfile(data / "images" / name, tmp / "images" / name)
        (tmp / "refcoco_val.json").write_text(json.dumps(records, indent=0) + "\n")
    return dest


def training_minutes(stage_dirs: list[Path], stage0: Path | None = None) -> float:
    """Wall-clock training minutes from the stages' log.jsonl, as the learning-curve plot counts
    them (bench/plot_learning_curve.py: each stage from its first step, laid end to end), after
    the vision pretraining's (``stage0``: the vision0.json of scripts/pretrain_vision.py)."""
    return stage0_minutes(stage0) + sum(stage_minutes(read_log(d))[-1] for d in stage_dirs)


def headline(name: str, m: dict) -> str:
    s = m["splits"]
    pct = lambda v: f"{100 * v:.1f}"
    if name == "refer":
        return " / ".join(f"{pct(s[k]['acc50'])}" for k in ("val", "testA", "testB")) + " (Acc@0.5 val / testA / testB)"
    first = next(iter(s.values()))
    keys = {"identify": "accuracy", "detection": "map50", "grounding": "phrase_recall", "vqav2": "accuracy",
            "gqa": "accuracy", "vsr": "accuracy"}
    key = keys[name]
    if key not in first:  # name the keys rather than guess
        return ", ".join(f"{k} {v:.3f}" for k, v in first.items() if isinstance(v, float))
    if key == "map50":  # mAP is quoted as a fraction (the #6 target: mAP@0.5 >= 0.8)
        return f"{first[key]:.3f} (mAP@0.5)"
    if name == "identify" and "world" in first:
        return (" / ".join(pct(v[key]) for v in s.values()) + " exact; names the object "
                + " / ".join(pct(v["world"]["names_object"]) for v in s.values()))
    return f"{pct(first[key])}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo/stage3/final")
    ap.add_argument("--model", default=MODEL_CONFIG,
                    help=f"model config YAML of the checkpoint (default {MODEL_CONFIG}; --ship needs it)")
    ap.add_argument("--data", default="runs/demo_synth")
    ap.add_argument("--stages", nargs="*", default=["runs/demo/stage1", "runs/demo/stage2", "runs/demo/stage3"])
    ap.add_argument("--stage0", default="runs/demo/vision0.json", help="the vision pretraining's record (if any)")
    ap.add_argument("--out", default="runs/demo/publish")
    ap.add_argument("--limit", type=int, default=500, help="items per split for the non-refer benchmarks")
    ap.add_argument("--refer-limit", type=int, default=None,
                    help="refer expressions per split (default: all 46754, about 2 min on 2 CPU cores)")
    ap.add_argument("--only", nargs="*", default=None, help="only these benchmarks")
    ap.add_argument("--ship", action="store_true", help="copy the checkpoint + scores into mgv2/assets/demo_model")
    args = ap.parse_args()
    data, ckpt, out = Path(args.data), Path(args.checkpoint), Path(args.out)
    if args.ship and args.model != MODEL_CONFIG:
        raise SystemExit(f"--ship ships a model of {MODEL_CONFIG} (the default model's config); "
                         f"got --model {args.model}: change {MODEL_CONFIG} to match it first")
    model = ["--model", args.model, "--checkpoint", str(ckpt)]
    results: dict[str, dict] = {}
    for name, bench_args in benchmarks(data, args.limit, args.refer_limit).items():
        if args.only and name not in args.only:
            continue
        cmd = [*bench_args, *model, "--out", str(out / name)]
        t0 = time.time()
        print("mgv2 eval " + shlex.join(cmd), flush=True)
        metrics = run_eval(cmd)
        results[name] = {"command": "mgv2 eval " + shlex.join(bench_args), "metrics": metrics["splits"],
                         "seconds": round(time.time() - t0, 1)}
        print(f"  {name}: {headline(name, metrics)}  ({results[name]['seconds']} s)", flush=True)
    # the test's sample (tests/data/demo_heldout) is replaced only when the model is shipped
    heldout = cut_heldout(data, HELDOUT_N, HELDOUT_DIR if args.ship else out / "heldout_data")
    rel = heldout.relative_to(ROOT) if heldout.is_relative_to(ROOT) else heldout
    sample = run_eval(["refcoco", "--split", "val", "--data", str(heldout), "--images", str(heldout / "images"),
                       *model, "--out", str(out / "heldout_sample")])
    acc = sample["splits"]["val"]["acc50"]
    print(f"  held-out sample ({HELDOUT_N} val expressions, {rel}): Acc@0.5 {100 * acc:.1f}")
    scores = {
        "model": args.model,
        "training_minutes": round(training_minutes([Path(s) for s in args.stages], Path(args.stage0)), 1),
        "stage0_minutes": round(stage0_minutes(args.stage0), 1),
        "data": f"mgv2 synth --out {data} --images N (seed 0); held-out splits only",
        "benchmarks": results,
        "heldout_sample": {"path": str(rel), "n": HELDOUT_N, "acc50": acc,
                           "command": f"mgv2 eval refcoco --split val --data {rel} --images {rel}/images"},
    }
    text = json.dumps(scores, indent=2) + "\n"
    atomic_write_text(out / "scores.json", text)
    if args.ship:
        with atomic_dir(SHIP_DIR) as tmp:
            for f in ("model.safetensors", "config.yaml"):
                shutil.copyfile(ckpt / f, tmp / f)
            (tmp / "scores.json").write_text(text)
        print(f"shipped {ckpt} -> {SHIP_DIR.relative_to(ROOT)}")
    print("\n| benchmark (synthetic held-out) | score | command |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {headline(name, {'splits': r['metrics']})} | `{r['command']}` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
