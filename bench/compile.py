"""Training-step speed with the LLM decoder compiled (``compile: true`` in a train config) against
the eager step, in the same run, on the same batches and weights.

    .venv/bin/python bench/compile.py [--config configs/train/demo_stage1.yaml] [--data runs/demo_synth]
        [--steps 10] [--rounds 3] [--threads 1] [--dataset refcoco]

The stage's trainer is built as ``mgv2 train`` builds it (one process; its vision cache from
``vision_cache_dir`` when a stage saved one there), ``--steps`` iterations of ``--dataset`` are
drawn once (each as the config's ``length_chunks`` batches; the README's 1.07x predates that key and
timed whole batches), and the same optimizer steps run eagerly and compiled in alternating rounds (the
training pass, mgv2/answer_pass.py since the twenty-third session, and the decoder's compiled forward are
switched on and off in place), so a drift of the machine's speed hits both.  Reported:
the seconds the first compiled steps took (TorchInductor compiling; a warm cache in
``/tmp/torchinductor_$USER`` makes it shorter), the median seconds per step of each variant and
their ratio.  ``--threads 1`` is what each of the demo recipe's two DDP processes runs with.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from bench.stage_steps import draw_items, stage_parser, stage_trainer, time_steps
from mgv2.trainer import compile_unavailable


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(__doc__, steps=10)
    args = ap.parse_args(argv)
    why = compile_unavailable(torch.device("cpu"))
    if why is not None:
        raise SystemExit(f"cannot compile here: {why}")
    torch.set_num_threads(args.threads)
    tr = stage_trainer(args.config, args.data)
    chosen = [tr.collator(items) for items in draw_items(tr, args.steps + 2, args.dataset)]
    warm, timed = chosen[:2], chosen[2:]

    time_steps(tr, warm)
    model, decoder = tr.model, tr.model.llama_model.get_decoder()
    eager = (model.answer_pass, None)
    model.compile_decoder()  # as compile: true trains: the decoder and the answer pass (mgv2/answer_pass.py)
    compiled = (model.answer_pass, decoder._compiled_call_impl)
    first = time_steps(tr, warm) * len(warm)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, (answer_pass, impl) in (("eager", eager), ("compiled", compiled)):
            model.answer_pass, decoder._compiled_call_impl = answer_pass, impl
            times[name].append(time_steps(tr, timed))
    eager, comp = statistics.median(times["eager"]), statistics.median(times["compiled"])
    shapes = sorted({tuple(tb.batch.input_ids.shape) for micro in timed for tb in micro})
    print(f"{args.config}: {len(timed)} steps x {args.rounds} rounds, {args.threads} thread(s), batches {shapes}")
    print(f"first 2 compiled steps (compiling): {first:.1f} s")
    print(f"eager    {eager:.3f} s/step  (rounds {', '.join(f'{t:.3f}' for t in times['eager'])})")
    print(f"compiled {comp:.3f} s/step  (rounds {', '.join(f'{t:.3f}' for t in times['compiled'])})")
    print(f"compiled / eager speed: {eager / comp:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
