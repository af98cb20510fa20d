"""Readers of the real sources on small files in the real formats, and their error messages."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from mgv2 import boxes
from tasks import TASKS
from tasks.grounding import grounded_caption_text
from tasks.readers import SOURCES, read_source
from tasks.readers.base import DataError
from tasks.readers.captions import read_coco_caption, read_textcaps
from tasks.readers.cc_sbu_align import PROMPTS, read_cc_sbu_align
from tasks.readers.flickr30k import (
    grid_to_pixels,
    read_flickr_caption_to_phrase,
    read_flickr_grounded_caption,
    read_flickr_phrase_to_box,
    split_grounded_caption,
)
from tasks.readers.llava import read_llava_conversation, read_llava_detail, read_llava_reason
from tasks.readers.ocrvqa import read_ocrvqa
from tasks.readers.pairs import iter_pairs_tar, read_pairs_folder, read_pairs_tar
from tasks.readers.text_only import read_alpaca, read_unnatural_instructions
from tasks.readers.visual_genome import read_vg_regions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _jpg(path: Path, size=(64, 48)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_sources_names_and_unknown():
    wanted = {"refcoco", "refcoco+", "refcocog", "vsr", "vqav2", "okvqa", "aokvqa", "gqa", "coco_det", "vg_regions",
              "coco_caption", "textcaps", "ocrvqa", "flickr_grounded_caption", "flickr_caption_to_phrase",
              "flickr_phrase_to_box", "llava_conversation", "llava_detail", "llava_reason", "cc_sbu_align",
              "unnatural_instructions", "alpaca", "pairs_folder", "pairs_tar"}
    assert wanted <= set(SOURCES) and all(callable(f) for f in SOURCES.values())
    with pytest.raises(DataError, match="unknown data source 'nope'.*refcoco"):
        read_source("nope", ".")


def test_adapters_on_shared_eval_files():
    vsr = SOURCES["vsr"](SHARED / "vsr", "dev")
    assert vsr and vsr[0].answers in (["true"], ["false"])
    ref = SOURCES["refcoco_eval"](SHARED / "refcoco_eval", "testA")
    assert len(ref) == 5657 and ref[0].meta["file_name"] == "COCO_train2014_000000581282.jpg"


# ------------------------------------------------------------------------------------ Visual Genome


def _vg(tmp_path: Path, regions: list[dict]) -> Path:
    _json(tmp_path / "image_data.json", [
        {"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg", "width": 800, "height": 600,
         "coco_id": None, "flickr_id": None},
    ])
    _json(tmp_path / "region_descriptions.json", [{"id": 1, "regions": regions}])
    return tmp_path


def test_visual_genome(tmp_path):
    root = _vg(tmp_path, [
        {"region_id": 10, "image_id": 1, "phrase": "a red kite ", "x": 10, "y": 20, "width": 30, "height": 40},
        {"region_id": 11, "image_id": 1, "phrase": "the big sky", "x": 0, "y": 0, "width": 800, "height": 300},
        {"region_id": 12, "image_id": 1, "phrase": "nothing", "x": 5, "y": 5, "width": 0, "height": 9},
        {"region_id": 13, "image_id": 1, "phrase": "a dog", "x": 100, "y": 50, "width": 127, "height": 129},
    ])
    recs = read_vg_regions(root)
    assert [r.expression for r in recs] == ["a red kite", "a dog"]  # big region filtered, empty skipped
    assert recs[0].box_xyxy == (10, 20, 40, 60) and (recs[0].width, recs[0].height) == (800, 600)
    assert recs[0].image == str(root / "VG_100K_2" / "1.jpg")
    assert len(read_vg_regions(root, max_area=None)) == 3
    assert TASKS["refer"].build(recs[0], random.Random(0)).target == "{<1><3><5><10>}"
    with pytest.raises(DataError, match="no 'val' split"):
        read_vg_regions(root, "val")


def test_visual_genome_malformed_region_names_file_and_region(tmp_path):
    root = _vg(tmp_path, [{"region_id": 10, "image_id": 1, "phrase": "ok", "x": 1, "y": 2, "width": 3, "height": 4},
                          {"region_id": 11, "image_id": 1, "x": 1, "y": 2, "width": 3, "height": 4}])
    with pytest.raises(DataError, match=r"region_descriptions\.json entry #0 region #1: missing field 'phrase'"):
        read_vg_regions(root)


# ------------------------------------------------------------------------------------ captions


def test_coco_caption_lavis_and_karpathy(tmp_path):
    _json(tmp_path / "coco_karpathy_train.json", [
        {"caption": "A man riding a horse.", "image": "train2014/COCO_train2014_000000000009.jpg", "image_id": "coco_9"},
        {"caption": "A cat.", "image": "val2014/COCO_val2014_000000000042.jpg", "image_id": "coco_42"},
    ])
    _json(tmp_path / "coco_karpathy_val.json", [{"image": "val2014/x.jpg", "caption": ["one", "two"]}])
    recs = read_coco_caption(tmp_path, "train", images="/coco/images")
    assert [r.caption for r in recs] == ["A man riding a horse.", "A cat."]
    assert recs[0].image == "/coco/images/train2014/COCO_train2014_000000000009.jpg"
    assert len(read_coco_caption(tmp_path, "train", train2014_only=True)) == 1
    assert [r.caption for r in read_coco_caption(tmp_path, "val")] == ["one", "two"]
    assert TASKS["caption"].build(recs[0], random.Random(0)).target == "a man riding a horse"

    karpathy = _json(tmp_path / "k" / "dataset_coco.json", {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "cocoid": 1,
         "sentences": [{"raw": "A dog. ", "tokens": ["a", "dog"]}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "test", "cocoid": 2, "sentences": [{"raw": "B."}]},
        {"filepath": "train2014", "filename": "c.jpg", "split": "train", "cocoid": 3, "sentences": [{"raw": "C."}]},
    ]})
    assert [r.caption for r in read_coco_caption(karpathy, "train")] == ["A dog.", "C."]
    assert [r.caption for r in read_coco_caption(karpathy, "train", restval=False)] == ["C."]
    assert [r.caption for r in read_coco_caption(karpathy.parent, "test")] == ["B."]


def test_coco_caption_malformed(tmp_path):
    path = _json(tmp_path / "coco_karpathy_train.json", [{"caption": "ok", "image": "a.jpg"}, {"image": "b.jpg"}])
    with pytest.raises(DataError, match=r"coco_karpathy_train\.json record #1: missing field 'caption'"):
        read_coco_caption(path)


def test_textcaps(tmp_path):
    _json(tmp_path / "TextCaps_0.1_train.json", {"dataset_type": "train", "data": [
        {"image_id": "0054c9", "image_path": "train/0054c9.jpg", "caption_str": "A sign that says STOP.",
         "caption_id": 7, "reference_strs": ["A sign that says STOP.", "a stop sign"], "image_width": 1024},
    ]})
    (rec,) = read_textcaps(tmp_path, "train", images="/tc")
    assert rec.image == "/tc/train/0054c9.jpg" and rec.caption == "A sign that says STOP."
    assert rec.meta["references"] == ["A sign that says STOP.", "a stop sign"]
    with pytest.raises(DataError, match="test split has no captions"):
        read_textcaps(tmp_path, "test")


# ------------------------------------------------------------------------------------ OCR-VQA


def test_ocrvqa(tmp_path):
    _json(tmp_path / "dataset.json", {
        "111": {"imageURL": "http://x/111.png", "questions": ["Who wrote this book?", "What is the title?"],
                "answers": ["Jane Doe", "Gardens"], "title": "Gardens", "authorName": "Jane Doe", "genre": "Home",
                "genreID": 1, "split": 1},
        "222": {"imageURL": "http://x/222.jpg", "questions": ["Is this a comic?"], "answers": ["No"], "title": "T",
                "genre": "Art", "split": 3},
    })
    recs = read_ocrvqa(tmp_path)
    assert [(r.question, r.answers) for r in recs] == [("Who wrote this book?", ["Jane Doe"]),
                                                      ("What is the title?", ["Gardens"])]
    assert recs[0].image == str(tmp_path / "images" / "111.png")
    assert [r.meta["image_id"] for r in read_ocrvqa(tmp_path, "test")] == ["222"]
    _json(tmp_path / "bad" / "dataset.json", {"9": {"imageURL": "a.jpg", "questions": ["q"], "answers": [], "split": 1}})
    with pytest.raises(DataError, match=r"dataset\.json entry '9': 1 questions but 0 answers"):
        read_ocrvqa(tmp_path / "bad")


# ------------------------------------------------------------------------------------ Flickr30k


def test_grid_to_pixels_inverts_box_text():
    for width in (1, 3, 7, 64, 100, 224, 333, 640, 1023, 4000):
        for g in range(101):
            box = boxes.make_box(g, g, min(g + 1, 100), min(g + 1, 100))
            px = grid_to_pixels(box, width, width * 0.75 + 1)
            assert boxes.from_pixels(px, width, width * 0.75 + 1).coords == box.coords
            assert px[2] > px[0] and px[3] > px[1]
    with pytest.raises(ValueError, match="inverted"):
        grid_to_pixels(boxes.make_box(50, 10, 40, 20), 100, 100)


def test_split_grounded_caption():
    caption, spans = split_grounded_caption(
        "A <p>man</p> {<1><2><30><40>} rides <p>two horses</p> {<40><5><60><90>}<delim>{<61><5><99><90>}.")
    assert caption == "A man rides two horses."
    assert [(caption[s:e], [b.coords for b in bs]) for s, e, bs in spans] == [
        ("man", [(1, 2, 30, 40)]), ("two horses", [(40, 5, 60, 90), (61, 5, 99, 90)])]


def _flickr(tmp_path: Path) -> Path:
    _jpg(tmp_path / "img" / "100.jpg", (200, 100))
    _jpg(tmp_path / "img" / "200.jpg", (333, 250))
    _json(tmp_path / "groundedcaption.json", [
        {"image_id": "100", "grounded_caption": "<p>A man</p> {<10><20><30><40>} in <p>a red hat</p> {<12><3><20><15>}."},
        {"image_id": 200, "grounded_caption": "Two <p>dogs</p> {<0><50><50><100>}<delim>{<50><50><100><100>} play"},
    ])
    _json(tmp_path / "captiontobbox.json", [
        {"image_id": "100", "caption": "A man in a red hat.",
         "output": "<p>A man</p> {<10><20><30><40>} <p>a red hat</p> {<12><3><20><15>}"},
    ])
    _json(tmp_path / "phrasetobbox.json", [
        {"image_id": "200", "phrase": "dogs", "bbox": "{<0><50><50><100>}<delim>{<50><50><100><100>}"},
    ])
    return tmp_path


def test_flickr_grounded_caption_round_trip(tmp_path):
    root = _flickr(tmp_path)
    recs = read_flickr_grounded_caption(root, images=root / "img")
    data = json.loads((root / "groundedcaption.json").read_text())
    assert [grounded_caption_text(r) for r in recs] == [d["grounded_caption"] for d in data]
    assert recs[0].caption == "A man in a red hat." and (recs[0].width, recs[0].height) == (200, 100)
    assert [recs[0].phrase_text(p) for p in recs[0].phrases] == ["A man", "a red hat"]
    assert recs[1].phrases[0].boxes[1] == pytest.approx((166.5, 125, 333, 250), abs=0.01)
    sized = read_flickr_grounded_caption(root / "groundedcaption.json", sizes={"100": (200, 100), "200": (333, 250)})
    assert [r.phrases[0].boxes for r in sized] == [r.phrases[0].boxes for r in recs]


def test_flickr_detection_sources(tmp_path):
    root = _flickr(tmp_path)
    (c2p,) = read_flickr_caption_to_phrase(root, images=root / "img")
    assert c2p.query == "A man in a red hat." and [p for p, _ in c2p.objects] == ["A man", "a red hat"]
    task = TASKS["detection"]
    assert task.build(c2p, random.Random(0)).target == json.loads((root / "captiontobbox.json").read_text())[0]["output"]
    (p2b,) = read_flickr_phrase_to_box(root, images=root / "img")
    assert task.build(p2b, random.Random(0)).turns[0].instruction == "[detection] dogs"
    assert task.build(p2b, random.Random(0)).target == "<p>dogs</p> {<0><50><50><100>}<delim>{<50><50><100><100>}"


def test_flickr_errors_name_file_and_record(tmp_path):
    root = _flickr(tmp_path)
    with pytest.raises(DataError, match=r"groundedcaption\.json record #0: cannot read the size of picture"):
        read_flickr_grounded_caption(root)  # pictures are not in root
    _json(root / "bad" / "groundedcaption.json", [
        {"image_id": "100", "grounded_caption": "<p>ok</p> {<1><1><2><2>}"},
        {"image_id": "100", "grounded_caption": "A <p>man</p> without a box"},
    ])
    with pytest.raises(DataError, match=r"groundedcaption\.json record #1: .*phrase 'man' has no box"):
        read_flickr_grounded_caption(root / "bad", images=root / "img")
    _json(root / "bad2" / "phrasetobbox.json", [{"image_id": "100", "phrase": "x", "bbox": "{<9><9><1><1>}"}])
    with pytest.raises(DataError, match=r"phrasetobbox\.json record #0: .*inverted"):
        read_flickr_phrase_to_box(root / "bad2", images=root / "img")


# ------------------------------------------------------------------------------------ LLaVA


def _llava(tmp_path: Path) -> Path:
    conv = [{"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors\nof the bus?"},
        {"from": "gpt", "value": "White and red."},
        {"from": "human", "value": "What feature can be seen?"},
        {"from": "gpt", "value": "A door. "},
    ]}]
    _json(tmp_path / "conversation_58k.json", conv)
    _json(tmp_path / "detail_23k.json", conv)
    _json(tmp_path / "complex_reasoning_77k.json", [{"id": 5, "image": "x.jpg", "conversations": [
        {"from": "human", "value": "Why Is It So?\n<image>"}, {"from": "gpt", "value": "Because."}]}])
    return tmp_path


def test_llava(tmp_path):
    root = _llava(tmp_path)
    (conv,) = read_llava_conversation(root, images="/coco/train2014")
    assert conv.turns == [("What are the colorsof the bus?", "White and red."), ("What feature can be seen?", "A door.")]
    assert conv.image == "/coco/train2014/COCO_train2014_000000033471.jpg"
    (det,) = read_llava_detail(root, image_name="field")
    assert det.turns == conv.turns[:1] and det.image == str(root / "000000033471.jpg")
    (rea,) = read_llava_reason(root, process_instruction=True)
    assert rea.turns == [("why is it so?", "Because.")]
    sample = TASKS["chat"].build(conv, random.Random(0))
    assert [t.answer for t in sample.turns] == ["White and red.", "A door."]


def test_llava_malformed_names_record_and_message(tmp_path):
    path = _json(tmp_path / "conversation_58k.json", [{"id": "1", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "human", "value": "again"}]}])
    with pytest.raises(DataError, match=r"conversation_58k\.json record #0 message #1: expected from='gpt'"):
        read_llava_conversation(path)


# ------------------------------------------------------------------------------------ cc_sbu_align


def test_cc_sbu_align(tmp_path):
    _json(tmp_path / "filter_cap.json", {"annotations": [{"image_id": str(i), "caption": f"Caption {i}. "} for i in range(5)]})
    recs = read_cc_sbu_align(tmp_path)
    assert [r.turns[0][0] for r in recs] == [*PROMPTS, PROMPTS[0]]
    assert recs[2].image == str(tmp_path / "image" / "2.jpg") and recs[2].turns[0][1] == "Caption 2."
    _json(tmp_path / "bad" / "filter_cap.json", {"annotations": [{"image_id": "1"}]})
    with pytest.raises(DataError, match=r"filter_cap\.json annotation #0: missing field 'caption'"):
        read_cc_sbu_align(tmp_path / "bad")


# ------------------------------------------------------------------------------------ text only


def test_unnatural_instructions_json_and_jsonl(tmp_path):
    entry = {"instruction": "Add the numbers.", "instances": [
        {"instruction_with_input": "Add the numbers.\n1, 2", "input": "1, 2", "constraints": "Reply with a number.",
         "output": "3"},
        {"instruction_with_input": "Add the numbers.\n2, 2", "input": "2, 2", "constraints": None, "output": "4"}]}
    path = _json(tmp_path / "unnatural_instruction_filer.json", [entry])
    (rec,) = read_unnatural_instructions(tmp_path)
    assert rec.image is None and rec.turns == [("Add the numbers.\n1, 2 Reply with a number.", "3")]
    assert len(read_unnatural_instructions(path, all_instances=True)) == 2
    jsonl = tmp_path / "core_data.jsonl"
    jsonl.write_text(json.dumps(entry) + "\n\n" + json.dumps({"instruction": "x", "instances": [{"output": "y"}]}) + "\n")
    with pytest.raises(DataError, match=r"core_data\.jsonl:3 instance #0: missing field 'instruction_with_input'"):
        read_unnatural_instructions(jsonl)
    assert TASKS["chat"].build(rec, random.Random(0)).image is None


def test_alpaca_and_dolly(tmp_path):
    path = _json(tmp_path / "alpaca_data.json", [
        {"instruction": "Name a colour.", "input": "", "output": "Red."},
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    ])
    recs = read_alpaca(path)
    assert [r.turns[0] for r in recs] == [("Name a colour.", "Red."), ("Translate to French.\n\ncat", "chat")]
    dolly = tmp_path / "databricks-dolly-15k.jsonl"
    dolly.write_text(json.dumps({"instruction": "Summarise.", "context": "Long text.", "response": "Short.",
                                 "category": "summarization"}) + "\n")
    (rec,) = SOURCES["dolly"](dolly)
    assert rec.turns == [("Summarise.\n\nLong text.", "Short.")] and rec.meta["category"] == "summarization"
    _json(tmp_path / "bad.json", [{"instruction": "x", "input": ""}])
    with pytest.raises(DataError, match=r"bad\.json record #0: missing field 'output'"):
        read_alpaca(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------ pairs


def test_pairs_folder(tmp_path):
    _jpg(tmp_path / "00000" / "000000001.jpg")
    (tmp_path / "00000" / "000000001.txt").write_text("a red square\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "00000" / "000000002.png")
    _json(tmp_path / "00000" / "000000002.json", {"caption": "a black square", "url": "http://x"})
    recs = read_pairs_folder(tmp_path)
    assert [r.caption for r in recs] == ["a red square", "a black square"]
    assert recs[0].image == str(tmp_path / "00000" / "000000001.jpg")
    assert TASKS["caption"].build(recs[0], random.Random(0)).target == "a red square"
    _jpg(tmp_path / "00001" / "lonely.jpg")
    with pytest.raises(DataError, match=r"lonely\.jpg: picture without a caption"):
        read_pairs_folder(tmp_path)


def _tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_pairs_tar(tmp_path):
    jpg = _jpg(tmp_path / "x.jpg")
    _tar(tmp_path / "shards" / "00000.tar", [
        ("000000001", {"jpg": jpg, "txt": b"a red square", "json": b'{"caption": "ignored"}'}),
        ("sub/000000002", {"jpg": jpg, "json": json.dumps({"caption": "from json"}).encode()}),
    ])
    _tar(tmp_path / "shards" / "00001.tar", [("000000003", {"png": jpg, "txt": "caf\u00e9".encode()})])
    recs = read_pairs_tar(tmp_path / "shards")
    assert [r.caption for r in recs] == ["a red square", "from json", "caf\u00e9"]
    assert [r.meta["key"] for r in recs] == ["000000001", "sub/000000002", "000000003"]
    assert recs[0].image == jpg
    from mgv2.image import load_image

    assert load_image(recs[0].image).size == (64, 48)
    assert len(read_pairs_tar(tmp_path / "shards" / "00000.tar", limit=1)) == 1
    assert len(list(iter_pairs_tar(tmp_path / "shards", limit=2))) == 2


def test_pairs_tar_errors(tmp_path):
    jpg = _jpg(tmp_path / "x.jpg")
    bad = _tar(tmp_path / "bad.tar", [("000000001", {"jpg": jpg, "txt": b"ok"}), ("000000002", {"jpg": jpg})])
    with pytest.raises(DataError, match=r"bad\.tar sample '000000002': no caption"):
        read_pairs_tar(bad)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(DataError, match=r"broken\.tar: cannot read as a tar shard"):
        read_pairs_tar(broken)


def test_coco_refer_takes_objects_named_once_per_image(tmp_path):
    """Your own COCO-format data as refer data (the README's fine-tuning example)."""
    import random

    from tasks import TASKS
    from tasks.readers import read_coco_refer

    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "kite"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [50, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [100, 20, 50, 40], "area": 2000, "iscrowd": 0},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    records = read_coco_refer(tmp_path / "instances.json", images=tmp_path)
    assert [(r.expression, r.box_xyxy) for r in records] == [("kite", (100.0, 20.0, 150.0, 60.0))]
    sample = TASKS["refer"].build(records[0], random.Random(0))
    assert sample.target == "{<50><20><75><60>}"
