"""Training-step speed on the tiny preset (CPU): mgv2's step against one written the way the
official MiniGPT-v2 code does it, in the same run, on the same model, samples and weights.

    .venv/bin/python bench/train.py [--batch 8] [--steps 8] [--repeats 5] [--threads N]

* ``mgv2``: the trainer's step: the model gets a ready :class:`mgv2.prompt.Batch` (ids, masks,
  pixels; tokenising and padding happened in the data pipeline, DataLoader workers, off the
  training step) and ``answer_loss`` applies the LM head only where a label follows;
* ``mgv2, LM head on every position``: the same batch through ``forward`` (transformers' loss
  over logits of every position), to show what the answer-only head saves;
* ``mgv2 + encode in step``: the same, but encoding and collating run on the training thread
  (what it costs without workers);
* ``mgv2, bf16 autocast``: the mgv2 step under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  (``precision: bf16`` in a train config; fp32 master weights and optimizer state); on a CPU with
  AVX512-BF16 / AMX the matmuls run in bf16;
* ``mgv2, bf16, frozen ViT``: the bf16 step with the ViT frozen (the demo stages' ``trainable``);
* ``mgv2, bf16, frozen ViT + vision cache``: that step in a stage with ``vision_cache: true``:
  the batch carries no pixels, the step starts from the pictures' ViT tokens computed once
  (``embed_vision_features``); the pictures' decode and resize, also gone in such a stage, are not
  in any variant here (their batch is prebuilt);
* ``original-style``: strings go into ``forward``, which wraps the prompt sample by sample
  around the image embeddings (``prompt_wrap``), tokenises the answers, concatenates input and
  output embeddings sample by sample (``concat_emb_input_output``) and builds the targets.

Each variant runs forward + backward + AdamW step; the median over ``--repeats`` rounds of
``--steps`` steps is reported as samples/s and tokens/s (non-padding positions, image
positions included), with the ratio against the original-style step.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo's packages before bench/ (which has an eval.py)

import numpy as np
import torch
from PIL import Image
from torch import nn

from mgv2.config import ModelConfig, load_yaml
from mgv2.pipeline import Pipeline
from mgv2.prompt import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_WRAP, TEMPLATE
from mgv2.sample import Sample
from mgv2.trainer import native_bf16
from tasks import TASKS
from tasks.records import CaptionRecord, RegionRecord, VQARecord


def make_samples(n: int) -> list[Sample]:
    """A mix of refer / identify / vqa / caption samples on random pictures."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        w, h = 160, 120 + 8 * (i % 5)
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        box = (10.0 + i, 12.0, 90.0 + i, 100.0)
        kind = i % 4
        if kind == 0:
            rec, task = RegionRecord(im, w, h, "the red balloon on the left of the box", box), TASKS["refer"]
        elif kind == 1:
            rec, task = RegionRecord(im, w, h, "a small blue cup", box), TASKS["identify"]
        elif kind == 2:
            rec, task = VQARecord(im, "what colour is the ball next to the kite?", ["red"] * 7 + ["pink"] * 3), TASKS["vqa"]
        else:
            rec, task = CaptionRecord(im, "three balloons and a striped box on a checkered floor"), TASKS["caption"]
        samples.append(task.build(rec, random.Random(i)))
    return samples


class OriginalStyle(nn.Module):
    """The official ``MiniGPTBase.forward`` structure on mgv2's parts: the model receives
    strings and tokenises them itself, one sample at a time where the original does."""

    def __init__(self, model, tokenizer, max_txt_len: int = 1024) -> None:
        super().__init__()
        self.model = model
        self.tok = tokenizer
        self.max_txt_len = max_txt_len

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.llama_model.get_input_embeddings()(ids)

    def prompt_wrap(self, img_embeds, prompts):
        """Per sample: split at <ImageHere>, tokenise both halves, embed, concatenate, pad."""
        embs, lens = [], []
        for img, prompt in zip(img_embeds, prompts):
            before, after = prompt.split(IMAGE_PLACEHOLDER)
            b = self.tok(before, return_tensors="pt", add_special_tokens=False).input_ids
            a = self.tok(after, return_tensors="pt", add_special_tokens=False).input_ids
            e = torch.cat([self.embed(b)[0], img, self.embed(a)[0]], dim=0)
            embs.append(e)
            lens.append(e.shape[0])
        L = max(lens)
        pad = self.embed(torch.tensor([self.tok.pad_token_id]))[0]
        wrapped = pad.expand(len(embs), L, -1).clone()
        atts = torch.zeros(len(embs), L, dtype=torch.long)
        for i, e in enumerate(embs):
            wrapped[i, : lens[i]] = e
            atts[i, : lens[i]] = 1
        return wrapped, atts

    def forward(self, pixels, instructions, answers):
        img_embeds = self.model.embed_images(pixels)
        prompts = [TEMPLATE.format(f"{IMAGE_WRAP} {q} ") for q in instructions]
        cond_embeds, cond_atts = self.prompt_wrap(img_embeds, prompts)
        self.tok.padding_side = "right"
        regress = self.tok([a + "</s>" for a in answers], return_tensors="pt", padding="longest",
                           truncation=True, max_length=self.max_txt_len, add_special_tokens=False)
        regress_embeds = self.embed(regress.input_ids)
        # concat_emb_input_output: answer right after each sample's real input, padding after it
        rows, atts, in_lens = [], [], []
        for i in range(cond_embeds.shape[0]):
            n = int(cond_atts[i].sum())
            in_lens.append(n)
            rows.append(torch.cat([cond_embeds[i][:n], regress_embeds[i], cond_embeds[i][n:]]))
            atts.append(torch.cat([cond_atts[i][:n], regress.attention_mask[i], cond_atts[i][n:]]))
        inputs = torch.stack(rows)
        att = torch.stack(atts)
        part_targets = regress.input_ids.masked_fill(regress.input_ids == self.tok.pad_token_id, IGNORE_INDEX)
        bos = self.embed(torch.tensor([[self.tok.bos_token_id]])).expand(inputs.shape[0], -1, -1)
        inputs = torch.cat([bos, inputs], dim=1)
        att = torch.cat([att[:, :1], att], dim=1)
        targets = torch.full(att.shape, IGNORE_INDEX, dtype=torch.long)
        for i, target in enumerate(part_targets):
            targets[i, in_lens[i] + 1 : in_lens[i] + len(target) + 1] = target  # +1: the BOS
        out = self.model.llama_model(inputs_embeds=inputs, attention_mask=att, labels=targets, use_cache=False)
        return out.loss, int(att.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "configs/model/tiny.yaml"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = load_yaml(ModelConfig, args.model, ["lora.dropout=0.0"])
    pipe = Pipeline.from_config(cfg, device="cpu", verbose=False)
    samples = make_samples(args.batch)
    pixels = pipe.processor.batch([s.image for s in samples])
    instructions = [s.turns[0].instruction for s in samples]
    answers = [s.turns[0].answer for s in samples]
    enc = pipe.encoder

    def encode():
        return enc.collate([enc.encode_train(s) for s in samples], padding_side="right", pixel_values=pixels)

    prebuilt = encode()
    tokens_mgv2 = int(prebuilt.attention_mask.sum())
    no_pixels = dataclasses.replace(prebuilt, pixel_values=None)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        vit_tokens = pipe.model.vision_features(pixels)  # what the stage's vision cache holds

    def make_runner(kind: str):
        model = copy.deepcopy(pipe.model).train()
        if kind in ("bf16_frozen", "bf16_cache"):  # the demo stages' frozen ViT (trainable without vision)
            model.visual_encoder.requires_grad_(False).eval()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        orig = OriginalStyle(model, pipe.tokenizer, cfg.max_txt_len)

        def step():
            if kind == "original":
                loss, _ = orig(pixels, instructions, answers)
            else:
                batch = encode() if kind == "encode" else prebuilt
                if kind == "full_logits":
                    loss = model(batch).loss
                elif kind == "bf16_cache":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        loss_sum, n = model.answer_loss(no_pixels, model.embed_vision_features(vit_tokens))
                    loss = loss_sum / n
                else:
                    # precision: bf16 in a train config: the trainer's autocast, on the CPU too
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind in ("bf16", "bf16_frozen")):
                        loss_sum, n = model.answer_loss(batch)
                    loss = loss_sum / n
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

        return step

    with torch.no_grad():
        first_mgv2 = float(pipe.model(prebuilt).loss)
        loss_sum, n_answer = pipe.model.answer_loss(prebuilt)
        if abs(float(loss_sum / n_answer) - first_mgv2) > 1e-4:
            raise SystemExit(f"answer_loss {float(loss_sum / n_answer)} differs from forward's loss {first_mgv2}")
        first_orig, tokens_orig = OriginalStyle(pipe.model, pipe.tokenizer)(pixels, instructions, answers)

    variants = {"original-style (strings in forward)": "original", "mgv2 (batch from workers)": "mgv2",
                "mgv2, LM head on every position": "full_logits", "mgv2 + encode in step": "encode",
                "mgv2, bf16 autocast": "bf16", "mgv2, bf16, frozen ViT": "bf16_frozen",
                "mgv2, bf16, frozen ViT + vision cache": "bf16_cache"}
    steps = {name: make_runner(kind) for name, kind in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.repeats):  # rounds interleave the variants, so load changes hit all alike
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t) / args.steps)
    results = {name: statistics.median(ts) for name, ts in times.items()}

    base = results["original-style (strings in forward)"]
    bf16_note = "native bf16 (AVX512-BF16 / AMX)" if native_bf16(torch.device("cpu")) else \
        "NO native bf16: the bf16 rows are emulated (precision: auto trains in fp32 here)"
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {bf16_note}")
    print(f"{cfg.name} preset, CPU threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} rounds (median), forward + backward + AdamW")
    print(f"same inputs: loss mgv2 {first_mgv2:.4f} vs original-style {float(first_orig):.4f}; "
          f"tokens per batch {tokens_mgv2} vs {tokens_orig}")
    print(f"{'variant':<38} {'ms/step':>8} {'samples/s':>10} {'tokens/s':>10} {'vs original':>12}")
    out = {}
    for name, t in results.items():
        sps, tps = args.batch / t, tokens_mgv2 / t
        print(f"{name:<38} {t * 1000:8.1f} {sps:10.1f} {tps:10.0f} {base / t:11.2f}x")
        out[name] = {"seconds_per_step": t, "samples_per_s": sps, "tokens_per_s": tps, "speedup": base / t}
    print(f"bf16 autocast vs the same fp32 step: {results['mgv2 (batch from workers)'] / results['mgv2, bf16 autocast']:.2f}x")
    ratio = results["mgv2, bf16, frozen ViT"] / results["mgv2, bf16, frozen ViT + vision cache"]
    print(f"vision cache vs the same frozen-ViT bf16 step: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
