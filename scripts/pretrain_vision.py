"""Vision pretraining for a from-scratch preset: a "stage 0" that plays the part of EVA's own
pretraining, on the synthetic world's exact ground truth.

    .venv/bin/python scripts/pretrain_vision.py --data runs/demo_synth --out runs/demo/vision0.pth \\
        [--model configs/model/demo.yaml] [--steps 1500] [--batch 64]

MiniGPT-v2 freezes an EVA ViT-g that already knows what is in a picture.  The demo preset's ViT is
random, and the LLM must learn to see through the box-text loss alone (docs/demo_model.md).  This
script trains the preset's ViT (:class:`mgv2.vision.EVAViT`, the official structure and key names)
to name, for every patch of the model's input picture, the kind and the colour of the object
that covers most of it (or background) and which of its 4x4 sub-cells an object covers; the
labels come from the scenes' shapely outlines (``scenes.jsonl``, drawn back to front, so what is
hidden is not labelled).  Only ``train`` images are used; the held-out images give the reported
per-patch accuracies.  The result is a plain state dict saved with ``torch.save`` in the
``eva_vit_g.pth`` layout, so a model config loads it the way it loads EVA:
``--set vision.checkpoint=runs/demo/vision0.pth`` (strict: every key, every shape).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from eval.metrics import box_iou, is_hit
from mgv2.config import DEFAULT_MODEL, ModelConfig, ScheduleConfig, load_yaml
from mgv2.image import ImageProcessor, load_image
from mgv2.io import atomic_path
from mgv2.synth.world import COLOR_NAMES, KINDS, scene_from_manifest

SUBCELLS = 4  # occupancy targets per patch side


def _owners(entry: dict, size: int, patch: int, min_cover: float | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """``(owner [size, size], major [g*g], objects)``: which object (k + 1, 0 background) shows at
    each pixel of the model's ``size`` x ``size`` input frame (the picture is resized without
    keeping its aspect ratio), and which one each patch is labelled with.

    ``min_cover`` None: the label covering most of the patch, background included (v8's stage 0:
    an object under about 20 px then owns no patch at all, 40% of those of 16-24 px).  A number:
    the object showing most pixels in the patch, if they are at least that fraction of it, else
    background (0.1 leaves 1.3% of the objects without a patch, all of them hidden by bigger ones)."""
    scene = scene_from_manifest(entry)
    sx, sy = size / scene.width, size / scene.height
    owner = np.zeros((size, size), np.int32)  # 0 background, k + 1 = objects[k]
    objects = sorted(scene.objects, key=lambda o: o.index)  # back to front: front ones overwrite
    for k, obj in enumerate(objects):
        geom = obj.outline
        for poly in getattr(geom, "geoms", [geom]):
            pts = np.asarray(poly.exterior.coords) * (sx, sy)
            cv2.fillPoly(owner, [np.round(pts).astype(np.int32)], k + 1)
    g = size // patch
    cells = owner.reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, patch * patch)
    counts = np.stack([np.bincount(c, minlength=len(objects) + 1) for c in cells])
    if min_cover is None:
        major = counts.argmax(axis=1)
    else:
        counts[:, 0] = 0
        major = counts.argmax(axis=1)
        major[counts[np.arange(len(major)), major] < min_cover * patch * patch] = 0
    return owner, major, objects


def patch_labels(entry: dict, size: int, patch: int, min_cover: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(kind [g*g], colour [g*g], occupancy [g*g, SUBCELLS**2])`` of one scene, in the model's
    ``size`` x ``size`` input frame (``min_cover``: see :func:`_owners`)."""
    return _labels(*_owners(entry, size, patch, min_cover), patch)


def patch_boxes(entry: dict, size: int, patch: int, min_cover: float | None = None) -> np.ndarray:
    """``[g*g, 4]``: the visible box ``(x1, y1, x2, y2) / size`` of the object each patch is
    labelled with (zeros for background patches), so that one patch token can carry its object's extent."""
    return _boxes(*_owners(entry, size, patch, min_cover))


def objects_with_a_patch(entry: dict, size: int, patch: int, min_cover: float | None = None) -> tuple[int, int]:
    """``(objects visible in the frame, those that label at least one patch)``: what the labels
    let the encoder learn at all."""
    owner, major, objects = _owners(entry, size, patch, min_cover)
    visible = [k for k in range(1, len(objects) + 1) if (owner == k).any()]
    return len(visible), sum(1 for k in visible if (major == k).any())


def _labels(owner: np.ndarray, major: np.ndarray, objects: list, patch: int):
    kind_of = np.asarray([0] + [1 + KINDS.index(o.kind) for o in objects])
    colour_of = np.asarray([0] + [1 + COLOR_NAMES.index(o.color) for o in objects])
    g = len(owner) // patch
    sub = patch // SUBCELLS
    occ = (owner > 0).reshape(g, SUBCELLS, sub, g, SUBCELLS, sub).mean(axis=(2, 5)) > 0.5
    occ = occ.transpose(0, 2, 1, 3).reshape(g * g, SUBCELLS * SUBCELLS)
    return kind_of[major], colour_of[major], occ.astype(np.float32)


def _boxes(owner: np.ndarray, major: np.ndarray, objects: list) -> np.ndarray:
    extent = np.zeros((len(objects) + 1, 4), np.float32)
    for k in range(1, len(objects) + 1):
        ys, xs = np.nonzero(owner == k)
        if len(xs):
            extent[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return extent[major] / len(owner)


def _load_entries(data: Path, entries: list[dict], processor: ImageProcessor, patch: int, boxes: bool,
                  min_cover: float | None) -> list[tuple[np.ndarray, ...]]:
    """``(pixels, kind, colour, occupancy[, patch boxes])`` of each entry's picture, as numpy arrays
    (they cross from worker processes as plain bytes; torch tensors would each take a shared-memory file)."""
    out = []
    for e in entries:
        owners = _owners(e, processor.size, patch, min_cover)
        item = (processor(load_image(data / "images" / e["file_name"])).numpy(), *_labels(*owners, patch))
        out.append(item + (_boxes(*owners),) if boxes else item)
    return out


def load_split(data: Path, entries: list[dict], processor: ImageProcessor, patch: int, desc: str,
               boxes: bool = False, min_cover: float | None = None, workers: int = 1):
    """``(pixels, kind, colour, occupancy)`` tensors of the pictures, and their patch boxes when asked;
    ``workers`` processes decode the pictures and draw their labels (chunks of 64, kept in order)."""
    chunks = [entries[i : i + 64] for i in range(0, len(entries), 64)]
    job = functools.partial(_load_entries, data, processor=processor, patch=patch, boxes=boxes, min_cover=min_cover)
    items: list[tuple[np.ndarray, ...]] = []
    with tqdm(total=len(entries), desc=desc, unit="img") as bar:
        if workers > 1:
            # one intra-op thread in each worker: a forked child must not use the parent's OpenMP pool
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for part in pool.map(job, chunks):
                    items += part
                    bar.update(len(part))
        else:
            for chunk in chunks:
                items += job(chunk)
                bar.update(len(chunk))
    pixels, kinds, colours, occs, *extents = (torch.from_numpy(np.stack(t)) for t in zip(*items))
    return (pixels, kinds.long(), colours.long(), occs, *extents)


class PatchHeads(nn.Module):
    """Per-patch kind / colour / occupancy heads on the ViT's patch tokens (thrown away after)."""

    def __init__(self, width: int, boxes: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.kind = nn.Linear(width, 1 + len(KINDS))
        self.colour = nn.Linear(width, 1 + len(COLOR_NAMES))
        self.occ = nn.Linear(width, SUBCELLS * SUBCELLS)
        self.box = nn.Linear(width, 4) if boxes else None  # the owner's box, (x1, y1, x2, y2) / size

    def forward(self, tokens: torch.Tensor):
        x = self.norm(tokens[:, 1:])  # drop CLS
        box = None if self.box is None else torch.sigmoid(self.box(x).float())  # fp32 under autocast too
        return self.kind(x), self.colour(x), self.occ(x), box


def mirror(px, kind, colour, occ, box=None):
    """The same pictures flipped left to right, with their labels flipped to match: the kinds
    and colours of the world look the same in a mirror (a cup's handle changes side).  ``box``
    (each patch's owner box, ``(x1, y1, x2, y2) / size``) moves with its patch and is mirrored
    too: ``x1' = 1 - x2``, ``x2' = 1 - x1`` (background patches keep their zero box; no loss reads it)."""
    n, cells = kind.shape
    g = round(cells ** 0.5)
    sub = round(occ.shape[-1] ** 0.5)
    flip = lambda t: t.reshape(n, g, g, *t.shape[2:]).flip(2).reshape(t.shape)
    occ = occ.reshape(n, g, g, sub, sub).flip(2).flip(4).reshape(n, cells, sub * sub)
    out = (px.flip(-1), flip(kind), flip(colour), occ)
    if box is None:
        return out
    box = flip(box)
    mirrored = torch.stack((1 - box[..., 2], box[..., 1], 1 - box[..., 0], box[..., 3]), -1)
    return out + (torch.where((out[1] > 0).unsqueeze(-1), mirrored, box),)


def losses(vit, heads, px, kind, colour, occ, box=None, box_weight: float = 0.0):
    k, c, o, b = heads(vit(px))
    ce = nn.functional.cross_entropy
    loss = ce(k.flatten(0, 1), kind.flatten()) + ce(c.flatten(0, 1), colour.flatten()) \
        + nn.functional.binary_cross_entropy_with_logits(o, occ)
    on = kind > 0
    if b is not None and box is not None and on.any():  # L1 on the object patches' boxes
        loss = loss + box_weight * (b[on] - box[on]).abs().mean()
    return loss, (k.argmax(-1), c.argmax(-1), o > 0, b)


def make_optimizer(vit, heads, lr: float) -> torch.optim.AdamW:
    """AdamW over the ViT and the heads, with the trainer's weight-decay rules."""
    from mgv2.trainer import param_groups

    groups = param_groups(nn.ModuleList([vit, heads]), weight_decay=0.05)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def train_step(vit, heads, opt, batch, box_weight: float, bf16: bool, lr: float, step: int) -> torch.Tensor:
    """One stage-0 step (``bf16``: under bf16 autocast, fp32 weights): the losses, a finite check,
    backward, gradient clipping at 1.0, AdamW at ``lr``.  Returns the loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = losses(vit, heads, *batch, box_weight=box_weight)
    if not torch.isfinite(loss):
        raise SystemExit(f"step {step}: loss is {loss.item()}; lower --lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([*vit.parameters(), *heads.parameters()], 1.0)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    return loss


@torch.no_grad()
def accuracies(vit, heads, split, batch: int) -> dict[str, float]:
    px, kind, colour, occ = split[:4]
    box = split[4] if len(split) > 4 else None
    hits = np.zeros(6)
    n_obj = 0
    for i in range(0, len(px), batch):
        part = slice(i, i + batch)
        _, (k, c, o, b) = losses(vit, heads, px[part], kind[part], colour[part], occ[part])
        on = kind[part] > 0
        hits[:4] += [(k == kind[part]).sum(), ((k == kind[part]) & on).sum(),
                     ((c == colour[part]) & on).sum(), (o == (occ[part] > 0.5)).float().mean(-1).sum()]
        if b is not None and box is not None and on.any():
            ious = [box_iou(p, t) for p, t in zip(b[on].tolist(), box[part][on].tolist())]
            hits[4:] += [sum(ious), sum(map(is_hit, ious))]
        n_obj += int(on.sum())
    n = kind.numel()
    out = {"patch_kind_acc": hits[0] / n, "object_patch_kind_acc": hits[1] / max(1, n_obj),
           "object_patch_colour_acc": hits[2] / max(1, n_obj), "occupancy_acc": hits[3] / n}
    if box is not None and heads.box is not None:  # each object patch's box against its object's
        out.update(object_patch_box_miou=hits[4] / max(1, n_obj), object_patch_box_acc50=hits[5] / max(1, n_obj))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/demo_synth", help="an `mgv2 synth` folder")
    ap.add_argument("--out", default="runs/demo/vision0.pth")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the model config whose vision encoder is trained")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N train images (tests)")
    ap.add_argument("--flip", action="store_true",
                    help="mirror a random half of each batch (pictures and labels) left to right")
    ap.add_argument("--box-weight", type=float, default=0.0,
                    help="also train each patch to give the box of the object that covers it (L1, this weight; 0 = off)")
    ap.add_argument("--object-cover", type=float, default=None, metavar="F",
                    help="label a patch with the object showing most pixels in it when they are at least this "
                         "fraction of the patch (else background); default: whatever covers most of it, background "
                         "included, which leaves a fifth of the objects (most under 24 px) without a patch")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="fp32",
                    help="fp32 (default) or bf16 autocast (fp32 weights); auto: bf16 where the CPU computes it in "
                         "hardware (AVX512-BF16 / AMX, mgv2.trainer.native_bf16), else fp32.  bench/stage0.py: bf16 "
                         "is 2.1x faster for the smol preset's 384-wide ViT and slower for the demo's 128-wide one")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes that decode the pictures and draw their labels before training (2 cores: 2)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="also score the first 1000 held-out pictures every N steps (a learning curve in the report)")
    args = ap.parse_args(argv)
    from mgv2.trainer import lr_at, native_bf16
    from mgv2.vision import EVAViT

    data = Path(args.data)
    manifest = data / "scenes.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"{data} has no scenes.jsonl: make it with `mgv2 synth --out {data}`")
    cfg = load_yaml(ModelConfig, args.model).vision
    if args.box_weight < 0:
        raise SystemExit(f"--box-weight must be >= 0, got {args.box_weight}")
    if args.object_cover is not None and not 0 < args.object_cover <= 1:
        raise SystemExit(f"--object-cover must be in (0, 1], got {args.object_cover}")
    boxes = args.box_weight > 0
    if cfg.patch_size % SUBCELLS:
        raise SystemExit(f"vision.patch_size {cfg.patch_size} must be a multiple of {SUBCELLS}")
    entries = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    train = [e for e in entries if e["split"] == "train"][: args.limit]
    held = [e for e in entries if e["split"] != "train"][: max(64, (args.limit or 0) // 4) if args.limit else None]
    processor = ImageProcessor(size=cfg.img_size)
    train_t = load_split(data, train, processor, cfg.patch_size, "train pictures", boxes, args.object_cover,
                         args.workers)
    held_t = load_split(data, held, processor, cfg.patch_size, "held-out pictures", boxes, args.object_cover,
                        args.workers)
    seen = np.asarray([objects_with_a_patch(e, cfg.img_size, cfg.patch_size, args.object_cover) for e in held])
    labelled = float(seen[:, 1].sum() / max(1, seen[:, 0].sum()))
    print(f"held-out objects that label at least one patch: {labelled:.3f}")

    native = native_bf16(torch.device("cpu"))
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native)
    if args.precision == "bf16" and not native:
        print("warning: this CPU has no native bf16 (AVX512-BF16 / AMX); bf16 is emulated and slower than fp32",
              file=sys.stderr)
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} (--precision {args.precision})")

    torch.manual_seed(args.seed)
    vit = EVAViT(cfg)  # the same random init as the preset (pos_embed_init included)
    heads = PatchHeads(cfg.width, boxes)
    opt = make_optimizer(vit, heads, args.lr)
    sched = ScheduleConfig(lr=args.lr, min_lr=args.lr / 10, warmup_start_lr=args.lr / 100,
                           warmup_steps=max(1, args.steps // 20), style="cosine")
    gen = torch.Generator().manual_seed(args.seed)
    curve: list[dict] = []
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="vision pretraining", unit="step")
    for step in bar:
        idx = torch.randint(len(train_t[0]), (args.batch,), generator=gen)
        batch = [t[idx] for t in train_t]
        if args.flip:
            half = torch.rand(args.batch, generator=gen) < 0.5
            flipped = mirror(*(t[half] for t in batch))
            for t, f in zip(batch, flipped):
                t[half] = f
        loss = train_step(vit, heads, opt, batch, args.box_weight, bf16, lr_at(step, sched, args.steps), step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            vit.eval()
            heads.eval()
            point = accuracies(vit, heads, tuple(t[:1000] for t in held_t), 256)
            curve.append({"step": step + 1, "minutes": round((time.time() - t0) / 60, 2), **point})
            tqdm.write(f"step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in point.items()))
            vit.train()
            heads.train()
    vit.eval()
    heads.eval()
    acc = accuracies(vit, heads, held_t, 256)
    # the same numbers on as many train pictures: a gap between the two is over-fitting
    acc.update({f"train_{k}": v for k, v in accuracies(vit, heads, tuple(t[: len(held)] for t in train_t), 256).items()})
    minutes = (time.time() - t0) / 60
    print(f"held-out ({len(held)} pictures): " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
          + f"; {args.steps} steps in {minutes:.1f} min")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({k: v.detach().clone() for k, v in vit.state_dict().items()}, tmp)
    report = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "flip": args.flip,
              "precision": "bf16" if bf16 else "fp32",
              "box_weight": args.box_weight, "object_cover": args.object_cover,
              "heldout_objects_with_a_patch": labelled, "minutes": round(minutes, 2),
              "train_pictures": len(train), "heldout_pictures": len(held), **{k: float(v) for k, v in acc.items()},
              "curve": [{k: float(v) for k, v in point.items()} for point in curve]}
    with atomic_path(out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} (load it with --set vision.checkpoint={out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
