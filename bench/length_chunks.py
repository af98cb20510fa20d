"""Training-step speed with each process's batch sorted by length and run in ``length_chunks``
passes (a train-config key), against one pass over the whole batch, in the same run, on the same
samples and weights.

    .venv/bin/python bench/length_chunks.py [--config configs/train/demo_stage1.yaml] [--data runs/demo_synth]
        [--chunks 1 2 4] [--steps 8] [--rounds 3] [--threads 1] [--world 2] [--dataset NAME]

The stage's trainer is built as ``mgv2 train`` builds it (one process, eager; its vision cache from
``vision_cache_dir`` when a stage saved one there).  For each dataset of the stage (or ``--dataset``)
``--steps`` of its iterations are drawn as process 0 of ``--world`` gets them (the demo recipe runs
two single-threaded DDP processes: ``--world 2 --threads 1``), collated once per chunk count, and
the optimizer steps of every chunk count run in alternating rounds, so a drift of the machine's
speed hits all of them.  Reported per dataset and chunk count: the padded share of the positions
computed, the median seconds per step and the speed against one chunk.  The gradients are the same
whatever the chunk count (tests/test_trainer.py checks it); only the time differs.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from bench.stage_steps import draw_items, stage_parser, stage_trainer, time_steps
from mgv2.data import TrainCollator


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(__doc__, steps=8)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4], help="chunk counts; the first is the baseline")
    ap.add_argument("--world", type=int, default=2, help="time process 0's share of each batch among this many")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tr = stage_trainer(args.config, args.data)
    names = [args.dataset] if args.dataset else tr.mixture.names
    print(f"{args.config}: {args.steps} steps x {args.rounds} rounds per dataset, {args.threads} thread(s), "
          f"process 0 of {args.world}")
    for name in names:
        draws = draw_items(tr, args.steps + 1, name, rank=0, world=args.world)
        steps = {k: [TrainCollator(tr.collator.encoder, chunks=k)(items) for items in draws] for k in args.chunks}
        for k in args.chunks:
            time_steps(tr, steps[k][:1])  # warm-up
        times: dict[int, list[float]] = {k: [] for k in args.chunks}
        for _ in range(args.rounds):
            for k in args.chunks:
                times[k].append(time_steps(tr, steps[k][1:]))
        base = statistics.median(times[args.chunks[0]])
        print(f"{name} ({len(draws[0])} samples per process):")
        for k in args.chunks:
            computed = sum(tb.batch.attention_mask.numel() for micro in steps[k] for tb in micro)
            real = sum(tb.num_tokens for micro in steps[k] for tb in micro)
            t = statistics.median(times[k])
            print(f"  chunks {k}: padding {1 - real / computed:5.1%}  {t:.3f} s/step  {base / t:.2f}x  "
                  f"(rounds {', '.join(f'{x:.3f}' for x in times[k])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
