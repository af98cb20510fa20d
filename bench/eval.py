"""``mgv2 eval refcoco`` against a loop written the way the official MiniGPT-v2 script works.

    .venv/bin/python bench/eval.py [--expressions 1000] [--batch-size 32] [--workers 2] [--threads N]

Data: the first ``--expressions`` expressions of the shared RefCOCO val json
(``../shared/data/refcoco_eval/refcoco_val.json``), with placeholder JPEGs written at the recorded
image sizes (smooth gradients and rectangles, so decoding costs about what a photo costs).
Model: the tiny preset, random weights from seed 0, on CPU; greedy, 20 new tokens.

* official-style loop: model build and ``json.load`` of the split, then batches of 10 expressions
  in annotation order; every expression opens, decodes and preprocesses its image in the main
  process and the batch re-encodes all 10 images (no reuse), then one batched greedy generate of
  left-padded prompts (``eval_ref.py`` + ``RefCOCOEvalData``).
* mgv2: ``mgv2 eval refcoco --limit N`` end to end (model build, reading, generation with
  image-embedding reuse, the image part of the prompt computed once per image, DataLoader
  workers and ``--batch-size`` prompts per batch, scoring, report and pictures), in the same
  process on the same weights.

Both must give identical answers; the script fails otherwise.  The ratio of expressions/s is
printed; an extra line separates the effect of batch size from that of image reuse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and "eval" would import this very
# file instead of the project's eval package: put the project root there instead.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch
from PIL import Image

DATA = ROOT.parent / "shared" / "data" / "refcoco_eval" / "refcoco_val.json"


def placeholder_images(records, folder: Path) -> int:
    """One JPEG per distinct image at its recorded size; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    done = set()
    for r in records:
        path = Path(r.image)
        if path.name in done:
            continue
        done.add(path.name)
        w, h = int(r.width), int(r.height)
        yy, xx = np.mgrid[:h, :w]
        base = rng.integers(0, 255, 3)
        a = np.stack([(xx * 255 // max(w, 1) + base[0]) % 256, (yy * 255 // max(h, 1) + base[1]) % 256,
                      np.full_like(xx, base[2])], axis=-1).astype(np.uint8)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            a[y0:y0 + int(rng.integers(10, h // 2)), x0:x0 + int(rng.integers(10, w // 2))] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(folder / path.name, quality=90)
    return len(done)


def official_loop(pipe, records, prompts, settings, batch: int = 10) -> list[str]:
    """The official evaluation loop: no reuse, images re-decoded and re-encoded per expression."""
    from mgv2.image import load_image
    from mgv2.sample import Sample, Turn

    answers: list[str] = []
    with torch.no_grad():
        for start in range(0, len(records), batch):
            chunk = list(range(start, min(start + batch, len(records))))
            pixels = pipe.processor.batch([load_image(records[i].image) for i in chunk]).to(pipe.device)
            embeds = pipe.model.embed_images(pixels.to(pipe._vision_dtype()))
            samples = [Sample(image=records[i].image, turns=[Turn(prompts[i])]) for i in chunk]
            answers += pipe.generate(samples, embeds, list(range(len(chunk))), settings, share_prefix=False)
    return answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "configs/model/tiny.yaml"))
    ap.add_argument("--expressions", type=int, default=1000,
                    help="first N expressions of RefCOCO val (real splits hold 4896-10834)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (the best counts)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    from eval.benchmarks import get_benchmark
    from mgv2.cli import main as mgv2_main
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.model import GenerationSettings
    from mgv2.pipeline import Pipeline
    from tasks.readers.refcoco import read_refcoco_eval_json

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mgv2-bench-eval-"))
    try:
        images = tmp / "images"
        records = read_refcoco_eval_json(DATA, images=images)[: args.expressions]
        n_images = placeholder_images(records, images)
        bench = get_benchmark("refcoco")
        prompts = [bench.prompt(r) for r in records]
        settings = GenerationSettings(max_new_tokens=20)

        torch.manual_seed(0)  # the CLI seeds the same way: identical random weights
        pipe = Pipeline.from_config(load_yaml(ModelConfig, args.model), device="cpu", verbose=False)

        def cli(batch_size: int, limit: int, out: Path) -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                mgv2_main(["eval", "refcoco", "--split", "val", "--data", str(DATA), "--images", str(images),
                           "--model", args.model, "--limit", str(limit), "--out", str(out),
                           "--batch-size", str(batch_size), "--workers", str(args.workers), "--no-progress",
                           "--json"])

        def official_script() -> list[str]:
            torch.manual_seed(0)
            model = Pipeline.from_config(load_yaml(ModelConfig, args.model), device="cpu", verbose=False)
            json.loads(DATA.read_text())  # the official script reads the whole split
            return official_loop(model, records, prompts, settings)

        # warm-up of both (first-call costs: imports, allocator, worker start), then alternate runs
        official_loop(pipe, records[:10], prompts[:10], settings)
        cli(args.batch_size, 10, tmp / "warm")
        times: dict[str, list[float]] = {"official": [], "mgv2": [], "mgv2_bs10": []}
        reference = answers = None
        for r in range(args.repeats):
            t = time.perf_counter()
            reference = official_script()
            times["official"].append(time.perf_counter() - t)
            for key, bs in (("mgv2", args.batch_size), ("mgv2_bs10", 10)):
                out = tmp / f"{key}_{r}"
                t = time.perf_counter()
                cli(bs, len(records), out)
                times[key].append(time.perf_counter() - t)
                lines = [json.loads(x) for x in (out / "val" / "predictions.jsonl").read_text().splitlines()]
                answers = [x["answer"] for x in sorted(lines, key=lambda x: x["index"])]
                if answers != reference:
                    diff = sum(a != b for a, b in zip(answers, reference))
                    raise SystemExit(f"answers differ between the official-style loop and {key} "
                                     f"({diff} of {len(reference)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(records)
    t_official, t_mgv2, t_mgv2_10 = (min(times[k]) for k in ("official", "mgv2", "mgv2_bs10"))
    rows = {
        "official_style_loop_bs10": t_official,
        f"mgv2_eval_bs{args.batch_size}_workers{args.workers}": t_mgv2,
        f"mgv2_eval_bs10_workers{args.workers}": t_mgv2_10,
    }
    print(f"tiny preset, CPU threads {torch.get_num_threads()}, {n} RefCOCO val expressions on {n_images} images "
          f"({n / n_images:.1f} per image), greedy 20 new tokens; identical answers: yes; best of {args.repeats}")
    print(f"{'variant':<34} {'seconds':>8} {'expr/s':>8} {'speed-up':>9}")
    for name, secs in rows.items():
        print(f"{name:<34} {secs:8.2f} {n / secs:8.1f} {t_official / secs:8.2f}x")
    print(f"mgv2 eval refcoco vs official-style loop: {t_official / t_mgv2:.2f}x expressions/s "
          "(both timed with model build and reading; mgv2 also scores and writes report and pictures)")
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"seconds": v, "expr_per_s": n / v} for k, v in rows.items()},
                                              indent=2))


if __name__ == "__main__":
    main()
