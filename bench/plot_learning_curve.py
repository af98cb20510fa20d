"""Learning curve of a staged run: training loss and refer Acc@0.5 against training minutes.

    python bench/plot_learning_curve.py --stages runs/demo/stage1 runs/demo/stage2 runs/demo/stage3 \\
        --evals runs/demo/refer_curve.jsonl --out docs/demo_learning_curve.png

Inputs
  * each stage folder's ``log.jsonl`` (written by the trainer: ``step``, ``loss``, ``time`` per
    ``log_every`` steps).  Minutes are wall-clock training minutes, stages laid end to end (the
    gap between stages, model loading and evaluation are not counted);
  * optionally ``--evals``: a jsonl of refer evaluations, one line per (checkpoint, split):
    ``{"stage": 1, "step": 500, "split": "val", "acc50": 0.42}`` (``scripts/train_demo.sh`` writes
    it with ``bench/plot_learning_curve.py --record``).  Each point is placed at the training minute
    of its stage and step.

``--record`` appends lines to the evals jsonl from a ``mgv2 eval refcoco --json`` output file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_log(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"no log.jsonl in {folder}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_minutes(lines: list[dict]) -> list[float]:
    """Minutes since the stage started for each log line.  The start is the first line's time
    minus its steps at the pace of the first interval."""
    times = [ln["time"] for ln in lines]
    steps = [ln["step"] for ln in lines]
    if len(lines) > 1:
        pace = (times[1] - times[0]) / max(1, steps[1] - steps[0])
    else:
        pace = 0.0
    t0 = times[0] - pace * steps[0]
    return [(t - t0) / 60.0 for t in times]


def stage0_minutes(path: str | Path | None) -> float:
    """Minutes of the vision pretraining ("stage 0", scripts/pretrain_vision.py), from the JSON it
    writes beside the weights; 0 when no stage 0 ran."""
    if path is None or not Path(path).is_file():
        return 0.0
    return float(json.loads(Path(path).read_text())["minutes"])


def build_curves(stages: list[Path], start: float = 0.0):
    """-> (loss points [(minute, loss, stage)], refer-step loss points [(minute, loss)],
    {stage: [(step, absolute minute)]}, stage ends).  ``start``: minutes spent before stage 1."""
    loss_pts, refer_pts, step_time, ends = [], [], {}, []
    offset = start
    for i, folder in enumerate(stages, start=1):
        lines = read_log(folder)
        mins = stage_minutes(lines)
        stage = i
        train_yaml = folder / "train.yaml"
        if train_yaml.is_file():
            import yaml

            stage = int(yaml.safe_load(train_yaml.read_text()).get("stage", i))
        pts = [(offset + m, ln["loss"]) for m, ln in zip(mins, lines)]
        loss_pts.extend((m, loss, stage) for m, loss in pts)
        refer_pts.extend((offset + m, ln["step_loss"]) for m, ln in zip(mins, lines)
                         if ln.get("datasets") == ["refcoco"] and "step_loss" in ln)
        step_time[stage] = [(ln["step"], offset + m) for m, ln in zip(mins, lines)]
        offset += mins[-1]
        ends.append((stage, offset))
    return loss_pts, refer_pts, step_time, ends


def minute_of(step_time: dict, stage: int, step: int) -> float | None:
    table = step_time.get(stage)
    if not table:
        return None
    best = min(table, key=lambda st: abs(st[0] - step))
    return best[1]


def record(args) -> int:
    payload = json.loads(Path(args.record).read_text())
    out = Path(args.evals)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for split, m in payload.get("splits", {}).items():
            metrics = m.get("metrics", m)
            line = {"stage": args.stage, "step": args.step, "split": split, "acc50": metrics["acc50"],
                    "n": metrics.get("n")}
            if args.label:
                line["label"] = args.label
            f.write(json.dumps(line) + "\n")
    return 0


def plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = stage0_minutes(args.stage0)
    loss_pts, refer_pts, step_time, ends = build_curves([Path(s) for s in args.stages], start)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if start:
        ax.axvspan(0, start, color="0.9", label="stage 0: vision pretraining")
    ax.plot([p[0] for p in loss_pts], [p[1] for p in loss_pts], color="tab:blue", lw=1,
            label="train loss (mean over log_every steps)")
    if refer_pts:
        ax.plot([p[0] for p in refer_pts], [p[1] for p in refer_pts], ".", color="tab:cyan", ms=3,
                label="loss of a refer step")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("loss (answer tokens)", color="tab:blue")
    ax.set_yscale("log")
    for stage, end in ends[:-1]:
        ax.axvline(end, color="grey", ls=":", lw=1)
        ax.text(end, ax.get_ylim()[1], f" stage {stage + 1}", va="top", fontsize=8, color="grey")
    if args.evals and Path(args.evals).is_file():
        ax2 = ax.twinx()
        evals = [json.loads(x) for x in Path(args.evals).read_text().splitlines() if x.strip()]
        for split, colour in (("val", "tab:red"), ("testA", "tab:orange"), ("testB", "tab:green")):
            pts = []
            for e in evals:
                if e["split"] != split:
                    continue
                m = e.get("minutes")
                if m is None:
                    m = minute_of(step_time, e["stage"], e["step"])
                if m is not None:
                    pts.append((m, 100 * e["acc50"]))
            pts.sort()
            if pts:
                ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, ms=4,
                         label=f"refer Acc@0.5 {split}")
        ax2.set_ylabel("refer Acc@0.5 (%)")
        ax2.set_ylim(0, 100)
        ax2.axhline(90, color="tab:red", ls="--", lw=0.8)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="*", default=[], help="stage output folders, in training order")
    p.add_argument("--evals", default=None, help="refer evaluations jsonl")
    p.add_argument("--stage0", default=None, help="vision0.json of scripts/pretrain_vision.py: its minutes come first")
    p.add_argument("--out", default="docs/demo_learning_curve.png")
    p.add_argument("--title", default="demo preset: loss and refer accuracy")
    p.add_argument("--record", default=None, help="append this `mgv2 eval refcoco --json` output to --evals")
    p.add_argument("--stage", type=int, default=1, help="with --record: the stage of the checkpoint")
    p.add_argument("--step", type=int, default=0, help="with --record: the step of the checkpoint")
    p.add_argument("--label", default=None, help="with --record: a free label")
    args = p.parse_args(argv)
    if args.record:
        if not args.evals:
            p.error("--record needs --evals")
        return record(args)
    if not args.stages:
        p.error("--stages: give at least one stage folder")
    return plot(args)


if __name__ == "__main__":
    raise SystemExit(main())
