"""``mgv2 train``: run one training stage from a TrainConfig YAML.

    mgv2 train --stage 2                                   # configs/train/stage2.yaml (7B recipe)
    mgv2 train --config configs/train/tiny_stage2.yaml data_root=runs/synth steps=200
    mgv2 train --stage 2 --resume                          # continue from output_dir/checkpoints/latest
    torchrun --nproc_per_node 4 -m mgv2.cli train --stage 3
    mgv2 train --config configs/train/tiny_stage1.yaml --print-config

``key=value`` arguments override the config (``schedule.lr=1e-4``, ``init_from=null``,
``output_dir=/tmp/run``); ``--set`` is the same with a flag.  Stage N starts from
``runs/<name>/stage{N-1}/final`` unless the config or an override says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgv2.config import PACKAGE_DIR, ConfigError, TrainConfig, load_yaml, save_yaml


def default_config(stage: int) -> Path:
    """``configs/train/stage{N}.yaml`` in the working directory, else next to the package."""
    rel = Path("configs") / "train" / f"stage{stage}.yaml"
    return rel if rel.is_file() else PACKAGE_DIR.parent / rel


def load_train_config(stage: int | None, config: str | None, overrides: list[str]) -> TrainConfig:
    if config is None and stage is None:
        raise ConfigError("say which stage: --stage N (configs/train/stageN.yaml) or --config FILE")
    path = Path(config) if config is not None else default_config(stage)
    cfg = load_yaml(TrainConfig, path, overrides)
    if stage is not None and cfg.stage != stage:
        raise ConfigError(f"{path} is a stage-{cfg.stage} config but --stage {stage} was given; "
                          f"drop --stage or pass stage={stage}")
    return cfg


def cmd_train(args) -> int:
    import sys

    from mgv2.trainer import run_stage

    cfg = load_train_config(args.stage, args.config, list(args.overrides) + list(args.set))
    if args.print_config:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            save_yaml(cfg, Path(tmp) / "train.yaml")
            sys.stdout.write((Path(tmp) / "train.yaml").read_text())
        cfg.model_config()  # validates the model settings too
        return 0
    result = run_stage(cfg, resume=args.resume, device=args.device)
    if result.history:
        last = result.history[-1]
        print(f"stage {cfg.stage}: step {last.step}, loss {last.loss:.4f}; output {result.output_dir}")
    return 0


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one stage (configs/train/*.yaml); runs under torchrun too",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, default=None, help="1, 2 or 3 (default config: configs/train/stageN.yaml)")
    p.add_argument("--config", default=None, help="a TrainConfig YAML (e.g. configs/train/tiny_stage2.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its latest checkpoint")
    p.add_argument("--device", default="auto", help="cpu, cuda (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="same as a KEY=VALUE argument")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. schedule.lr=1e-4")
    p.set_defaults(func=cmd_train)
