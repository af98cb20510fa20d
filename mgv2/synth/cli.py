"""``mgv2 synth``: write the synthetic world (see :mod:`mgv2.synth` for the output layout)."""

from __future__ import annotations

import argparse
import time


def cmd_synth(args) -> int:
    from mgv2.synth.export import export

    start = time.perf_counter()
    counts = export(
        args.out, seed=args.seed, images=args.images, progress=not args.quiet, overwrite=args.overwrite,
        workers=args.workers,
    )
    took = time.perf_counter() - start
    refs = ", ".join(f"{s} {counts[f'refs_{s}']}" for s in ("train", "val", "testA", "testB"))
    print(
        f"wrote {counts['images']} images ({counts['objects']} objects) to {args.out} in {took:.1f} s: "
        f"{counts['refs']} refs / {counts['sentences']} sentences ({refs}), {counts['vqa_questions']} VQA, "
        f"{counts['gqa_questions']} GQA questions, {counts['vsr_statements']} VSR statements"
    )
    return 0


def add_synth_parser(sub) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "synth", help="draw a synthetic world of everyday objects and write it in the real dataset formats"
    )
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and count give the same files")
    p.add_argument("--images", type=int, default=200, help="number of pictures (default 200)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes that draw the pictures (default 1); the files do not depend on it")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder, replacing same-named files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)
