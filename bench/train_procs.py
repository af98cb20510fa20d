"""How to spend a small CPU: one training process with N threads, or N single-threaded DDP
processes (torchrun, gloo), on the same stage config, global batch and data, in the same run.

    .venv/bin/python bench/train_procs.py [--config configs/train/demo_stage1.yaml] \\
        [--data runs/demo_synth] [--steps 150] [--procs 2]

Each variant runs ``mgv2 train`` for ``--steps`` steps into a temporary folder (nothing kept);
the speed is read from the trainer's own ``log.jsonl`` (``time`` per ``log_every`` steps) over
the steps after the first logged one, so model building and data indexing are left out.  Both
variants see the same global batches (the mixture is seeded; under DDP each process takes its
slice), so the comparison is of the same work.  ``scripts/train_demo.sh`` uses the faster one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, data: str, steps: int, procs: int, threads: int, out: Path) -> float:
    """Steps per second of one ``mgv2 train`` run (after its first logged step)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    args = ["-m", "mgv2.cli", "train", "--config", config, f"data_root={data}", f"steps={steps}",
            f"output_dir={out}", f"save_every={steps}", "log_every=10", "num_workers=0"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    else:
        cmd = [sys.executable, *args]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    timed = [x for x in lines if "time" in x and "step" in x]
    if len(timed) < 2:
        raise SystemExit(f"{out}: too few logged steps to time; raise --steps")
    first, last = timed[0], timed[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/train/demo_stage1.yaml")
    ap.add_argument("--data", default="runs/demo_synth", help="an `mgv2 synth` folder")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--procs", type=int, default=2, help="processes (and threads of the one-process run)")
    args = ap.parse_args()
    if not (Path(args.data) / "sources.json").is_file():
        raise SystemExit(f"{args.data} is not an `mgv2 synth` folder (no sources.json); run mgv2 synth --out {args.data}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {f"1 process x {args.procs} threads": (1, args.procs),
                    f"{args.procs} DDP processes x 1 thread": (args.procs, 1)}
        for name, (procs, threads) in variants.items():
            results[name] = run(args.config, args.data, args.steps, procs, threads, Path(tmp) / f"p{procs}")
            print(f"{name}: {results[name]:.2f} steps/s", flush=True)
    base = next(iter(results.values()))
    print(f"\n{args.config}, {args.steps} steps, cpu count {os.cpu_count()}\n")
    print("| variant | steps/s | vs one process |\n|---|---|---|")
    for name, v in results.items():
        print(f"| {name} | {v:.2f} | {v / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
