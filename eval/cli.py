"""``mgv2 eval BENCHMARK``: predictions (resumable, sharded under torchrun) -> official metrics.

    mgv2 eval refcoco --split all --images /data/coco/train2014
    mgv2 eval refcoco --split val --predictions runs/eval/refcoco/val/predictions.jsonl --json
    mgv2 eval vsr --images /data/coco/val2017 --limit 100
    mgv2 eval identify --data runs/synth/refcoco_eval --images runs/synth/images --split all
    mgv2 eval grounding --data runs/synth/flickr30k --images runs/synth/images
    mgv2 eval okvqa --data OpenEnded_mscoco_val2014_questions.json \\
        --annotations mscoco_val2014_annotations.json --images /data/coco/val2014
    torchrun --nproc_per_node 4 -m mgv2.cli eval refcocog --split all --images ...

Outputs under ``--out`` (default ``runs/eval/<benchmark>``): ``<split>/predictions.jsonl``,
``<split>/metrics.json``, ``metrics.json``, ``report.md``, ``iou_hist.png`` (box benchmarks) and
``worst_cases.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mgv2.config import DEFAULT_MODEL
from mgv2.errors import MGV2Error


def add_eval_parser(sub) -> argparse.ArgumentParser:
    from eval.benchmarks import BENCHMARKS

    p = sub.add_parser(
        "eval",
        help="evaluate on a benchmark (RefCOCO/+/g, identify, grounding, VSR, OK-VQA, VQAv2, GQA, VizWiz, "
             "A-OKVQA, detection)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("benchmark", choices=list(BENCHMARKS))
    p.add_argument("--split", default=None, help="a split of the benchmark, or 'all' (default: the first: val/test)")
    p.add_argument("--data", default=None, help="annotation file or folder (defaults: ../shared/data for RefCOCO and VSR)")
    p.add_argument("--annotations", default=None, help="VQAv2/OK-VQA annotations json (with --data = questions json)")
    p.add_argument("--images", default=None, help="folder of the images the annotations name")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model config YAML (default {DEFAULT_MODEL}, the bundled demo model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--checkpoint", default=None, help="MiniGPT-v2 checkpoint (released .pth or mgv2 folder)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<benchmark>)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per generation batch (default 32)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images (default 2; 0 = inline)")
    p.add_argument("--iou", choices=["continuous", "official"], default="continuous",
                   help="Acc@0.5 convention: continuous IoU >= 0.5 (default) or official +1-pixel IoU > 0.5")
    p.add_argument("--vqa-variant", choices=["official", "legacy"], default="official",
                   help="VQA accuracy: current GT-Vision-Lab evaluator (default) or LAVIS/MiniGPT-4 always-normalise")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items of each split")
    p.add_argument("--predictions", default=None,
                   help="rescore this predictions jsonl ({index, answer} per line) without loading a model")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy decoding length (default: the benchmark's; SPEC: 20, grounding: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed for randomly initialised weights (tiny preset)")
    p.add_argument("--worst", type=int, default=16, help="cases on the contact sheet (default 16)")
    p.add_argument("--world", default=None, metavar="DIR",
                   help="the `mgv2 synth` folder the benchmark came from: also judge the answers by the world's own "
                        "scenes (refer: accuracy by expression family and by objects in the picture; identify: how "
                        "often the answer names the boxed object)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-prefix-sharing", action="store_true",
                   help="run every prompt through the model's generate (image prefix not shared)")
    p.set_defaults(func=cmd_eval)
    return p


def _device(name: str, local_rank: int, world: int) -> str:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank}" if world > 1 else "cuda"
        return "cpu"
    return name


def _images_present(items, limit: int | None) -> None:
    from tasks.readers.base import DataError

    missing = [it.image for it in items[:limit] if isinstance(it.image, (str, Path)) and not Path(it.image).is_file()]
    if missing:
        unique = list(dict.fromkeys(str(m) for m in missing))
        raise DataError(
            f"{len(unique)} image file(s) not found, e.g. {unique[0]}; pass the image folder with --images"
        )


def cmd_eval(args) -> int:
    from eval.engine import close_distributed, init_distributed

    # rescoring needs no process group: under torchrun only rank 0 scores
    dist = init_distributed() if not args.predictions else None
    try:
        return _run_eval(args, dist)
    finally:
        close_distributed(dist)


def _run_eval(args, dist) -> int:
    from eval.benchmarks import Source, get_benchmark, score
    from eval.engine import EvalItem, read_predictions, run_generation
    from eval.report import SplitResult, write_outputs

    bench = get_benchmark(args.benchmark)
    splits = bench.resolve_splits(args.split)
    if args.predictions and len(splits) != 1:
        raise MGV2Error("--predictions rescores one split: pass --split too")
    if args.limit is not None and args.limit < 0:
        raise MGV2Error("--limit must be >= 0")
    if args.max_new_tokens is None:
        args.max_new_tokens = bench.max_new_tokens
    if args.max_new_tokens < 1:
        raise MGV2Error("--max-new-tokens must be >= 1")
    source = Source(
        Path(args.data) if args.data else None,
        Path(args.annotations) if args.annotations else None,
        Path(args.images) if args.images else None,
    )
    judge = None
    if args.world:
        from eval.world import WorldJudge

        if bench.metric not in ("refer", "identify_exact"):
            raise MGV2Error(f"--world judges refer and identify answers; {bench.name} has none")
        judge = WorldJudge(args.world)
    out = Path(args.out) if args.out else Path("runs") / "eval" / bench.name
    is_main = dist.is_main if dist is not None else int(os.environ.get("RANK", "0")) == 0
    if not is_main and dist is None:
        return 0
    log = sys.stderr if args.json else sys.stdout
    pipes: list = []  # the model, built on first need and shared by the splits
    settings_info = {
        "model": args.model if not args.predictions else None,
        "checkpoint": args.checkpoint,
        "predictions": args.predictions,
        "iou": args.iou,
        "vqa_variant": args.vqa_variant,
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "world": args.world,
    }
    results = []
    for split in splits:
        records = bench.load(source, split)
        items = [EvalItem(i, rec.image, bench.prompt(rec)) for i, rec in enumerate(records)]
        n = len(items) if args.limit is None else min(args.limit, len(items))
        if args.predictions:
            found = read_predictions(args.predictions, len(items))
        else:
            _images_present(items, n)
            from mgv2.model import GenerationSettings

            def get_pipe():
                if not pipes:
                    pipes.append(_pipeline(args, dist))
                return pipes[0]

            run_info = {
                "benchmark": bench.name, "split": split, "model": str(args.model), "overrides": list(args.overrides),
                "checkpoint": args.checkpoint, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
            }
            found = run_generation(
                get_pipe, items, out / split, limit=n, batch_size=args.batch_size, workers=args.workers,
                settings=GenerationSettings(max_new_tokens=args.max_new_tokens), run_info=run_info, dist=dist,
                progress=not args.no_progress, desc=f"{bench.name} {split}", share_prefix=not args.no_prefix_sharing,
            )
            if not is_main:
                continue
        answers = [found.get(i) for i in range(n)]
        n_missing = sum(a is None for a in answers)
        if n_missing and args.predictions:
            print(f"mgv2 eval: warning: {n_missing} of {n} items have no prediction; they count as wrong",
                  file=sys.stderr)
        metrics, rows = score(bench, records[:n], answers, plus_one=args.iou == "official",
                              vqa_variant=args.vqa_variant, source=source, split=split)
        if judge is not None:
            from eval.world import identify_breakdown, refer_breakdown

            metrics["world"] = (refer_breakdown(judge, records[:n], rows, plus_one=args.iou == "official")
                                if bench.metric == "refer" else identify_breakdown(judge, records[:n], rows))
        results.append(SplitResult(split, records[:n], rows, metrics))
    if not is_main:
        return 0
    payload = write_outputs(out, bench, results, settings_info, plus_one=args.iou == "official", worst=args.worst)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        _print_summary(bench, results, out, log)
    return 0


def _pipeline(args, dist):
    import torch

    from mgv2.config import ModelConfig, load_yaml
    from mgv2.pipeline import Pipeline

    cfg = load_yaml(ModelConfig, args.model, args.overrides)
    torch.manual_seed(args.seed)  # identical random weights on every rank and every rerun
    device = _device(args.device, dist.local_rank if dist else 0, dist.world if dist else 1)
    return Pipeline.from_config(cfg, checkpoint=args.checkpoint, device=device,
                                verbose=not args.json and (dist is None or dist.is_main))


def _print_summary(bench, results, out: Path, stream) -> None:
    for r in results:
        m = r.metrics
        if bench.metric == "refer":
            line = (f"Acc@0.5 {100 * m['acc50']:.2f} ({m['iou_convention']}; continuous {100 * m['acc50_continuous']:.2f}, "
                    f"official {100 * m['acc50_official']:.2f})  Acc@0.75 {100 * m['acc75']:.2f}  "
                    f"mIoU {100 * m['miou']:.2f}  centre {100 * m['centre_acc']:.2f}  "
                    f"parse failures {100 * m['parse_failure_rate']:.2f}%")
        elif bench.metric == "identify_exact":
            line = (f"exact (any reference) {100 * m['accuracy']:.2f}  exact light {100 * m['exact_light']:.2f}  "
                    f"token F1 {100 * m['token_f1']:.2f}  ({m['n_references']} expressions)")
        elif bench.metric == "phrase_recall":
            line = (f"phrase recall {100 * m['phrase_recall']:.2f}  text recall {100 * m['text_recall']:.2f}  "
                    f"phrase precision {100 * m['phrase_precision']:.2f}  ({m['n_phrases']} phrases)  "
                    f"parse failures {100 * m['parse_failure_rate']:.2f}%")
        elif bench.metric == "coco_map":
            line = (f"mAP {100 * m['map50_95']:.2f}  AP50 {100 * m['map50']:.2f}  AP75 {100 * m['map75']:.2f}  "
                    f"(supervision {100 * m['supervision']['map50_95']:.2f})")
        else:
            line = f"accuracy {100 * m['accuracy']:.2f} ({m['metric']})"
        if "names_object" in m.get("world", {}):
            line += (f"  names the object (world) {100 * m['world']['names_object']:.2f}"
                     f"  exact-match ceiling {100 * m['world']['exact_ceiling']:.2f}")
        print(f"{bench.name} {r.split} (n={m['n']}): {line}", file=stream)
    print(f"report: {out / 'report.md'}", file=stream)

