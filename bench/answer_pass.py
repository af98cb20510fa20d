"""Training-step speed with the answer pass (the last decoder layer run only on each sequence's answer
window, mgv2/answer_pass.py; the default) against the whole decoder at every position, in the same
run, on the same batches and weights.

    .venv/bin/python bench/answer_pass.py [--config configs/train/demo_stage1.yaml] [--data runs/demo_synth]
        [--steps 10] [--rounds 3] [--threads 1] [--world 2] [--dataset NAME] [--compiled]

The stage's trainer is built as ``mgv2 train`` builds it (one process; its vision cache from
``vision_cache_dir`` when a stage saved one there).  For each dataset of the stage (or ``--dataset``)
``--steps`` of its iterations are drawn as process 0 of ``--world`` gets them (the demo recipe runs
two single-threaded DDP processes: ``--world 2 --threads 1``), collated once as the config says
(``length_chunks``), and the variants' optimizer steps run in alternating rounds, so a drift of the
machine's speed hits all of them.  ``--compiled`` adds both passes compiled (TorchInductor, as
``compile: true`` trains; the demo's stage 1 does), the baseline then being the compiled whole decoder.
Reported per dataset: the share of the positions the last layer still computes, the median seconds
per step of each variant and its speed against the baseline.  Both passes give the same losses and
gradients (tests/test_answer_pass.py); only the time differs.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from bench.stage_steps import draw_items, stage_parser, stage_trainer, time_steps
from mgv2.answer_pass import answer_query, answer_windows, decoder_answer_pass
from mgv2.trainer import compile_unavailable


def window_share(steps: list[list]) -> float:
    """Positions in the answer windows over all positions of the batches (padding included)."""
    inside = total = 0
    for micro in steps:
        for tb in micro:
            query = answer_query(tb.batch.labels)
            inside += answer_windows(query)[0].numel()
            total += query.numel()
    return inside / total


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(__doc__, steps=10)
    ap.add_argument("--world", type=int, default=2, help="time process 0's share of each batch among this many")
    ap.add_argument("--compiled", action="store_true", help="time both passes compiled too (baseline: compiled whole decoder)")
    args = ap.parse_args(argv)
    if args.compiled and (why := compile_unavailable(torch.device("cpu"))) is not None:
        raise SystemExit(f"cannot compile here: {why}")
    torch.set_num_threads(args.threads)
    tr = stage_trainer(args.config, args.data)
    model, decoder = tr.model, tr.model.llama_model.get_decoder()
    # name -> (the model's training pass, the decoder's compiled forward or None)
    variants: dict[str, tuple] = {"whole decoder": (None, None), "answer pass": (decoder_answer_pass, None)}
    if args.compiled:
        decoder.compile(dynamic=True)
        variants = {"whole decoder, compiled": (None, decoder._compiled_call_impl), **variants,
                    "answer pass, compiled": (torch.compile(decoder_answer_pass, dynamic=True), None)}
        decoder._compiled_call_impl = None

    def use(name: str) -> None:
        model.answer_pass, decoder._compiled_call_impl = variants[name]

    names = [args.dataset] if args.dataset else tr.mixture.names
    print(f"{args.config}: {args.steps} steps x {args.rounds} rounds per dataset, {args.threads} thread(s), "
          f"process 0 of {args.world}")
    for name in names:
        steps = [tr.collator(items) for items in draw_items(tr, args.steps + 2, name, rank=0, world=args.world)]
        warm, timed = steps[:2], steps[2:]
        for v in variants:  # warm-up (and, with --compiled, compiling)
            use(v)
            time_steps(tr, warm)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                use(v)
                times[v].append(time_steps(tr, timed))
        base = statistics.median(times[next(iter(variants))])
        print(f"{name} ({sum(tb.num_samples for tb in steps[0])} samples per process): the last layer computes "
              f"{window_share(timed):.1%} of the positions")
        for v in variants:
            t = statistics.median(times[v])
            print(f"  {v:24s} {t:.3f} s/step  {base / t:.2f}x  (rounds {', '.join(f'{x:.3f}' for x in times[v])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
