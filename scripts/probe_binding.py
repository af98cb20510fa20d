"""Where does finding an object by its colour and kind break?  Two experiments on the "colour
kind" micro task: refer expressions like "green star", each naming exactly one object of an
``mgv2 synth`` picture (docs/demo_model.md, fifth session).

    # the demo LLM trained on the micro task alone (no position words to lean on)
    .venv/bin/python scripts/probe_binding.py micro --out runs/demo_exp/MA --steps 1500 [--set KEY=VALUE ...]
    # a small dedicated model on frozen image features: can anything bind with them?
    .venv/bin/python scripts/probe_binding.py readout --features merged --steps 3000 [--set KEY=VALUE ...]

``micro`` trains ``configs/train/demo_stage1.yaml`` with its datasets replaced by one refer
dataset of these records (``--turns`` per sample, ``--batch`` samples per step; the sixth
session's MPT1B, ``--turns 1 --batch 128``, is the run that binds); score its checkpoints with
``scripts/probe_refer_words.py``.  ``readout`` fits a 2-layer, 128-wide transformer over the 16
image tokens plus one query token (colour embedding + kind embedding) that regresses the box
(L1 on 0-1 coordinates), and prints held-out Acc@0.5 beside the random-object rate.  Features:
``pixels`` (each token's raw 64 x 16 strip), ``merged`` (the model's ViT output after
``ln_vision``, 4 patches merged: what its projector receives), ``projected`` (what the LLM
receives) or ``oracle`` (one-hot kind and colour of each of the strip's 4 patches, from
``scripts/pretrain_vision.py``'s labels).  ``--layout image-words`` / ``words-image`` give the
colour and the kind as two word tokens that an answer token must gather (causal attention), after
or before the image tokens, as the official and the instruction-first prompt layouts do;
``--loss ce`` classifies coordinates into 101 bins like the LLM's coordinate tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from probe_image_tokens import read_scenes, token_views
from probe_refer_words import queries

from eval.metrics import box_iou
from mgv2.synth.world import COLOR_NAMES, KINDS


def colour_kind_targets(scene: dict) -> list[dict]:
    """The objects of one picture that "<colour> <kind>" names alone."""
    return [scene["objects"][i] for kind, _, i in queries(scene) if kind == "colour kind"]


# -- micro: the demo LLM on the micro task --------------------------------------------------------


def micro_records(data: Path) -> list:
    from tasks.records import RegionRecord

    return [RegionRecord(str(data / "images" / s["file_name"]), s["width"], s["height"], f"{o['color']} {o['kind']}",
                         tuple(o["visible_box"]))
            for s in read_scenes(data, "train") for o in colour_kind_targets(s)]


def micro_config(data: Path, out: str, steps: int, overrides: Sequence[str], train: dict, turns: int = 4,
                 batch: int = 32):
    import yaml

    from mgv2.config import TrainConfig, from_dict

    d = yaml.safe_load((ROOT / "configs" / "train" / "demo_stage1.yaml").read_text())
    d.update(output_dir=out, steps=steps, save_every=500, data_root=str(data), progress=False,
             model=str(ROOT / "configs" / "model" / "demo.yaml"), model_overrides=["checkpoint=null", *overrides])
    d["datasets"] = [{"name": "colour_kind", "source": "refcoco", "task": "refer", "path": ".", "ratio": 1,
                      "batch_size": batch, "turns_per_image": turns}]
    d.update(train)
    return from_dict(TrainConfig, d)


# -- readout: a dedicated model on frozen features -----------------------------------------------


def token_features(view: str, scenes: list[dict], data: Path, overrides: Sequence[str]) -> torch.Tensor:
    """[N, 16, F] features of the demo preset's 16 image tokens."""
    if view == "oracle":
        from pretrain_vision import patch_labels

        rows = []
        for s in scenes:
            k, c, _ = patch_labels(s, 128, 16)
            onehot = np.concatenate([np.eye(len(KINDS) + 1)[k], np.eye(len(COLOR_NAMES) + 1)[c]], 1)  # [64, F]
            rows.append(onehot.reshape(16, -1))  # patches in row order: 4 neighbours = one 1x4 token
        return torch.tensor(np.array(rows), dtype=torch.float32)
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.image import load_image
    from mgv2.pipeline import Pipeline

    torch.manual_seed(0)  # a frozen random ViT that a checkpoint lacks is rebuilt from seed 0
    pipe = Pipeline.from_config(load_yaml(ModelConfig, ROOT / "configs" / "model" / "demo.yaml", list(overrides)),
                                device="cpu", verbose=False)
    key = {"merged": "vit_merged"}.get(view, view)
    out = []
    for i in range(0, len(scenes), 64):
        px = torch.stack([pipe.processor(load_image(data / "images" / s["file_name"])) for s in scenes[i:i + 64]])
        out.append(token_views(pipe, px)[key])
    return torch.cat(out)


LAYOUTS = ("query", "image-words", "words-image")


class Readout(nn.Module):
    """A small transformer that finds the named object from the image tokens.

    ``layout`` says how it is told what to find: ``query`` (one token = colour embedding + kind
    embedding, bidirectional attention, the box read from that token), ``image-words`` (causal:
    the 16 image tokens, a colour token, a kind token, an answer token, as in the official prompt
    layout where the expression follows the image) or ``words-image`` (causal: colour, kind, image
    tokens, answer; the instruction-first layout).  ``loss``: ``l1`` regresses the 4 coordinates,
    ``ce`` classifies each into 101 bins as the LLM's coordinate tokens do.  ``center_ln``
    normalises the image tokens as the demo preset does and starts the word embeddings small;
    ``template`` puts that many fixed tokens before the words (word layouts only);
    ``sequential`` writes the 4 coordinates at 4 positions, each after the ones before it (teacher
    forced in training, greedy in :meth:`predict`), as the LLM writes ``<x1><y1><x2><y2>``."""

    def __init__(self, features: int, tokens: int = 16, width: int = 128, layers: int = 2, layout: str = "query",
                 loss: str = "l1", center_ln: bool = False, template: int = 0, sequential: bool = False) -> None:
        super().__init__()
        if layout not in LAYOUTS or loss not in ("l1", "ce"):
            raise ValueError(f"layout must be one of {LAYOUTS} and loss l1 or ce, not {layout!r} / {loss!r}")
        if sequential and (loss != "ce" or layout == "query"):
            raise ValueError("sequential coordinates need loss ce and a word layout")
        self.layout, self.loss, self.center_ln, self.sequential = layout, loss, center_ln, sequential
        self.coord = nn.Embedding(101, width)  # the coordinates already written (sequential)
        self.coord_pos = nn.Parameter(torch.randn(3, width) * 0.02)
        self.proj = nn.Linear(features, width)
        self.pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.word_pos = nn.Parameter(torch.randn(3, width) * 0.02)  # colour, kind, answer
        self.answer = nn.Parameter(torch.randn(width) * 0.02)
        # fixed tokens before the words, as "[INST] [refer] give me the location of" precede the expression
        self.template = nn.Parameter(torch.randn(template, width) * 0.02)
        self.colour = nn.Embedding(len(COLOR_NAMES), width)
        self.kind = nn.Embedding(len(KINDS), width)
        if center_ln:
            nn.init.normal_(self.colour.weight, std=0.02)
            nn.init.normal_(self.kind.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * 101 if loss == "ce" else 4))

    def forward(self, feats: torch.Tensor, colour: torch.Tensor, kind: torch.Tensor,
                written: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 4] boxes in 0-1 (``l1``) or [B, 4, 101] coordinate logits (``ce``); sequential: the
        logits of coordinates 1 .. j+1 given the ``written`` bins [B, j] (default: none)."""
        img = self.proj(feats)
        if self.center_ln:
            img = nn.functional.layer_norm(img - img.mean(1, keepdim=True), img.shape[-1:])
        img = img + self.pos
        if self.layout == "query":
            h = self.encoder(torch.cat([(self.colour(colour) + self.kind(kind))[:, None], img], 1))[:, 0]
            out = self.head(h)
            return out.view(-1, 4, 101) if self.loss == "ce" else torch.sigmoid(out)
        words = [self.template.expand(len(colour), -1, -1),
                 self.colour(colour)[:, None] + self.word_pos[0], self.kind(kind)[:, None] + self.word_pos[1]]
        answer = (self.answer + self.word_pos[2]).expand(len(colour), 1, -1)
        parts = [img, *words, answer] if self.layout == "image-words" else [*words, img, answer]
        j = 0 if written is None else written.shape[1]
        if j:
            parts.append(self.coord(written) + self.coord_pos[:j])
        x = torch.cat(parts, 1)
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h = self.encoder(x, mask=mask, is_causal=True)
        if self.sequential:
            return self.head(h[:, -(1 + j):])[..., :101]  # one coordinate per answer position
        out = self.head(h[:, -1])
        return out.view(-1, 4, 101) if self.loss == "ce" else torch.sigmoid(out)

    def predict(self, feats: torch.Tensor, colour: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        """[B, 4] boxes in 0-1 (greedy coordinate by coordinate when sequential)."""
        if not self.sequential:
            return self.boxes(self(feats, colour, kind))
        written = torch.zeros(len(colour), 0, dtype=torch.long)
        for _ in range(4):
            written = torch.cat([written, self(feats, colour, kind, written)[:, -1].argmax(-1, keepdim=True)], 1)
        return written.float() / 100

    def train_loss(self, feats: torch.Tensor, colour: torch.Tensor, kind: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.sequential:
            bins = (target * 100).round().long().clamp(0, 100)
            logits = self(feats, colour, kind, bins[:, :3])
            return nn.functional.cross_entropy(logits.reshape(-1, 101), bins.reshape(-1))
        return self.objective(self(feats, colour, kind), target)

    def boxes(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(-1).float() / 100 if self.loss == "ce" else out

    def objective(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            bins = (target * 100).round().long().clamp(0, 100)
            return nn.functional.cross_entropy(out.reshape(-1, 101), bins.reshape(-1))
        return (out - target).abs().mean()


def readout_queries(scenes: list[dict]) -> list[tuple[int, int, int, list[float], int]]:
    """(picture, colour id, kind id, box in 0-1 xyxy, objects in the picture)."""
    out = []
    for i, s in enumerate(scenes):
        for o in colour_kind_targets(s):
            x1, y1, x2, y2 = o["visible_box"]
            out.append((i, COLOR_NAMES.index(o["color"]), KINDS.index(o["kind"]),
                        [x1 / s["width"], y1 / s["height"], x2 / s["width"], y2 / s["height"]], len(s["objects"])))
    return out


def run_readout(train_f, train_q, val_f, val_q, steps: int, batch: int = 128, every: int = 500,
                seed: int = 0, log=print, **options) -> list[dict]:
    """Train a :class:`Readout` (``options`` go to it); the held-out curve every ``every`` steps."""
    torch.manual_seed(seed)
    net = Readout(train_f.shape[-1], train_f.shape[1], **options)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    def tensors(q, f, idx):
        rows = [q[i] for i in idx]
        return (f[[r[0] for r in rows]], torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]),
                torch.tensor([r[3] for r in rows]))

    curve = []
    for step in range(1, steps + 1):
        feats, colour, kind, target = tensors(train_q, train_f, torch.randint(len(train_q), (batch,), generator=gen).tolist())
        loss = net.train_loss(feats, colour, kind, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            net.eval()
            with torch.no_grad():
                feats, colour, kind, target = tensors(val_q, val_f, range(len(val_q)))
                pred = net.predict(feats, colour, kind)
            net.train()
            hits = sum(box_iou(p, t) >= 0.5 for p, t in zip(pred.tolist(), target.tolist()))
            row = {"step": step, "loss": float(loss.detach()), "acc50": hits / len(val_q),
                   "chance": sum(1 / q[4] for q in val_q) / len(val_q)}
            curve.append(row)
            log(f"step {step}  loss {row['loss']:.4f}  val Acc@0.5 {100 * row['acc50']:.1f}  "
                f"(random object {100 * row['chance']:.1f})")
    return curve


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("micro", help="train the demo LLM on the colour-kind micro task")
    m.add_argument("--out", required=True)
    m.add_argument("--steps", type=int, default=1500)
    m.add_argument("--turns", type=int, default=4, help="records of one picture per sample (turns_per_image)")
    m.add_argument("--batch", type=int, default=32, help="samples per step (the readout uses 128 queries per step)")
    m.add_argument("--train", action="append", default=[], metavar="KEY=YAML",
                   help="train-config key, e.g. 'trainable=[projector, vision, ln_vision, llm]'")
    r = sub.add_parser("readout", help="a small dedicated model on frozen image features")
    r.add_argument("--features", choices=("pixels", "merged", "projected", "oracle"), default="merged")
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--train-images", type=int, default=4000)
    r.add_argument("--val-images", type=int, default=600, help="held-out pictures to score on")
    r.add_argument("--layout", choices=LAYOUTS, default="query", help="how the readout is told what to find")
    r.add_argument("--loss", choices=("l1", "ce"), default="l1")
    r.add_argument("--center-ln", action="store_true", help="the demo preset's image-token normalisation")
    r.add_argument("--layers", type=int, default=2)
    r.add_argument("--template", type=int, default=0, help="fixed tokens before the words (word layouts)")
    r.add_argument("--sequential", action="store_true", help="write the 4 coordinates at 4 positions (needs --loss ce)")
    r.add_argument("--json", default=None, help="also write the curve here")
    for p in (m, r):
        p.add_argument("--data", default="runs/demo_synth", help="an `mgv2 synth` folder")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="model config override (e.g. vision.checkpoint=runs/demo/vision0.pth)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if args.cmd == "micro":
        import yaml

        from mgv2.trainer import run_stage

        records = micro_records(data)
        train = {k: yaml.safe_load(v) for k, v in (t.split("=", 1) for t in args.train)}
        cfg = micro_config(data, args.out, args.steps, args.overrides, train, args.turns, args.batch)
        print(f"{len(records)} colour-kind records", flush=True)
        run_stage(cfg, records={"colour_kind": records}, verbose=True)
        return 0
    t0 = time.time()
    train_s, val_s = read_scenes(data, "train", args.train_images), read_scenes(data, "held_out", args.val_images)
    feats = token_features(args.features, train_s + val_s, data, args.overrides)  # one model, one pass
    train_f, val_f = feats[:len(train_s)], feats[len(train_s):]
    print(f"features {tuple(train_f.shape)} in {time.time() - t0:.0f} s", flush=True)
    options = {"layout": args.layout, "loss": args.loss, "center_ln": args.center_ln, "layers": args.layers,
               "template": args.template, "sequential": args.sequential}
    curve = run_readout(train_f, readout_queries(train_s), val_f, readout_queries(val_s), args.steps, **options)
    if args.json:
        from mgv2.io import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps({"features": args.features, "overrides": args.overrides,
                                                       **options, "curve": curve}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
