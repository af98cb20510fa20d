"""Training-step speed with the LLM decoder compiled (``compile: true`` in a train config) against
the eager step, in the same run, on the same batches and weights.

    .venv/bin/python bench/compile.py [--config configs/train/demo_stage1.yaml] [--data runs/demo_synth]
        [--steps 10] [--rounds 3] [--threads 1] [--dataset refcoco]

The stage's trainer is built as ``mgv2 train`` builds it (one process; its vision cache from
``vision_cache_dir`` when a stage saved one there), ``--steps`` batches of ``--dataset`` are drawn
once, and the same optimizer steps run eagerly and compiled in alternating rounds (the compiled
module is switched on and off in place), so a drift of the machine's speed hits both.  Reported:
the seconds the first compiled steps took (TorchInductor compiling; a warm cache in
``/tmp/torchinductor_$USER`` makes it shorter), the median seconds per step of each variant and
their ratio.  ``--threads 1`` is what each of the demo recipe's two DDP processes runs with.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from mgv2.train_cli import load_train_config
from mgv2.trainer import Trainer, compile_unavailable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "train" / "demo_stage1.yaml"))
    ap.add_argument("--data", default="runs/demo_synth", help="the stage's data_root")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="eager / compiled rounds, alternating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default=None, help="time batches of this dataset only (default: the mixture's draws)")
    args = ap.parse_args(argv)
    why = compile_unavailable(torch.device("cpu"))
    if why is not None:
        raise SystemExit(f"cannot compile here: {why}")
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="mgv2_bench_compile_"))
    cfg = load_train_config(None, args.config, [f"data_root={args.data}", f"output_dir={out}", "compile=false",
                                                "progress=false", "num_workers=0"])
    tr = Trainer(cfg)
    from mgv2.data import make_loader

    batches = iter(make_loader(tr.dataset, tr.sampler, tr.collator, 0, pin_memory=False))
    names = tr.mixture.names
    chosen = []
    while len(chosen) < args.steps + 2:
        b = next(batches)
        if args.dataset is None or names[b.dataset] == args.dataset:
            chosen.append(b)
    warm, timed = chosen[:2], chosen[2:]

    def run(items) -> float:
        t0 = time.perf_counter()
        for m in items:
            tr._forward_backward([m], float(m.num_answer_tokens))
            tr._optimizer_step()
        return time.perf_counter() - t0

    run(warm)
    decoder = tr.model.llama_model.get_decoder()
    decoder.compile(dynamic=True)
    compiled = decoder._compiled_call_impl
    first = run(warm)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, impl in (("eager", None), ("compiled", compiled)):
            decoder._compiled_call_impl = impl
            times[name].append(run(timed) / len(timed))
    eager, comp = statistics.median(times["eager"]), statistics.median(times["compiled"])
    shapes = sorted({tuple(m.batch.input_ids.shape) for m in timed})
    print(f"{args.config}: {len(timed)} steps x {args.rounds} rounds, {args.threads} thread(s), batches {shapes}")
    print(f"first 2 compiled steps (compiling): {first:.1f} s")
    print(f"eager    {eager:.3f} s/step  (rounds {', '.join(f'{t:.3f}' for t in times['eager'])})")
    print(f"compiled {comp:.3f} s/step  (rounds {', '.join(f'{t:.3f}' for t in times['compiled'])})")
    print(f"compiled / eager speed: {eager / comp:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
