"""scripts/pretrain_vision.py: per-patch labels from the scenes' outlines, and a saved encoder that
loads strictly as ``vision.checkpoint`` (the eva_vit_g.pth path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgv2.config import ModelConfig, load_yaml
from mgv2.synth.world import COLOR_NAMES, KINDS
from mgv2.vision import EVAViT, load_eva_checkpoint
from tests.conftest import ROOT, load_script

pv = load_script("pretrain_vision")


@pytest.fixture(scope="module")
def world(small_world) -> Path:
    return small_world  # the shared 60-picture world (tests/conftest.py)


def _visible_owner(scene, box) -> tuple[int, float, float]:
    """(1 + index of the object with the most visible area in ``box``, its area, the runner-up's),
    from the exact visible geometry the scene computes (each outline minus those in front)."""
    from shapely.geometry import box as shapely_box

    cell = shapely_box(*box)
    areas = [obj.visible.intersection(cell).area for obj in scene.objects]  # drawing order = index
    order = np.argsort(areas)[::-1]
    return int(order[0]) + 1, areas[order[0]], areas[order[1]] if len(areas) > 1 else 0.0


def test_patch_labels_follow_the_visible_objects(world):
    from mgv2.synth.world import scene_from_manifest

    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()]
    size, patch = 128, 16
    checked = 0
    for e in entries:
        kind, colour, occ = pv.patch_labels(e, size, patch)
        g = size // patch
        assert kind.shape == colour.shape == (g * g,) and occ.shape == (g * g, pv.SUBCELLS ** 2)
        assert ((kind == 0) == (colour == 0)).all()  # background in both or in neither
        # a fully covered patch is labelled with the object that shows most of itself there
        # (exact visible areas from the outlines; near-ties are left out, rasterising decides those)
        scene = scene_from_manifest(e)
        sx, sy = scene.width / size, scene.height / size
        for p in np.flatnonzero(occ.mean(1) == 1.0):
            r, c = divmod(int(p), g)
            owner, best, second = _visible_owner(scene, (c * patch * sx, r * patch * sy,
                                                         (c + 1) * patch * sx, (r + 1) * patch * sy))
            if best > 1.2 * second:
                obj = scene.objects[owner - 1]
                assert KINDS[kind[p] - 1] == obj.kind and COLOR_NAMES[colour[p] - 1] == obj.color
                checked += 1
        # a patch with no object at all is background; objects cover some patches
        assert (kind[occ.sum(1) == 0] == 0).all() and (kind > 0).any()
    assert checked >= 50, checked  # 73 on this world


def test_patch_boxes_are_the_owners_visible_extent(world):
    """Each object patch carries the frame box of the object that covers most of it: the same box
    for every patch of one object, a box that holds the patch's own object pixels, zeros elsewhere."""
    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()]
    size, patch = 128, 16
    g = size // patch
    for e in entries[:20]:
        kind, _, _ = pv.patch_labels(e, size, patch)
        box = pv.patch_boxes(e, size, patch)
        owner, major, _ = pv._owners(e, size, patch)
        assert box.shape == (g * g, 4) and (box[kind == 0] == 0).all()
        on = kind > 0
        assert (box[on, 0] < box[on, 2]).all() and (box[on, 1] < box[on, 3]).all()
        assert (box >= 0).all() and (box <= 1).all()
        for k in set(major[on].tolist()):
            same = box[major == k]
            assert (same == same[0]).all()  # one box per object
            ys, xs = np.nonzero(owner == k)
            assert tuple(same[0] * size) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        for p in np.flatnonzero(on):  # the patch overlaps its object's box
            r, c = divmod(int(p), g)
            x1, y1, x2, y2 = box[p] * size
            assert x1 < (c + 1) * patch and x2 > c * patch and y1 < (r + 1) * patch and y2 > r * patch


def test_box_head_trains_and_reports(world, tmp_path):
    out = tmp_path / "vision0.pth"
    model = str(ROOT / "configs" / "model" / "demo.yaml")
    assert pv.main(["--data", str(world), "--out", str(out), "--model", model, "--steps", "3",
                    "--batch", "4", "--limit", "12", "--box-weight", "5", "--object-cover", "0.1"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["box_weight"] == 5 and 0.0 <= report["object_patch_box_miou"] <= 1.0
    assert report["object_cover"] == 0.1 and report["heldout_objects_with_a_patch"] >= 0.95
    assert set(torch.load(out, weights_only=True)) == set(EVAViT(load_yaml(ModelConfig, model).vision).state_dict())
    assert pv.main(["--data", str(world), "--out", str(out), "--model", model, "--steps", "2", "--flip",
                    "--batch", "4", "--box-weight", "1", "--limit", "8"]) == 0  # mirrored boxes train too
    assert json.loads(out.with_suffix(".json").read_text())["flip"] is True
    with pytest.raises(SystemExit, match="--box-weight must be >= 0"):
        pv.main(["--data", str(world), "--out", str(out), "--model", model, "--steps", "1", "--box-weight", "-1"])


def test_pretrained_encoder_loads_as_vision_checkpoint(world, tmp_path):
    out = tmp_path / "vision0.pth"
    model = str(ROOT / "configs" / "model" / "demo.yaml")
    assert pv.main(["--data", str(world), "--out", str(out), "--model", model, "--steps", "3",
                    "--batch", "4", "--limit", "12"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == 3 and 0.0 <= report["object_patch_colour_acc"] <= 1.0
    cfg = load_yaml(ModelConfig, model).vision
    vit = EVAViT(cfg)
    before = vit.blocks[0].attn.qkv.weight.clone()
    rep = load_eva_checkpoint(vit, out)  # strict: every key, every shape
    assert not rep.ignored
    assert not torch.equal(before, vit.blocks[0].attn.qkv.weight)  # trained weights, not the init
    saved = torch.load(out, weights_only=True)
    assert set(saved) == set(vit.state_dict())
    assert np.isfinite(saved["pos_embed"].numpy()).all()


def test_mirror_moves_pictures_and_labels_together():
    g, sub, size = 8, pv.SUBCELLS, 128
    px = torch.zeros(2, 3, size, size)
    kind = torch.zeros(2, g * g, dtype=torch.long)
    colour = torch.zeros(2, g * g, dtype=torch.long)
    occ = torch.zeros(2, g * g, sub * sub)
    # picture 1: an object in patch (row 2, column 1), covering that patch's sub-cell (0, 3) only
    px[1, :, 32:36, 28:32] = 1.0
    kind[1, 2 * g + 1], colour[1, 2 * g + 1] = 3, 5
    occ[1, 2 * g + 1, 0 * sub + 3] = 1.0
    mpx, mkind, mcolour, mocc = pv.mirror(px, kind, colour, occ)
    # it lands in patch (2, g - 2), sub-cell (0, 0), pixels mirrored across the picture
    assert mkind[1].nonzero().flatten().tolist() == [2 * g + (g - 2)] and mkind[1, 2 * g + g - 2] == 3
    assert mcolour[1, 2 * g + g - 2] == 5 and mocc[1].nonzero().tolist() == [[2 * g + g - 2, 0]]
    assert mpx[1, 0].nonzero()[:, 1].unique().tolist() == list(range(96, 100))  # columns 28..31 -> 96..99
    assert (mpx[1, 0].nonzero()[:, 1] // 16 == g - 2).all()  # the same patch column as its labels
    assert not mkind[0].any() and not mpx[0].any()
    again = pv.mirror(mpx, mkind, mcolour, mocc)
    for a, b in zip(again, (px, kind, colour, occ)):
        assert torch.equal(a, b)
    # the patch's owner box (x1, y1, x2, y2) / size moves with the patch and is mirrored: 28..32 -> 96..100
    box = torch.zeros(2, g * g, 4)
    box[1, 2 * g + 1] = torch.tensor([28, 32, 32, 36]) / size
    *_, mbox = pv.mirror(px, kind, colour, occ, box)
    assert mbox[1].abs().sum(-1).nonzero().flatten().tolist() == [2 * g + g - 2]
    assert torch.allclose(mbox[1, 2 * g + g - 2] * size, torch.tensor([96.0, 32, 100, 36]))
    *_, back = pv.mirror(mpx, mkind, mcolour, mocc, mbox)
    assert torch.allclose(back, box)


def test_object_cover_gives_small_objects_their_patches(world):
    """Majority labels (background counted) leave small objects without a patch; with
    ``min_cover`` a patch goes to the object showing most pixels in it when they fill that share."""
    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()]
    size, patch, cover = 128, 16, 0.1
    majority = np.asarray([pv.objects_with_a_patch(e, size, patch) for e in entries]).sum(0)
    covered = np.asarray([pv.objects_with_a_patch(e, size, patch, cover) for e in entries]).sum(0)
    assert majority[0] == covered[0]
    assert covered[1] / covered[0] >= 0.97 and majority[1] / majority[0] <= 0.9  # 0.99 against 0.78 here
    for e in entries[:20]:
        owner, major, objects = pv._owners(e, size, patch, cover)
        _, old, _ = pv._owners(e, size, patch)
        g = size // patch
        cells = owner.reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, patch * patch)
        for p, cell in enumerate(cells):
            counts = np.bincount(cell, minlength=len(objects) + 1)
            counts[0] = 0
            if major[p]:  # the patch's label is its biggest object, with at least the share asked
                assert counts[major[p]] == counts.max() and counts[major[p]] >= cover * patch * patch
            else:
                assert counts.max() < cover * patch * patch
            if old[p]:  # an object that won the patch outright keeps it
                assert major[p] == old[p]
        kind, colour, _ = pv.patch_labels(e, size, patch, cover)
        box = pv.patch_boxes(e, size, patch, cover)
        assert ((kind == 0) == (major == 0)).all() and ((colour == 0) == (major == 0)).all()
        assert (box[major == 0] == 0).all() and (box[major > 0, 2] > box[major > 0, 0]).all()
    with pytest.raises(SystemExit, match="--object-cover must be in"):
        pv.main(["--data", str(world), "--out", "unused.pth", "--steps", "1", "--object-cover", "0"])


def test_workers_load_the_same_split_in_order(world):
    """--workers 2: two processes decode the pictures and draw the labels, in chunks of 64; the
    tensors are the one-process ones, in the manifest's order."""
    from mgv2.image import ImageProcessor

    cfg = load_yaml(ModelConfig, ROOT / "configs" / "model" / "demo.yaml").vision
    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()] * 2  # 120: two chunks
    args = (world, entries, ImageProcessor(size=cfg.img_size), cfg.patch_size, "t", True, 0.1)
    one, two = pv.load_split(*args), pv.load_split(*args, workers=2)
    assert len(one) == len(two) == 5 and len(one[0]) == 120
    for a, b in zip(one, two):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert not torch.equal(one[1][0], one[1][1])  # different pictures, different labels: order matters


def test_bf16_autocast_loss_matches_fp32_and_keeps_fp32_weights(world, tmp_path, monkeypatch):
    """--precision bf16: the same losses as fp32 to bf16's precision, fp32 weights saved; the box
    head's output stays fp32 under autocast (its L1 is a small number)."""
    cfg = load_yaml(ModelConfig, ROOT / "configs" / "model" / "demo.yaml").vision
    entries = [json.loads(x) for x in (world / "scenes.jsonl").read_text().splitlines()][:4]
    from mgv2.image import ImageProcessor

    split = pv.load_split(world, entries, ImageProcessor(size=cfg.img_size), cfg.patch_size, "t", True, 0.1)
    torch.manual_seed(0)
    vit, heads = EVAViT(cfg), pv.PatchHeads(cfg.width, boxes=True)
    fp32, _ = pv.losses(vit, heads, *split, box_weight=5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, (_, _, _, box) = pv.losses(vit, heads, *split, box_weight=5.0)
    assert box.dtype == torch.float32 and bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) < 0.02 * fp32.item()

    out = tmp_path / "vision0.pth"
    assert pv.main(["--data", str(world), "--out", str(out), "--steps", "2", "--batch", "4", "--limit", "8",
                    "--box-weight", "5", "--precision", "bf16"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "bf16"
    assert {v.dtype for v in torch.load(out, weights_only=True).values()} == {torch.float32}
    # auto follows the hardware check (mgv2.trainer.native_bf16): fp32 where bf16 would be emulated
    monkeypatch.setattr("mgv2.trainer.native_bf16", lambda device: False)
    assert pv.main(["--data", str(world), "--out", str(out), "--steps", "1", "--batch", "4", "--limit", "8",
                    "--precision", "auto"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "fp32"
