"""The 7B-preset measurements of issues #3 and #4, as one script for a lent GPU.

    .venv/bin/python bench/gpu_7b.py --json runs/bench/gpu_7b.json           # on the GPU machine
    .venv/bin/python bench/gpu_7b.py --model configs/model/tiny.yaml --device cpu \\
        --train-steps 2 --expressions 40                                     # the same code, tiny, on CPU

Random weights (no weights exist on the machine): the shapes are the preset's own
(``configs/model/minigptv2_7b.yaml``: EVA ViT-g 448 px, Llama-2-7B, LoRA r 64 on q/v).  The
tokenizer is the tiny one padded with unused tokens to the preset's ``llm.vocab_size``, so every
embedding and LM-head shape is the real one.

1. **Training step** (#3): ``mgv2.trainer.Trainer`` on the stage-3 recipe (``configs/train/
   stage3.yaml``: fp16 autocast + GradScaler, AdamW, LoRA + projector trainable) with its RefCOCO
   entry's per-GPU batch (``batch_size`` 6), refer samples built from the shared RefCOCO val
   annotations on placeholder images.  Reported: seconds per step (median after the first),
   samples/s, tokens/s (from the trainer's log) and peak GPU memory.
2. **Evaluation** (#4): ``mgv2 eval refcoco --split val`` on all 10,834 RefCOCO val expressions
   (1,500 placeholder images at the recorded sizes), greedy, 20 new tokens (random weights
   almost never emit EOS; the script reports how many answers reached 20 tokens).  Reported:
   expressions/s with the model build and without it (the build is timed on its own first and
   subtracted), and peak GPU memory of the eval run.

Numbers go to stdout and to ``--json``; README "Benchmarks" quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch

from bench.eval import DATA, placeholder_images


def padded_tokenizer(vocab_size: int, folder: Path) -> Path:
    """The tiny tokenizer plus unused tokens up to ``vocab_size``, saved in ``folder``."""
    from mgv2.config import resolve_path
    from mgv2.tokenizer import load_tokenizer

    tok = load_tokenizer(resolve_path("mgv2:tiny_tokenizer"))
    missing = vocab_size - len(tok)
    if missing < 0:
        raise SystemExit(f"llm.vocab_size {vocab_size} is smaller than the tiny tokenizer ({len(tok)})")
    if missing:
        tok.add_tokens([f"<unused_{i}>" for i in range(missing)])
    tok.save_pretrained(folder)
    return folder


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_step(args, model_yaml: Path, overrides: list[str], records, out: Path, device: torch.device) -> dict:
    from mgv2.config import TrainConfig, load_yaml
    from mgv2.trainer import Trainer

    base = load_yaml(TrainConfig, ROOT / "configs/train/stage3.yaml")
    refer = next(d for d in base.datasets if d.task == "refer")
    cfg = dataclasses.replace(
        base, model=str(model_yaml), model_overrides=overrides, init_from=None, output_dir=str(out),
        steps=args.train_steps, batch_scale=1, save_every=10**9, log_every=1, num_workers=2, progress=False,
        datasets=[dataclasses.replace(refer, ratio=1.0)],
    )
    if device.type != "cuda":
        cfg = dataclasses.replace(cfg, precision="fp32")
    reset_peak(device)
    trainer = Trainer(cfg, records={refer.name: records}, device=str(device), verbose=False)
    built = peak_gib(device)
    trainer.train()
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x and "time" in x]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(steps)]  # the first step (warm-up) is left out
    sec = statistics.median(gaps) if gaps else float("nan")
    return {
        "preset": trainer.model_cfg.name, "batch": refer.batch_size, "precision": cfg.precision,
        "trainable_parameters": sum(p.numel() for p in trainer.model.trainable_parameters().values()),
        "seconds_per_step": sec, "samples_per_s": refer.batch_size / sec,
        "tokens_per_s": statistics.median(x["tokens_per_s"] for x in steps[1:]) if len(steps) > 1 else None,
        "peak_gib_model": built, "peak_gib": peak_gib(device), "steps": len(steps),
    }


def evaluation(args, model_yaml: Path, overrides: list[str], images: Path, out: Path, device: torch.device,
               n: int, tokenizer: Path) -> dict:
    from mgv2.cli import main as mgv2_main
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.pipeline import Pipeline
    from mgv2.tokenizer import load_tokenizer

    # the model build alone, timed the way the CLI does it, so that generation can be told apart
    reset_peak(device)
    t = time.perf_counter()
    pipe = Pipeline.from_config(load_yaml(ModelConfig, model_yaml, overrides), device=str(device), verbose=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    build = time.perf_counter() - t
    del pipe
    reset_peak(device)
    argv = ["eval", "refcoco", "--split", "val", "--data", str(DATA), "--images", str(images),
            "--model", str(model_yaml), "--device", str(device), "--out", str(out), "--limit", str(n),
            "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--max-new-tokens", "20",
            "--no-progress", "--json"]
    for o in overrides:
        argv += ["--set", o]
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        mgv2_main(argv)
    total = time.perf_counter() - t
    lines = [json.loads(x) for x in (out / "val" / "predictions.jsonl").read_text().splitlines()]
    tok = load_tokenizer(tokenizer)
    lengths = [len(tok(x["answer"], add_special_tokens=False).input_ids) for x in lines]
    return {
        "expressions": len(lines), "seconds": total, "build_seconds": build,
        "expr_per_s_with_build": len(lines) / total, "expr_per_s": len(lines) / max(total - build, 1e-9),
        "answers_of_20_tokens_or_more": sum(n >= 20 for n in lengths), "peak_gib": peak_gib(device),
        "batch_size": args.batch_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "configs/model/minigptv2_7b.yaml"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--train-steps", type=int, default=6, help="training steps (the first is warm-up)")
    ap.add_argument("--expressions", type=int, default=10834, help="RefCOCO val expressions (all: 10,834)")
    ap.add_argument("--batch-size", type=int, default=64, help="eval prompts per generation batch")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--skip", choices=["train", "eval"], action="append", default=[])
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    from mgv2.config import ModelConfig, load_yaml
    from tasks.readers.refcoco import read_refcoco_eval_json

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU; run on the GPU machine or pass --device cpu")
    tmp = Path(tempfile.mkdtemp(prefix="mgv2-bench-gpu-"))
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__}
    try:
        model_yaml = Path(args.model).resolve()
        cfg = load_yaml(ModelConfig, model_yaml)
        tok = padded_tokenizer(cfg.llm.vocab_size, tmp / "tokenizer")
        overrides = [f"llm.tokenizer={tok}", "llm.path=null", "vision.checkpoint=null", "checkpoint=null"]
        images = tmp / "images"
        records = read_refcoco_eval_json(DATA, images=images)
        n = min(args.expressions, len(records))
        train_records = records[:512]
        placeholder_images(records[: max(n, len(train_records))], images)
        results["images"] = len({r.image for r in records[:n]})
        if "train" not in args.skip:
            results["train"] = train_step(args, model_yaml, overrides, train_records, tmp / "train", device)
            print(f"train step ({results['train']['preset']}, batch {results['train']['batch']}, "
                  f"{results['train']['precision']}): {results['train']['seconds_per_step']:.3f} s, "
                  f"{results['train']['samples_per_s']:.1f} samples/s, peak {results['train']['peak_gib']} GiB",
                  flush=True)
        if "eval" not in args.skip:
            results["eval"] = evaluation(args, model_yaml, overrides, images, tmp / "eval", device, n, tok)
            e = results["eval"]
            print(f"eval refcoco val: {e['expressions']} expressions on {results['images']} images, "
                  f"{e['expr_per_s']:.1f} expr/s ({e['expr_per_s_with_build']:.1f} with the model build), "
                  f"{e['answers_of_20_tokens_or_more']} answers of 20 tokens, peak {e['peak_gib']} GiB",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
