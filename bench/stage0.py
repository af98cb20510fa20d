"""Stage-0 step speed (scripts/pretrain_vision.py): the demo ViT and its patch heads trained in
fp32 against the same step under bf16 autocast (``--precision bf16``), in the same run, on the
same weights and batch.

    .venv/bin/python bench/stage0.py [--model configs/model/demo.yaml] [--batch 64] [--steps 20]
        [--repeats 3] [--threads N]

The batch has the script's shapes (pictures at the model's size; per-patch kind, colour,
occupancy and box labels, about half the patches on an object); the step is the script's own
``train_step`` (its losses with box weight 5, as the recipe; backward; gradient clipping; AdamW
from its ``make_optimizer``).  Each variant starts from a copy of the same weights; the median over ``--repeats`` rounds of ``--steps`` steps is
reported as ms per step, with the ratio against fp32.  On a CPU without AVX512-BF16 / AMX, bf16 is
emulated; the script's ``--precision`` is fp32 by default, and ``auto`` takes bf16 only where
the CPU computes it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from mgv2.config import ModelConfig, load_yaml
from mgv2.synth.world import COLOR_NAMES, KINDS
from mgv2.trainer import native_bf16
from mgv2.vision import EVAViT

sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is not a package
import pretrain_vision as pv


def make_batch(cfg, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    cells = cfg.grid * cfg.grid
    px = torch.randn(batch, 3, cfg.img_size, cfg.img_size, generator=gen)
    on = torch.rand(batch, cells, generator=gen) < 0.5
    kind = torch.randint(1, 1 + len(KINDS), (batch, cells), generator=gen) * on
    colour = torch.randint(1, 1 + len(COLOR_NAMES), (batch, cells), generator=gen) * on
    occ = (torch.rand(batch, cells, pv.SUBCELLS ** 2, generator=gen) < 0.5).float()
    xy = torch.rand(batch, cells, 2, 2, generator=gen).sort(dim=2).values  # x1 < x2, y1 < y2
    box = torch.stack([xy[..., 0, 0], xy[..., 0, 1], xy[..., 1, 0], xy[..., 1, 1]], -1) * on[..., None]
    return px, kind, colour, occ, box


def time_variant(vit, heads, batch, bf16: bool, steps: int, repeats: int) -> float:
    """Median ms per step over ``repeats`` rounds (after one warm-up step)."""
    vit, heads = copy.deepcopy(vit), copy.deepcopy(heads)
    opt = pv.make_optimizer(vit, heads, 1e-3)
    pv.train_step(vit, heads, opt, batch, 5.0, bf16, 1e-3, 0)
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            pv.train_step(vit, heads, opt, batch, 5.0, bf16, 1e-3, i)
        rounds.append((time.perf_counter() - t0) / steps * 1000)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "configs/model/demo.yaml"))
    ap.add_argument("--batch", type=int, default=64, help="scripts/train_demo.sh's stage 0 uses the default, 64")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_yaml(ModelConfig, args.model).vision
    torch.manual_seed(0)
    vit, heads = EVAViT(cfg), pv.PatchHeads(cfg.width, boxes=True)
    batch = make_batch(cfg, args.batch, torch.Generator().manual_seed(0))
    print(f"{Path(args.model).name}: ViT width {cfg.width}, depth {cfg.depth}, {cfg.img_size} px, batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s); native bf16: {native_bf16(torch.device('cpu'))}")
    base = time_variant(vit, heads, batch, False, args.steps, args.repeats)
    print(f"fp32:          {base:7.1f} ms/step  1.00x")
    fast = time_variant(vit, heads, batch, True, args.steps, args.repeats)
    print(f"bf16 autocast: {fast:7.1f} ms/step  {base / fast:.2f}x")


if __name__ == "__main__":
    main()
