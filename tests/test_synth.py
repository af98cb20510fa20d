"""The synthetic world: determinism, splits by image, unambiguous expressions, exact geometry,
and every exported format read back by the real readers."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from mgv2 import boxes
from mgv2.synth import SynthError, export, scene_from_manifest, synth_sources
from mgv2.synth.render import render
from mgv2.synth.world import Desc, Scene, SceneObject, resolve, text_meanings, unique_texts
from tasks import TASKS
from tasks.grounding import grounded_caption_text
from tasks.readers import SOURCES
from tasks.readers.base import load_data_pickle
from tasks.records import (
    CaptionRecord,
    ConversationRecord,
    DetectionRecord,
    GroundedCaptionRecord,
    RegionRecord,
    VQARecord,
)

SEED, N = 3, 24


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    export(out, seed=SEED, images=N, progress=False)
    return out


@pytest.fixture(scope="module")
def manifest(world) -> list[dict]:
    return [json.loads(line) for line in (world / "scenes.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def refs(world) -> list[dict]:
    return load_data_pickle(world / "refcoco" / "refs(unc).p")


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes(world, tmp_path):
    export(tmp_path, seed=SEED, images=N, progress=False)
    for rel in ("refcoco/instances.json", "refcoco/refs(unc).p", "scenes.jsonl", "vqav2/v2_mscoco_train2014_annotations.json",
                "pairs/shard-000000.tar", "images/COCO_train2014_000000000005.jpg"):
        assert (tmp_path / rel).read_bytes() == (world / rel).read_bytes(), rel
    assert not list(tmp_path.rglob("*.tmp")), "atomic writes leave no temporary files"


def test_workers_write_the_same_files(world, tmp_path):
    export(tmp_path, seed=SEED, images=N, progress=False, workers=2)
    ours = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert ours == sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    for rel in ours:
        assert (tmp_path / rel).read_bytes() == (world / rel).read_bytes(), rel
    with pytest.raises(SynthError, match="--workers"):
        export(tmp_path / "x", seed=SEED, images=2, progress=False, workers=0)


def test_other_seed_other_world(world, tmp_path):
    export(tmp_path, seed=SEED + 1, images=4, progress=False)
    first = json.loads((tmp_path / "scenes.jsonl").read_text().splitlines()[0])
    assert first["objects"] != json.loads((world / "scenes.jsonl").read_text().splitlines()[0])["objects"]


def test_refuses_non_empty_folder_and_cli(world, tmp_path, capsys):
    from mgv2.cli import main

    assert main(["synth", "--out", str(world), "--images", "2", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "w"), "--images", "3", "--seed", "1", "--quiet"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "w" / "images").iterdir())) == 3


# ------------------------------------------------------------------------------------ splits


def test_refs_split_by_image(refs, manifest):
    split_of = {m["image_id"]: m["split"] for m in manifest}
    seen = defaultdict(set)
    for r in refs:
        seen[r["image_id"]].add(r["split"])
        assert r["split"] == split_of[r["image_id"]]
    assert all(len(s) == 1 for s in seen.values())
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    balloon = 1  # category id of "balloon"
    assert all(r["category_id"] == balloon for r in refs if r["split"] == "testA")
    assert all(r["category_id"] != balloon for r in refs if r["split"] == "testB")


def test_other_formats_split_by_image(world, manifest):
    held_out = {m["file_name"] for m in manifest if m["split"] != "train"}
    train = {m["file_name"] for m in manifest if m["split"] == "train"}
    src = synth_sources(world)
    for name in ("vqav2", "gqa", "vsr", "coco_caption", "flickr_grounded_caption", "coco_det"):
        e = src[name]
        train_split, *other_splits = e["splits"]
        got = {Path(r.image).name for r in SOURCES[e["source"]](e["root"], train_split, **e["options"])}
        assert got and got <= train, name
        for split in other_splits:
            got = {Path(r.image).name for r in SOURCES[e["source"]](e["root"], split, **e["options"])}
            assert got <= held_out, (name, split)


# ------------------------------------------------------------------------------------ expressions


def test_every_expression_is_unambiguous(refs, manifest):
    by_image = {m["image_id"]: m for m in manifest}
    checked = 0
    for r in refs:
        entry = by_image[r["image_id"]]
        scene = scene_from_manifest(entry)
        target = next(o["index"] for o in entry["objects"] if o["ann_id"] == r["ann_id"])
        meanings = text_meanings(scene)
        for s in r["sentences"]:
            assert meanings.get(s["sent"]) == {target}, (entry["file_name"], s["sent"], meanings.get(s["sent"]))
            checked += 1
    assert checked > 3 * len(manifest)


def test_expressions_need_more_than_colour(refs):
    sents = [s["sent"] for r in refs for s in r["sentences"]]
    relational = [s for s in sents if any(w in s for w in (" of ", "above", "below", "under", "over", "behind", "front"))]
    superlative = [s for s in sents if any(w in s for w in ("biggest", "largest", "smallest", "left", "right", "top",
                                                               "bottom", "highest", "lowest"))]
    assert len(relational) > 0.2 * len(sents) and len(superlative) > 0.2 * len(sents)


def test_manifest_rebuilds_the_exact_scene(manifest):
    for entry in manifest[:6]:
        scene = scene_from_manifest(entry)
        for o, m in zip(scene.objects, entry["objects"]):
            assert [round(v, 2) for v in o.visible_box] == m["visible_box"]


# ------------------------------------------------------------------------------------ geometry


def _two_objects() -> Scene:
    # a blue box (x 66.4..133.6) behind a red ball of radius 50 centred at x=150 that covers the
    # box's whole right edge
    back = SceneObject("box", "blue", 100.0, 100.0, 80.0)
    front = SceneObject("ball", "red", 150.0, 100.0, 100.0)
    return Scene(image_id=1, width=256, height=256, background="plain", background_seed=0, objects=[back, front])


def test_visible_box_under_occlusion():
    scene = _two_objects()
    back, front = scene.objects
    half = 0.84 * 80 / 2
    assert back.box == pytest.approx((100 - half, 100 - half, 100 + half, 100 + half))
    x2 = 150 - np.sqrt(50**2 - half**2)  # where the circle crosses the box's top and bottom edges
    vx1, vy1, vx2, vy2 = back.visible_box
    assert (vx1, vy1, vy2) == pytest.approx((100 - half, 100 - half, 100 + half))
    assert vx2 == pytest.approx(x2, abs=0.1)
    assert front.visible_box == pytest.approx(front.box)
    assert front.box == pytest.approx((100, 50, 200, 150), abs=0.1)
    assert back.visible_fraction < 0.8
    # the picture agrees: blue pixels lie inside the visible box (blur and JPEG-free, 1.5 px slack)
    img = render(scene).astype(int)
    blue = (img[..., 2] > img[..., 0] + 60) & (img[..., 2] > img[..., 1] + 40)
    ys, xs = np.nonzero(blue)
    assert xs.min() >= vx1 - 1.5 and xs.max() + 1 <= vx2 + 1.5
    assert ys.min() >= vy1 - 1.5 and ys.max() + 1 <= vy2 + 1.5
    assert xs.max() + 1 >= vx2 - 2  # and reach it


def _relation_scene() -> Scene:
    objects = [
        SceneObject("star", "yellow", 200.0, 60.0, 60.0),  # 0, behind the box
        SceneObject("ball", "green", 60.0, 60.0, 50.0),  # 1
        SceneObject("balloon", "red", 60.0, 190.0, 50.0),  # 2, below the green ball
        SceneObject("box", "blue", 225.0, 80.0, 40.0),  # 3, in front of the star
        SceneObject("ball", "green", 140.0, 200.0, 25.0),  # 4, a small green ball
    ]
    return Scene(image_id=1, width=320, height=256, background="plain", background_seed=0, objects=objects)


def test_relations_on_a_hand_made_scene():
    s = _relation_scene()
    assert s.holds(1, "left of", 0) and s.holds(0, "right of", 1)
    assert s.holds(1, "above", 2) and s.holds(2, "below", 1)
    assert not s.holds(1, "left of", 2) and not s.holds(1, "left of", 2, strict=False)  # same x
    assert s.holds(3, "in front of", 0) and s.holds(0, "behind", 3)
    assert not s.holds(0, "in front of", 3) and not s.holds(1, "in front of", 0, strict=False)  # no overlap
    assert not s.holds(1, "right of", 0, strict=False)
    # descriptions resolve through the same relations
    assert resolve(s, Desc("ball", relation="above", landmark=Desc("balloon"))) == [1]
    assert resolve(s, Desc("ball", superlative="biggest")) == [1]
    assert resolve(s, Desc("ball", superlative="smallest")) == [4]
    assert resolve(s, Desc("ball", "green")) == [1, 4]  # colour alone does not tell them apart
    assert resolve(s, Desc("star", relation="behind", landmark=Desc("box"))) == [0]
    texts = {i: {t for t, _ in v} for i, v in unique_texts(s).items()}
    assert "biggest ball" in texts[1] and "smallest green ball" in texts[4]
    assert "green ball" not in texts[1] | texts[4]
    assert "star behind the box" in texts[0] and "box in front of the star" in texts[3]


# ------------------------------------------------------------------------------------ readers


EXPECTED = {
    "refcoco": RegionRecord,
    "refcoco_identify": RegionRecord,
    "refcoco_eval": RegionRecord,
    "coco_det": DetectionRecord,
    "vsr": VQARecord,
    "vqav2": VQARecord,
    "gqa": VQARecord,
    "flickr_grounded_caption": GroundedCaptionRecord,
    "flickr_caption_to_phrase": DetectionRecord,
    "flickr_phrase_to_box": DetectionRecord,
    "coco_caption": CaptionRecord,
    "llava_conversation": ConversationRecord,
    "llava_detail": ConversationRecord,
    "llava_reason": ConversationRecord,
    "alpaca": ConversationRecord,
    "unnatural_instructions": ConversationRecord,
    "pairs_tar": CaptionRecord,
}


def test_every_format_read_by_the_real_readers(world):
    src = synth_sources(world)
    assert set(src) == set(EXPECTED)
    rng = random.Random(0)
    for name, e in src.items():
        for split in e["splits"]:
            records = SOURCES[e["source"]](e["root"], split, **e["options"])
            if name == "vsr" and split != "train" and not records:
                continue  # few held-out pictures may hold no VSR pair
            assert records, (name, split)
            assert all(isinstance(r, EXPECTED[name]) for r in records), name
            sample = TASKS[e["task"]].build(records[0], rng)  # the task accepts it
            assert sample.target
            image = records[0].image
            if image is not None and not isinstance(image, bytes):
                assert Path(image).is_file(), (name, image)


def test_refer_pickle_structure(refs):
    assert isinstance(refs, list) and refs
    for r in refs:
        assert set(r) == {"sent_ids", "file_name", "ann_id", "ref_id", "image_id", "split", "sentences", "category_id"}
        assert r["file_name"] == f"COCO_train2014_{r['image_id']:012d}_{r['ann_id']}.jpg"
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        for s in r["sentences"]:
            assert s["tokens"] == s["sent"].split() and s["raw"].lower() == s["sent"]


def test_refer_targets_box_text(world, manifest, refs):
    """The reader's records carry the visible box; the task writes its official box text."""
    e = synth_sources(world)["refcoco"]
    records = SOURCES["refcoco"](e["root"], "val", **e["options"])
    by_ann = {o["ann_id"]: (o, m) for m in manifest for o in m["objects"]}
    task = TASKS["refer"]
    n_sents = sum(len(r["sentences"]) for r in refs if r["split"] == "val")
    assert len(records) == n_sents
    for rec in records:
        obj, m = by_ann[rec.meta["ann_id"]]
        assert rec.box_xyxy == pytest.approx(obj["visible_box"], abs=0.011)
        assert (rec.width, rec.height) == (m["width"], m["height"])
        answer = task.build(rec, random.Random(1)).target
        assert answer == boxes.format_box(obj["visible_box"], m["width"], m["height"])
        assert boxes.parse(answer).first_box.coords == boxes.from_pixels(obj["visible_box"], m["width"], m["height"]).coords
    # the evaluation json gives the same boxes as the pickle
    ev = SOURCES["refcoco_eval"](synth_sources(world)["refcoco_eval"]["root"], "val", images=e["options"]["images"])
    assert [r.box_xyxy for r in ev] == [r.box_xyxy for r in records]
    assert [r.expression for r in ev] == [r.expression for r in records]


def test_grounded_captions_round_trip(world):
    """The grounding task writes back exactly the file's grounded caption (box text included)."""
    e = synth_sources(world)["flickr_grounded_caption"]
    data = json.loads((Path(e["root"]) / "groundedcaption.json").read_text())
    records = SOURCES[e["source"]](e["root"], "train", **e["options"])
    assert [grounded_caption_text(r) for r in records] == [d["grounded_caption"] for d in data]
    c2p = json.loads((Path(e["root"]) / "captiontobbox.json").read_text())
    det = SOURCES["flickr_caption_to_phrase"](e["root"], "train", **e["options"])
    task = TASKS["detection"]
    assert [task.build(r, random.Random(0)).target for r in det] == [d["output"] for d in c2p]


def test_vqa_answers_and_vsr_labels(world, manifest):
    e = synth_sources(world)["vqav2"]
    records = SOURCES["vqav2"](e["root"], "train", **e["options"])
    assert all(len(r.answers) == 10 for r in records)
    kinds = {r.meta["answer_type"] for r in records}
    assert {"number", "other", "yes/no"} <= kinds
    # VSR labels agree with the scene model
    e = synth_sources(world)["vsr"]
    by_file = {m["file_name"]: scene_from_manifest(m) for m in manifest}
    from mgv2.synth.language import VSR_RELATION

    rel_of = {v: k for k, v in VSR_RELATION.items()}
    for rec in SOURCES["vsr"](e["root"], "train", **e["options"]):
        scene = by_file[Path(rec.image).name]
        (a,) = scene.of_kind(rec.meta["subj"])
        (b,) = scene.of_kind(rec.meta["obj"])
        assert scene.holds(a, rel_of[rec.meta["relation"]], b) == (rec.answers == ["true"])
