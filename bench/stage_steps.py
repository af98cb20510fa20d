"""Shared by the training-step benchmarks that time one stage's real steps (bench/compile.py,
bench/length_chunks.py): the stage's trainer built as ``mgv2 train`` builds it, the items of some of
its drawn iterations, and the seconds per optimizer step over prebuilt batches."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The arguments every stage-step benchmark takes: the stage config and data, steps per round,
    rounds, threads and an optional single dataset."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "train" / "demo_stage1.yaml"))
    ap.add_argument("--data", default="runs/demo_synth", help="the stage's data_root")
    ap.add_argument("--steps", type=int, default=steps, help="optimizer steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the variants, alternating")
    ap.add_argument("--threads", type=int, default=1, help="what each of the demo recipe's two DDP processes runs with")
    ap.add_argument("--dataset", default=None, help="only batches of this dataset of the stage")
    return ap


def stage_trainer(config: str, data: str, overrides: list[str] = ()):
    """The :class:`mgv2.trainer.Trainer` of ``config`` on ``data`` (one process, eager, no workers, a
    throw-away output folder); its vision cache comes from ``vision_cache_dir`` where a stage saved one."""
    from mgv2.train_cli import load_train_config
    from mgv2.trainer import Trainer

    out = Path(tempfile.mkdtemp(prefix="mgv2_bench_"))
    cfg = load_train_config(None, config, [f"data_root={data}", f"output_dir={out}", "compile=false",
                                           "progress=false", "num_workers=0", *overrides])
    return Trainer(cfg)


def draw_items(trainer, n: int, dataset: str | None = None, rank: int = 0, world: int = 1) -> list[list]:
    """The built samples (TrainItems) of the first ``n`` iterations of the stage's mixture that draw
    ``dataset`` (any, when None), as process ``rank`` of ``world`` would get them."""
    from mgv2.data import MixtureBatchSampler

    sampler = MixtureBatchSampler(trainer.mixture, rank, world)
    names = trainer.mixture.names
    draws = []
    for keys in sampler:
        if dataset is not None and names[keys[0][1].dataset] != dataset:
            continue
        draws.append([trainer.dataset[key] for key in keys])
        if len(draws) == n:
            return draws
    raise AssertionError("unreachable: the sampler runs forever")


def time_steps(trainer, steps: list[list]) -> float:
    """Seconds per optimizer step (forward + backward of each step's batches, then AdamW) over
    ``steps``, each a list of collated TrainBatches."""
    t0 = time.perf_counter()
    for micro in steps:
        trainer._forward_backward(micro, float(sum(tb.num_answer_tokens for tb in micro)))
        trainer._optimizer_step()
    return (time.perf_counter() - t0) / len(steps)
