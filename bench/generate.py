"""Generation speed on the tiny preset (CPU): batched vs one prompt at a time vs plain
transformers ``generate`` on the same input embeddings.

    .venv/bin/python bench/generate.py [--prompts 32] [--images 8] [--new-tokens 20] [--repeats 3]

Every variant decodes exactly ``--new-tokens`` tokens greedily (min = max), so the work is
the same; the batched and the single variants must give identical texts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mgv2.config import ModelConfig, load_yaml
from mgv2.model import GenerationSettings
from mgv2.pipeline import Pipeline
from mgv2.sample import Sample, Turn

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "[refer] red balloon",
    "[refer] give me the location of the blue box on the left",
    "[vqa] how many balls are there ?",
    "[identify] what is it in {<10><20><40><60>}",
    "[detection] balloon",
    "[caption] Briefly describe this image.",
    "[grounding] describe this image in detail",
    "[vqa] Based on the image, respond to this question with a short answer: what colour is the cup ?",
]


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (120 + 10 * i, 160, 3), dtype=np.uint8)) for i in range(n)]


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "configs/model/tiny.yaml"))
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    pipe = Pipeline.from_config(load_yaml(ModelConfig, args.model), device="cpu", verbose=False)
    imgs = images(args.images)
    img_list = [imgs[i % len(imgs)] for i in range(args.prompts)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    settings = GenerationSettings(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    n_tokens = args.prompts * args.new_tokens

    def batched():
        return pipe.predict(img_list, prompts, settings)

    def one_at_a_time():
        return [pipe.predict([im], [p], settings)[0] for im, p in zip(img_list, prompts)]

    emb = pipe.embed_images(imgs)
    samples = [Sample(image="x", turns=[Turn(p)]) for p in prompts]
    batch = pipe.prompt_batch(samples, [i % len(imgs) for i in range(args.prompts)])
    embeds = pipe.model.input_embeddings(batch, emb)

    def plain_hf():
        with torch.no_grad():
            return pipe.model.llama_model.generate(
                inputs_embeds=embeds, attention_mask=batch.attention_mask, max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pipe.model.pad_token_id,
                eos_token_id=pipe.model.eos_token_id,
            )

    t_single, single = timed(one_at_a_time, max(1, args.repeats - 1))
    t_batched, texts = timed(batched, args.repeats)
    t_hf, _ = timed(plain_hf, args.repeats)
    assert texts == single, "batched and one-at-a-time generation disagree"
    rows = {
        "one_at_a_time": t_single,
        "mgv2_batched": t_batched,
        "plain_transformers_generate_same_embeds": t_hf,
    }
    print(f"tiny preset, CPU threads {torch.get_num_threads()}, {args.prompts} prompts on {args.images} images, "
          f"{args.new_tokens} new tokens each (median of {args.repeats})")
    print(f"{'variant':<42} {'seconds':>8} {'tokens/s':>9} {'vs one-at-a-time':>17}")
    for name, t in rows.items():
        print(f"{name:<42} {t:8.3f} {n_tokens / t:9.1f} {t_single / t:16.2f}x")
    print(f"mgv2 batched vs plain transformers generate: {t_hf / t_batched:.2f}x "
          "(includes image encoding and prompt building that the plain call skips)")
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"seconds": v, "tokens_per_s": n_tokens / v} for k, v in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
