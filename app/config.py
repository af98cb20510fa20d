"""Where the app's settings come from: CLI arguments after ``--``, else environment, else defaults.

    streamlit run app/main.py                                        # bundled default model
    streamlit run app/main.py -- --model CONFIG --checkpoint PATH    # real weights
    MGV2_MODEL=CONFIG MGV2_CHECKPOINT=PATH streamlit run app/main.py  # the same with env vars

The default model is the bundled demo model (``mgv2.config.DEFAULT_MODEL``, the one place every
command takes it from); its config names its checkpoint (``mgv2:demo_model``).

Environment variables:

* ``MGV2_MODEL``, ``MGV2_CHECKPOINT``, ``MGV2_DEVICE`` -- the model (same as ``--model``,
  ``--checkpoint``, ``--device``);
* ``MGV2_EVAL_RUN`` -- the evaluation run folder the second page opens first (``--run``);
* ``MGV2_APP_MAX_UPLOAD_MB`` -- the upload size limit in MB (``--max-upload-mb``, default 20);
* ``MGV2_APP_FAKE_ANSWER`` -- **TEST HOOK, not a feature.**  When set, the app loads no model
  and every "generation" returns exactly this text.  It exists so the browser test can drive the
  real UI (buttons, text box, parsing, drawing) with a deterministic answer and check the drawn
  pixels; the page shows a warning banner whenever it is active.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mgv2.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]  # the repository root

DEFAULT_CHECKPOINT: str | None = None  # None: the checkpoint the model config names

DEFAULT_MAX_UPLOAD_MB = 20
FAKE_ANSWER_ENV = "MGV2_APP_FAKE_ANSWER"


@dataclass(frozen=True)
class AppConfig:
    model: str
    checkpoint: str | None
    device: str
    eval_run: str | None
    max_upload_mb: int
    fake_answer: str | None  # test hook (see module docstring); None in normal use

    @property
    def model_path(self) -> Path:
        return resolve(self.model)

    @property
    def checkpoint_path(self) -> Path | None:
        return resolve(self.checkpoint) if self.checkpoint else None


def resolve(path: str) -> Path:
    """A path as given; relative paths that do not exist from the working directory are taken
    relative to the repository root (so ``configs/model/tiny.yaml`` works from anywhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return ROOT / p


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamlit run app/main.py --", allow_abbrev=False, add_help=False)
    ap.add_argument("--model")
    ap.add_argument("--checkpoint")
    ap.add_argument("--device")
    ap.add_argument("--run", dest="eval_run")
    ap.add_argument("--max-upload-mb", type=int)
    return ap


def _script_args(argv: list[str]) -> list[str]:
    """Arguments meant for the app: ``streamlit run app/main.py -- ARGS`` leaves
    ``sys.argv == ["app/main.py", *ARGS]``.  Anything else (pytest's argv under AppTest) is ignored."""
    if not argv:
        return []
    try:
        is_app = Path(argv[0]).resolve().parent == Path(__file__).resolve().parent
    except OSError:
        is_app = False
    return argv[1:] if is_app else []


def _int_env(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number of megabytes") from None


def load_config(argv: list[str] | None = None, env: dict | None = None) -> AppConfig:
    """CLI (``argv``, default ``sys.argv``) > environment > defaults."""
    env = dict(os.environ if env is None else env)
    args, _unknown = _parser().parse_known_args(_script_args(sys.argv if argv is None else argv))
    checkpoint = args.checkpoint or env.get("MGV2_CHECKPOINT") or DEFAULT_CHECKPOINT
    max_mb = args.max_upload_mb if args.max_upload_mb is not None else _int_env(
        env, "MGV2_APP_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB
    )
    return AppConfig(
        model=args.model or env.get("MGV2_MODEL") or DEFAULT_MODEL,
        checkpoint=checkpoint or None,
        device=args.device or env.get("MGV2_DEVICE") or "auto",
        eval_run=args.eval_run or env.get("MGV2_EVAL_RUN") or None,
        max_upload_mb=max(1, max_mb),
        fake_answer=env.get(FAKE_ANSWER_ENV) or None,
    )
