"""Write a synthetic world in the real dataset formats (see :mod:`mgv2.synth` for the layout).

Every annotation file is written atomically (:mod:`mgv2.io`), and only after all pictures are
drawn, so an interrupted run never leaves a half-written annotation file.  The output is a
pure function of ``(seed, images)``: no clocks, no unordered iteration, tar members with fixed
metadata.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import pickle
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgv2 import boxes
from mgv2.errors import MGV2Error
from mgv2.io import atomic_write_bytes, atomic_write_text
from mgv2.synth import language as L
from mgv2.synth.render import encode_jpeg, rasterize, render
from mgv2.synth.world import FOCUS_KIND, KINDS, Scene, make_scene, polygons_of

REF_SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
# Other formats have a training split and one held-out split (the val/testA/testB images).
HELD_OUT = {"train": "train", "val": "val", "testA": "val", "testB": "val"}
VSR_SPLIT = {"train": "train", "val": "dev", "testA": "test", "testB": "test"}
CAPTION_SPLIT = {"train": "train", "val": "val", "testA": "test", "testB": "test"}
PAIRS_PER_SHARD = 500
CATEGORIES = [{"id": k + 1, "name": kind, "supercategory": "toy"} for k, kind in enumerate(KINDS)]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}

# Random streams: each format draws from its own generator, so formats do not disturb each other.
_REFS, _VQA, _GQA, _VSR, _CAPTION, _GROUNDED, _LLAVA, _ANSWERS, _TEXT = range(1, 10)


class SynthError(MGV2Error):
    """The synthetic world cannot be written (bad arguments, a non-empty output folder)."""


def image_stem(image_id: int) -> str:
    """``COCO_train2014_000000000042``: COCO train2014 names (27 characters, as the RefCOCO
    evaluation json's ``img_id[:27]`` rule and the VQAv2/LLaVA naming rules expect)."""
    return f"COCO_train2014_{image_id:012d}"


def assign_splits(n: int, seed: int) -> list[str]:
    """Split of each image (refs are split BY IMAGE, like RefCOCO's unc split).

    About 10% each go to val, testA (balloon scenes only) and testB (other scenes only); the
    rest is train.  Fewer than 4 images are all train.
    """
    splits = ["train"] * n
    if n < 4:
        return splits
    k = max(1, n // 10)
    rng = np.random.default_rng([int(seed), 7919])
    balloon = [i for i in range(n) if i % 2 == 0]
    other = [i for i in range(n) if i % 2 == 1]
    rng.shuffle(balloon)
    rng.shuffle(other)
    for i in balloon[:k]:
        splits[i] = "testA"
    for i in other[:k]:
        splits[i] = "testB"
    rest = balloon[k:] + other[k:]
    rng.shuffle(rest)
    for i in rest[:k]:
        splits[i] = "val"
    return splits


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 1000 + stream])


def _r2(v: float) -> float:
    return round(float(v), 2)


def xywh(box_xyxy) -> list[float]:
    x1, y1, x2, y2 = box_xyxy
    return [_r2(x1), _r2(y1), _r2(x2 - x1), _r2(y2 - y1)]


def segmentation(scene: Scene, i: int) -> list | dict:
    """COCO segmentation of the VISIBLE part: polygons, or RLE when occlusion leaves a hole."""
    visible = scene.objects[i].visible
    parts = polygons_of(visible)
    if all(not p.interiors for p in parts):
        return [[_r2(v) for xy in list(p.exterior.coords)[:-1] for v in xy] for p in parts]
    from pycocotools import mask as mask_utils

    m = rasterize(visible, scene.width, scene.height)
    rle = mask_utils.encode(np.asfortranarray((m > 0).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@dataclass
class Item:
    """One picture and everything written about it."""

    scene: Scene
    split: str
    file_name: str
    ann_ids: list[int]
    refs: dict[int, list[str]] = field(default_factory=dict)
    vqa: list[tuple[L.QA, list[str]]] = field(default_factory=list)
    gqa: list[L.QA] = field(default_factory=list)
    vsr: list[dict] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    grounded: L.GroundedCaption | None = None
    phrases: list[tuple[str, list[int]]] = field(default_factory=list)
    conversation: list[tuple[str, str]] = field(default_factory=list)
    detail: tuple[str, str] | None = None
    reason: tuple[str, str] | None = None

    @property
    def image_id(self) -> int:
        return self.scene.image_id

    @property
    def stem(self) -> str:
        return image_stem(self.scene.image_id)


def _ref_targets(item: Item) -> list[int]:
    """Which objects get refs: testA only balloons, testB only the other objects."""
    objs = item.scene.objects
    if item.split == "testA":
        return [o.index for o in objs if o.kind == FOCUS_KIND]
    if item.split == "testB":
        return [o.index for o in objs if o.kind != FOCUS_KIND]
    return [o.index for o in objs]


def describe(item: Item, seed: int, index: int) -> None:
    """Fill ``item`` with every kind of text (each from its own random stream)."""
    scene = item.scene
    sentences = L.referring_sentences(scene, _rng(seed, index, _REFS))
    item.refs = {i: sentences[i] for i in _ref_targets(item) if i in sentences}
    answers_rng = _rng(seed, index, _ANSWERS)
    vqa_rng = _rng(seed, index, _VQA)
    item.vqa = [(qa, L.annotator_answers(qa, answers_rng)) for qa in L.questions(scene, vqa_rng, int(vqa_rng.integers(3, 6)))]
    gqa_rng = _rng(seed, index, _GQA)
    item.gqa = L.questions(scene, gqa_rng, int(gqa_rng.integers(2, 5)), makers=L.GQA_MAKERS)
    item.vsr = L.statements(scene, _rng(seed, index, _VSR), 4)
    item.captions = L.captions(scene, _rng(seed, index, _CAPTION))
    g_rng = _rng(seed, index, _GROUNDED)
    item.grounded = L.grounded_caption(scene, g_rng)
    item.phrases = L.phrase_queries(scene, g_rng)
    l_rng = _rng(seed, index, _LLAVA)
    item.conversation = L.conversation(scene, l_rng)
    item.detail = L.detail_turn(scene, l_rng)
    item.reason = L.reasoning_turn(scene, l_rng)


# ------------------------------------------------------------------------------------ formats


def _coco(items: list[Item], seed: int) -> dict:
    images, annotations = [], []
    for it in items:
        s = it.scene
        images.append(
            {"id": it.image_id, "file_name": it.file_name, "width": s.width, "height": s.height, "license": 1,
             "coco_url": "", "flickr_url": "", "date_captured": ""}
        )
        for o, ann_id in zip(s.objects, it.ann_ids):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": it.image_id,
                    "category_id": CATEGORY_ID[o.kind],
                    "segmentation": segmentation(s, o.index),
                    "area": _r2(o.visible_area),
                    "bbox": xywh(o.visible_box),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"mgv2 synthetic world (seed {seed})", "version": "1.0", "year": 2024,
                 "contributor": "mgv2 synth", "date_created": ""},
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def _refs(items: list[Item]) -> list[dict]:
    """The refer toolkit's ``refs(unc).p`` content: plain dicts, lists, strings and ints."""
    refs: list[dict] = []
    sent_id = 0
    for it in items:
        rng = np.random.default_rng([it.image_id, 31])
        for i, sents in sorted(it.refs.items()):
            ann_id = it.ann_ids[i]
            sentences = []
            for s in sents:
                raw = L.cap(s) if rng.random() < 0.3 else s
                sentences.append({"tokens": s.split(), "raw": raw, "sent_id": sent_id, "sent": s})
                sent_id += 1
            refs.append(
                {
                    "sent_ids": [x["sent_id"] for x in sentences],
                    "file_name": f"{it.stem}_{ann_id}.jpg",
                    "ann_id": ann_id,
                    "ref_id": len(refs),
                    "image_id": it.image_id,
                    "split": it.split,
                    "sentences": sentences,
                    "category_id": CATEGORY_ID[it.scene.objects[i].kind],
                }
            )
    return refs


def _refcoco_eval(items: list[Item], split: str) -> list[dict]:
    out = []
    for it in items:
        if it.split != split:
            continue
        for i, sents in sorted(it.refs.items()):
            for s in sents:
                out.append({"img_id": f"{it.stem}_{it.ann_ids[i]}", "sents": s, "bbox": xywh(it.scene.objects[i].visible_box),
                            "height": it.scene.height, "width": it.scene.width})
    return out


def _vqa(items: list[Item], split: str) -> tuple[dict, dict]:
    info = {"description": "mgv2 synthetic world, VQAv2 format", "version": "2.0", "year": 2024}
    lic = {"name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
    questions, annotations = [], []
    for it in items:
        if HELD_OUT[it.split] != split:
            continue
        for k, (qa, answers) in enumerate(it.vqa):
            qid = it.image_id * 1000 + k
            questions.append({"image_id": it.image_id, "question": qa.question, "question_id": qid})
            annotations.append(
                {
                    "question_type": qa.question_type,
                    "multiple_choice_answer": L.most_common(answers),
                    "answers": [
                        {"answer": a, "answer_confidence": "yes" if a.lower() == qa.answer else "maybe", "answer_id": j + 1}
                        for j, a in enumerate(answers)
                    ],
                    "image_id": it.image_id,
                    "answer_type": qa.answer_type,
                    "question_id": qid,
                }
            )
    # data_subtype names the image files (COCO_train2014_<id>.jpg) in BOTH files: every synthetic
    # picture is a "train2014" picture, as every RefCOCO picture is.
    q = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": lic,
         "data_subtype": "train2014", "questions": questions}
    a = {"info": info, "license": lic, "data_subtype": "train2014", "annotations": annotations}
    return q, a


def _gqa(items: list[Item], split: str) -> dict:
    out: dict[str, dict] = {}
    for it in items:
        if HELD_OUT[it.split] != split:
            continue
        for k, qa in enumerate(it.gqa):
            qid = f"{it.image_id}{k:02d}"
            out[qid] = {
                "semantic": [],
                "entailed": [],
                "equivalent": [qid],
                "question": qa.question,
                "imageId": it.stem,
                "isBalanced": True,
                "groups": {"global": None, "local": qa.question_type},
                "answer": qa.answer,
                "semanticStr": "",
                "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                "types": {"structural": qa.structural, "semantic": qa.semantic, "detailed": qa.question_type},
                "fullAnswer": qa.full_answer,
            }
    return out


def _vsr_lines(items: list[Item], split: str) -> str:
    lines = []
    for it in items:
        if VSR_SPLIT[it.split] != split:
            continue
        for st in it.vsr:
            lines.append(json.dumps({
                "image": it.file_name, "image_link": "", "caption": st["caption"], "label": st["label"],
                "relation": st["relation"], "subj": st["subj"], "obj": st["obj"], "annotator_id": 0,
                "vote_true_validator_id": "[]", "vote_false_validator_id": "[]",
            }))
    return "".join(line + "\n" for line in lines)


def _flickr(items: list[Item], split: str) -> tuple[list, list, list]:
    grounded, c2p, p2b = [], [], []
    for it in items:
        if HELD_OUT[it.split] != split or it.grounded is None:
            continue
        s = it.scene
        grounded.append({"image_id": it.stem, "grounded_caption": it.grounded.grounded(s)})
        first = L.GroundedCaption(it.grounded.pieces[: next(
            k for k, (t, _) in enumerate(it.grounded.pieces) if t.endswith(".")) + 1])
        output = " ".join(boxes.phrase_text(t, L.grid_boxes(s, objs)) for t, objs in first.phrase_groups())
        c2p.append({"image_id": it.stem, "caption": first.plain, "output": output})
        for phrase, objs in it.phrases:
            p2b.append({"image_id": it.stem, "phrase": phrase, "bbox": boxes.boxes_text(L.grid_boxes(s, objs))})
    return grounded, c2p, p2b


def _karpathy(items: list[Item], split: str) -> list[dict]:
    out = []
    for it in items:
        if CAPTION_SPLIT[it.split] != split:
            continue
        image = f"images/{it.file_name}"
        if split == "train":
            out += [{"caption": c, "image": image, "image_id": f"synth_{it.image_id}"} for c in it.captions]
        else:
            out.append({"image": image, "caption": list(it.captions)})
    return out


def _llava(items: list[Item]) -> tuple[list, list, list]:
    def entry(it: Item, turns: list[tuple[str, str]]) -> dict:
        conv = []
        for user, assistant in turns:
            conv += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
        return {"id": f"{it.image_id:012d}", "image": it.file_name, "conversations": conv}

    train = [it for it in items if it.split == "train"]
    conversation = [entry(it, it.conversation) for it in train]
    detail = [entry(it, [it.detail]) for it in train if it.detail]
    reason = [entry(it, [it.reason]) for it in train if it.reason]
    return conversation, detail, reason


def _text(seed: int, n: int) -> tuple[list, list]:
    rng = np.random.default_rng([int(seed), 1000 + _TEXT])
    alpaca, unnatural = [], []
    for _ in range(n):
        instr, inp, out = L.text_instruction(rng)
        alpaca.append({"instruction": instr, "input": inp, "output": out})
    for _ in range(n):
        instr, inp, out = L.text_instruction(rng)
        constraints = "Answer with the result only." if rng.random() < 0.5 else None
        unnatural.append({
            "instruction": instr,
            "instances": [{"instruction_with_input": f"{instr}\n{inp}" if inp else instr, "input": inp,
                           "constraints": constraints, "output": out}],
        })
    return alpaca, unnatural


def _tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _manifest_line(it: Item) -> str:
    s = it.scene
    objects = []
    for o, ann_id in zip(s.objects, it.ann_ids):
        objects.append({
            **o.params(),
            "index": o.index,
            "ann_id": ann_id,
            "category_id": CATEGORY_ID[o.kind],
            "visible_box": [_r2(v) for v in o.visible_box],
            "box": [_r2(v) for v in o.box],
            "area": _r2(o.area),
            "visible_area": _r2(o.visible_area),
            "center": [_r2(v) for v in o.center],
        })
    entry = {
        "image_id": it.image_id, "file_name": it.file_name, "width": s.width, "height": s.height, "split": it.split,
        "focus": s.focus, "background": s.background, "background_seed": s.background_seed, "objects": objects,
        "refs": {str(it.ann_ids[i]): sents for i, sents in sorted(it.refs.items())},
    }
    return json.dumps(entry)


# ------------------------------------------------------------------------------------ sources

# name -> (SOURCES reader, default task, path relative to the output folder, splits, options)
SOURCE_TABLE: dict[str, tuple[str, str, str, list[str], dict[str, Any]]] = {
    "refcoco": ("refcoco", "refer", ".", list(REF_SPLITS), {"images": "images"}),
    "refcoco_identify": ("refcoco", "identify", ".", list(REF_SPLITS), {"images": "images"}),
    "refcoco_eval": ("refcoco_eval", "refer", "refcoco_eval", ["val", "testA", "testB"], {"images": "images"}),
    "coco_det": ("coco_det", "detection", "coco_det", ["train", "val"], {"images": "images"}),
    "vsr": ("vsr", "vqa", "vsr", ["train", "dev", "test"], {"images": "images"}),
    "vqav2": ("vqav2", "vqa", "vqav2", ["train", "val"], {"images": "images"}),
    "gqa": ("gqa", "vqa", "gqa", ["train", "testdev"], {"images": "images"}),
    "flickr_grounded_caption": ("flickr_grounded_caption", "grounding", "flickr30k", ["train", "val"], {"images": "images"}),
    "flickr_caption_to_phrase": ("flickr_caption_to_phrase", "detection", "flickr30k", ["train", "val"], {"images": "images"}),
    "flickr_phrase_to_box": ("flickr_phrase_to_box", "detection", "flickr30k", ["train", "val"], {"images": "images"}),
    "coco_caption": ("coco_caption", "caption", "coco_caption", ["train", "val", "test"], {"images": "."}),
    "llava_conversation": ("llava_conversation", "chat", "llava", ["train"], {"images": "images"}),
    "llava_detail": ("llava_detail", "chat", "llava", ["train"], {"images": "images"}),
    "llava_reason": ("llava_reason", "chat", "llava", ["train"], {"images": "images"}),
    "alpaca": ("alpaca", "chat", "text/alpaca.json", ["train"], {}),
    "unnatural_instructions": ("unnatural_instructions", "chat", "text/unnatural_instructions.json", ["train"], {}),
    "pairs_tar": ("pairs_tar", "caption", "pairs", ["train"], {}),
}
_PATH_OPTIONS = ("images",)


def sources_json() -> dict:
    return {
        name: {"source": src, "task": task, "path": path, "splits": splits, "options": options}
        for name, (src, task, path, splits, options) in SOURCE_TABLE.items()
    }


def synth_sources(out_dir: str | Path) -> dict[str, dict]:
    """``sources.json`` of a written world with absolute paths: for each name, ``source`` (a key
    of ``tasks.readers.SOURCES``), ``task``, ``root``, ``splits`` and reader ``options``, so that
    ``SOURCES[e["source"]](e["root"], split, **e["options"])`` reads it."""
    out_dir = Path(out_dir).resolve()
    path = out_dir / "sources.json"
    if not path.is_file():
        raise SynthError(f"{path} not found; write the world first with `mgv2 synth --out {out_dir}`")
    data = json.loads(path.read_text())
    result = {}
    for name, e in data.items():
        options = {k: (str(out_dir / v) if k in _PATH_OPTIONS else v) for k, v in e["options"].items()}
        result[name] = {"source": e["source"], "task": e["task"], "root": str(out_dir / e["path"]),
                        "splits": e["splits"], "options": options}
    return result


# ------------------------------------------------------------------------------------ export


def _dump(obj: Any) -> str:
    return json.dumps(obj)


def _draw(seed: int, index: int, split: str, out: Path) -> Item:
    """Scene ``index``: drawn, described and its picture written (ann ids are set by the caller).
    Depends only on ``(seed, index)``, so pictures can be drawn in any order or process."""
    scene = make_scene(seed, index)
    item = Item(scene=scene, split=split, file_name=image_stem(scene.image_id) + ".jpg", ann_ids=[])
    describe(item, seed, index)
    atomic_write_bytes(out / "images" / item.file_name, encode_jpeg(render(scene)))
    return item


def export(out_dir: str | Path, seed: int = 0, images: int = 200, progress: bool = True,
           overwrite: bool = False, workers: int = 1) -> dict[str, int]:
    """Draw ``images`` scenes and write every format under ``out_dir``; returns counts.

    ``workers`` > 1 draws the pictures in that many processes; the files are the same."""
    if images < 1:
        raise SynthError(f"--images must be at least 1, got {images}")
    if workers < 1:
        raise SynthError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out} is not empty; choose a new folder or pass --overwrite to replace its files")
    splits = assign_splits(images, seed)
    indices = range(images)
    bar = {"desc": "synth", "unit": "img", "total": images, "disable": not progress}
    if workers == 1:
        items = [_draw(seed, i, splits[i], out) for i in tqdm(indices, **bar)]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            drawn = pool.map(_draw, repeat(seed), indices, splits, repeat(out), chunksize=64)
            items = list(tqdm(drawn, **bar))
    ann_id = 0
    for item in items:  # ann ids run over the pictures in order, whatever process drew them
        item.ann_ids = list(range(ann_id + 1, ann_id + 1 + len(item.scene.objects)))
        ann_id += len(item.scene.objects)

    files: dict[str, str | bytes] = {}
    coco = _coco(items, seed)
    files["refcoco/instances.json"] = _dump(coco)
    refs = _refs(items)
    files["refcoco/refs(unc).p"] = pickle.dumps(refs, protocol=2)
    for split in ("val", "testA", "testB"):
        files[f"refcoco_eval/refcoco_{split}.json"] = _dump(_refcoco_eval(items, split))
    for split in ("train", "val"):
        files[f"coco_det/instances_{split}.json"] = _dump(_coco([it for it in items if HELD_OUT[it.split] == split], seed))
        q, a = _vqa(items, split)
        files[f"vqav2/v2_OpenEnded_mscoco_{split}2014_questions.json"] = _dump(q)
        files[f"vqav2/v2_mscoco_{split}2014_annotations.json"] = _dump(a)
        g, c2p, p2b = _flickr(items, split)
        suffix = "" if split == "train" else f"_{split}"
        files[f"flickr30k/groundedcaption{suffix}.json"] = _dump(g)
        files[f"flickr30k/captiontobbox{suffix}.json"] = _dump(c2p)
        files[f"flickr30k/phrasetobbox{suffix}.json"] = _dump(p2b)
    files["gqa/train_balanced_questions.json"] = _dump(_gqa(items, "train"))
    files["gqa/testdev_balanced_questions.json"] = _dump(_gqa(items, "val"))
    for split in ("train", "dev", "test"):
        files[f"vsr/{split}.jsonl"] = _vsr_lines(items, split)
    for split in ("train", "val", "test"):
        files[f"coco_caption/coco_karpathy_{split}.json"] = _dump(_karpathy(items, split))
    conv, det, rea = _llava(items)
    files["llava/conversation_58k.json"] = _dump(conv)
    files["llava/detail_23k.json"] = _dump(det)
    files["llava/complex_reasoning_77k.json"] = _dump(rea)
    alpaca, unnatural = _text(seed, max(20, images // 2))
    files["text/alpaca.json"] = _dump(alpaca)
    files["text/unnatural_instructions.json"] = _dump(unnatural)
    train = [it for it in items if it.split == "train"]
    for shard, start in enumerate(range(0, len(train), PAIRS_PER_SHARD)):
        samples = []
        for it in train[start : start + PAIRS_PER_SHARD]:
            jpg = (out / "images" / it.file_name).read_bytes()
            caption = it.captions[0]
            meta = {"caption": caption, "key": f"{it.image_id:09d}", "width": it.scene.width, "height": it.scene.height}
            samples.append((f"{it.image_id:09d}", {"jpg": jpg, "txt": caption.encode(), "json": _dump(meta).encode()}))
        files[f"pairs/shard-{shard:06d}.tar"] = _tar_bytes(samples)
    files["scenes.jsonl"] = "".join(_manifest_line(it) + "\n" for it in items)
    files["sources.json"] = json.dumps(sources_json(), indent=2)

    for rel, content in files.items():
        if isinstance(content, bytes):
            atomic_write_bytes(out / rel, content)
        else:
            atomic_write_text(out / rel, content)
    return {
        "images": len(items),
        "objects": ann_id,
        "refs": len(refs),
        "sentences": sum(len(r["sentences"]) for r in refs),
        **{f"refs_{s}": sum(r["split"] == s for r in refs) for s in REF_SPLITS},
        "vqa_questions": sum(len(it.vqa) for it in items),
        "gqa_questions": sum(len(it.gqa) for it in items),
        "vsr_statements": sum(len(it.vsr) for it in items),
        "files": len(files) + len(items),
    }
