"""mgv2 eval: metric aggregation, rescoring on the shared annotations, readers in the real formats
(synthetic world from mgv2.synth), the tiny-model engine (outputs, resume, image reuse, torchrun),
and detection mAP (COCOeval vs supervision)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from eval.engine import EvalItem, ResumeError, check_run_info, read_predictions, run_generation
from eval.metrics import box_iou, is_hit
from eval.scoring import answer_kind, score_refer, score_vqa
from mgv2 import boxes
from mgv2.cli import main
from mgv2.errors import MGV2Error
from tasks.readers.base import DataError
from tasks.records import RegionRecord, VQARecord

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REFCOCO_EVAL = SHARED / "refcoco_eval"
VSR_TEST = SHARED / "vsr" / "zeroshot_test.jsonl"

# SPEC §7 split sizes (expressions)
SPLIT_SIZES = {
    ("refcoco", "val"): 10834, ("refcoco", "testA"): 5657, ("refcoco", "testB"): 5095,
    ("refcoco+", "val"): 10758, ("refcoco+", "testA"): 5726, ("refcoco+", "testB"): 4889,
    ("refcocog", "val"): 4896, ("refcocog", "test"): 9602,
}  # fmt: skip


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model runs faster on one thread than on two contended ones (OpenMP waits)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """The synthetic world in the real formats (mgv2.synth), 24 pictures."""
    from mgv2.synth import export

    out = tmp_path_factory.mktemp("synth")
    export(out, seed=0, images=24, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="module")
def shared_val():
    from tasks.readers.refcoco import read_refcoco_eval_json

    return read_refcoco_eval_json(REFCOCO_EVAL / "refcoco_val.json")


@pytest.fixture(scope="module")
def placeholder_images(tmp_path_factory, shared_val) -> Path:
    """Placeholder JPEGs at the recorded sizes for the first 14 shared RefCOCO val expressions
    (distinct colours per image, the GT box of the first expression drawn in)."""
    folder = tmp_path_factory.mktemp("coco_train2014")
    for k, rec in enumerate(shared_val[:14]):
        path = folder / rec.image
        if path.exists():
            continue
        img = Image.new("RGB", (int(rec.width), int(rec.height)), (40 * k % 256, 90, 200 - 30 * k % 200))
        ImageDraw.Draw(img).rectangle([int(v) for v in rec.box_xyxy], fill=(230, 30, 30))
        img.save(path, quality=90)
    return folder


# ----------------------------------------------------------------------------- aggregation


def _region(box, w=100, h=100) -> RegionRecord:
    return RegionRecord(image="x.jpg", width=w, height=h, expression="thing", box_xyxy=box)


def test_refer_aggregation_hand_made():
    # 100x100 image: grid units are pixels.  GT (0,0,10,10)
    recs = [_region((0, 0, 10, 10)) for _ in range(6)] + [_region((0, 0, 9, 9))]
    answers = [
        "{<0><0><10><10>}",  # exact: IoU 1
        "{<0><0><20><10>}",  # continuous IoU exactly 0.5 -> hit; official (+1) 11*11/(21*11) = 0.524 -> hit
        "a box somewhere",  # unparseable: wrong
        "{<50><50><60><60>}",  # wrong object (IoU 0)
        "{<0><0><10><30>}",  # loose: IoU 1/3
        None,  # missing: wrong, still in the denominator
        "{<0><0><19><9>}",  # GT (0,0,9,9): continuous 81/171 = 0.47 miss; official 100/200 = 0.5, needs > 0.5: miss
    ]
    m, rows = score_refer(recs, answers)
    assert m["n"] == 7
    assert m["n_correct"] == 2 and m["acc50"] == pytest.approx(2 / 7)
    assert m["acc50_continuous"] == pytest.approx(2 / 7)
    assert m["acc50_official"] == pytest.approx(2 / 7)
    assert m["n_unparseable"] == 1 and m["n_missing"] == 1
    assert m["parse_failure_rate"] == pytest.approx(1 / 7)
    assert m["n_wrong_object"] == 1 and m["n_loose_box"] == 2
    assert m["acc75"] == pytest.approx(1 / 7)
    assert m["miou"] == pytest.approx((1 + 0.5 + 0 + 0 + 1 / 3 + 0 + 81 / 171) / 7)
    assert m["centre_acc"] == pytest.approx(2 / 7)  # centres (5,5) and (10,5) are in; (5,15), (9.5,4.5) are out
    assert [r["status"] for r in rows] == ["ok", "ok", "unparseable", "ok", "ok", "missing", "ok"]
    # the official convention is a different rule on the same rows: (0,0,20,10) vs (0,0,10,10) is
    # 0.524 > 0.5 (hit) and the last one is exactly 0.5 (miss)
    off, _ = score_refer(recs, answers, plus_one=True)
    assert off["iou_convention"] == "official" and off["acc50"] == pytest.approx(2 / 7)
    assert rows[6]["iou_official"] == pytest.approx(0.5) and not is_hit(rows[6]["iou_official"], plus_one=True)
    # the conventions disagree on small boxes: GT (0,0,2,2), prediction (0,0,3,3)
    # continuous 4/9 = 0.44 (miss); official (+1) 9/16 = 0.56 (hit)
    rec = _region((0, 0, 2, 2))
    cont, _ = score_refer([rec], ["{<0><0><3><3>}"])
    offi, _ = score_refer([rec], ["{<0><0><3><3>}"], plus_one=True)
    assert cont["acc50"] == 0.0 and offi["acc50"] == 1.0
    assert cont["acc50_official"] == 1.0 and offi["acc50_continuous"] == 0.0  # both always reported


def test_vqa_scoring_variants_and_breakdown():
    recs = [
        VQARecord(image="a.jpg", question="q?", answers=["yes"] * 10, meta={"answer_type": "yes/no"}),
        VQARecord(image="a.jpg", question="q?", answers=["two"] * 2 + ["2"] * 1 + ["three"] * 7,
                  meta={"answer_type": "number"}),
        VQARecord(image="b.jpg", question="q?", answers=["red"] * 10, meta={"answer_type": "other"}),
        VQARecord(image="b.jpg", question="q?", answers=["red"] * 10, meta={"answer_type": "other"}),
    ]
    m, rows = score_vqa(recs, ["Yes", "2", "", None], "vqa_acc")
    # "Yes" is lower-cased before the evaluator (MiniGPT-v2 results file).  "2" matches "two" x2 + "2"
    # after normalisation: leave-one-out gives 2/3 for those 3 answers and 1 for the other 7 -> 0.9
    assert [r["score"] for r in rows] == pytest.approx([1.0, 0.9, 0.0, 0.0])
    assert m["accuracy"] == pytest.approx(1.9 / 4) and m["n_empty"] == 1 and m["n_missing"] == 1
    assert m["by_answer_type"]["other"] == {"n": 2, "accuracy": 0.0, "n_off_type": 0}
    assert m["vqa_variant"] == "official"
    # exact match after VQA normalisation (GQA, VSR)
    em, _ = score_vqa([VQARecord(image="a", question="q", answers=["true"])] * 2, ["True.", "false"], "exact")
    assert em["accuracy"] == 0.5


def test_vqa_answers_of_the_wrong_kind_are_counted():
    """"yes" to a what-question, "no" to a true/false statement and "red" to an is-question are
    off-type; a wrong answer of the right kind, an empty or a missing one is not."""
    recs = [
        VQARecord(image="a", question="What colour?", answers=["red"], meta={"answer_type": "other"}),
        VQARecord(image="a", question="What colour?", answers=["red"], meta={"answer_type": "other"}),
        VQARecord(image="a", question="Is it red?", answers=["yes"], meta={"answer_type": "yes/no"}),
        VQARecord(image="a", question="Is it red?", answers=["no"], meta={"answer_type": "yes/no"}),
        VQARecord(image="a", question="stmt", answers=["false"], meta={"answer_type": "vsr"}),
        VQARecord(image="a", question="stmt", answers=["true"], meta={"answer_type": "vsr"}),
        VQARecord(image="a", question="What colour?", answers=["red"], meta={"answer_type": "other"}),
        VQARecord(image="a", question="What colour?", answers=["red"], meta={"answer_type": "other"}),
    ]
    m, rows = score_vqa(recs, ["Yes.", "blue", "red", "yes", "no", "False", "", None], "exact")
    assert [r["off_type"] for r in rows] == [True, False, True, False, True, False, False, False]
    assert m["n_off_type"] == 3
    assert {k: v["n_off_type"] for k, v in m["by_answer_type"].items()} == {"other": 1, "vsr": 1, "yes/no": 1}
    assert answer_kind("No.") == "yes/no" and answer_kind("TRUE") == "true/false" and answer_kind("two") == "open"


# ----------------------------------------------------------------------------- shared annotations


def test_shared_split_sizes_match_spec():
    from eval.benchmarks import Source, get_benchmark
    from tasks.readers.vsr import read_vsr

    for (dataset, split), n in SPLIT_SIZES.items():
        records = get_benchmark(dataset).load(Source(), split)
        assert len(records) == n, (dataset, split)
    assert len(read_vsr(VSR_TEST)) == 1222
    assert get_benchmark("refcoco").resolve_splits("all") == ["val", "testA", "testB"]
    assert get_benchmark("refcocog").resolve_splits(None) == ["val"]


def test_rescore_perfect_predictions_shared_refcoco_val(tmp_path, capsys, shared_val):
    """GT boxes written as box text: truncation to the 0..100 grid keeps every expression above
    IoU 0.5 on this split (checked independently here), but lowers the mean IoU and Acc@0.75."""
    preds = write_jsonl(tmp_path / "p.jsonl", (
        {"index": i, "answer": boxes.format_box(r.box_xyxy, r.width, r.height)} for i, r in enumerate(shared_val)
    ))
    ious = [box_iou(boxes.to_pixels(boxes.from_pixels(r.box_xyxy, r.width, r.height), r.width, r.height), r.box_xyxy)
            for r in shared_val]
    expected75 = sum(is_hit(v, threshold=0.75) for v in ious) / len(ious)
    assert min(ious) >= 0.5 and expected75 < 1.0  # what is true of this split
    rc, out, _ = run_cli(["eval", "refcoco", "--split", "val", "--predictions", str(preds), "--json",
                          "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    m = json.loads(out)["splits"]["val"]
    assert m["n"] == 10834 and m["n_correct"] == 10834
    assert m["acc50"] == m["acc50_continuous"] == m["acc50_official"] == 1.0
    assert m["acc75"] == pytest.approx(expected75)
    assert m["miou"] == pytest.approx(sum(ious) / len(ious)) and 0.9 < m["miou"] < 0.96
    assert m["parse_failure_rate"] == 0.0 and m["n_missing"] == 0
    for name in ("metrics.json", "report.md", "iou_hist.png", "worst_cases.png", "val/metrics.json"):
        assert (tmp_path / "o" / name).is_file(), name


def test_rescore_mixed_predictions_counts_every_expression(tmp_path, capsys, shared_val):
    """--limit 100: 50 perfect, 20 unparseable, 10 on the wrong object, 20 absent -> 50%."""
    lines = []
    for i, r in enumerate(shared_val[:80]):
        if i < 50:
            answer = boxes.format_box(r.box_xyxy, r.width, r.height)
        elif i < 70:
            answer = "the bowl on the left"
        else:  # a box in the opposite corner, no overlap with the GT box
            x1, y1 = r.box_xyxy[:2]
            answer = "{<0><0><1><1>}" if x1 > r.width * 0.05 or y1 > r.height * 0.05 else "{<98><98><100><100>}"
        lines.append({"index": i, "answer": answer})
    preds = write_jsonl(tmp_path / "p.jsonl", lines)
    for iou in ("continuous", "official"):
        rc, out, err = run_cli(["eval", "refcoco", "--split", "val", "--predictions", str(preds), "--limit", "100",
                                "--iou", iou, "--json", "--out", str(tmp_path / iou)], capsys)
        assert rc == 0
        m = json.loads(out)["splits"]["val"]
        assert m["n"] == 100 and m["acc50"] == 0.5 and m["iou_convention"] == iou
        assert (m["n_unparseable"], m["n_wrong_object"], m["n_missing"]) == (20, 10, 20)
        assert m["parse_failure_rate"] == 0.2
        assert "20 of 100 items have no prediction" in err
    report = (tmp_path / "official" / "report.md").read_text()
    assert "official +1-pixel IoU > 0.5" in report and "| val | 100 |" in report


def test_rescore_shared_vsr(tmp_path, capsys):
    labels = [json.loads(x)["label"] for x in VSR_TEST.read_text().splitlines() if x.strip()]
    perfect = write_jsonl(tmp_path / "a.jsonl", ({"index": i, "answer": "True." if y else "false"}
                                                 for i, y in enumerate(labels)))
    rc, out, _ = run_cli(["eval", "vsr", "--predictions", str(perfect), "--json", "--out", str(tmp_path / "a")], capsys)
    assert rc == 0 and json.loads(out)["splits"]["test"] == pytest.approx(
        {"n": 1222, "metric": "exact", "accuracy": 1.0, "n_empty": 0, "n_missing": 0, "n_wrong": 0, "n_off_type": 0})
    always_true = write_jsonl(tmp_path / "b.jsonl", ({"index": i, "answer": "true"} for i in range(len(labels))))
    rc, out, _ = run_cli(["eval", "vsr", "--split", "test", "--predictions", str(always_true), "--json",
                          "--out", str(tmp_path / "b")], capsys)
    assert json.loads(out)["splits"]["test"]["accuracy"] == pytest.approx(sum(labels) / len(labels))
    assert (tmp_path / "b" / "worst_cases.png").is_file()


def test_predictions_file_is_checked(tmp_path, capsys):
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"index": 0, "answer": "true"}, {"index": 0, "answer": "true"}])
    rc, _, err = run_cli(["eval", "vsr", "--predictions", str(dup), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "appears more than once" in err
    with pytest.raises(DataError, match="outside the split"):
        read_predictions(write_jsonl(tmp_path / "big.jsonl", [{"index": 5, "answer": "x"}]), 5)
    with pytest.raises(DataError, match="index"):
        read_predictions(write_jsonl(tmp_path / "bad.jsonl", [{"answer": "x"}]), 5)
    rc, _, err = run_cli(["eval", "refcoco", "--split", "all", "--predictions", str(dup)], capsys)
    assert rc == 2 and "--split" in err


# ----------------------------------------------------------------------------- readers (real formats)


def test_readers_on_synthetic_world(synth):
    from tasks.readers.coco_det import read_coco_detection
    from tasks.readers.gqa import read_gqa
    from tasks.readers.refcoco import read_refcoco, read_refcoco_eval_json
    from tasks.readers.vqa import read_vqa
    from tasks.readers.vsr import read_vsr

    for split in ("val", "testA", "testB"):
        refer = read_refcoco(synth, "refcoco", split, "unc", images=synth / "images")
        flat = read_refcoco_eval_json(synth / "refcoco_eval" / f"refcoco_{split}.json", images=synth / "images")
        key = lambda r: (r.image, r.expression, tuple(round(v, 2) for v in r.box_xyxy))
        assert refer and sorted(map(key, refer)) == sorted(map(key, flat))  # one record per sentence in both
        assert all(Path(r.image).is_file() for r in refer)
    with pytest.raises(DataError, match="no ref has split 'test'"):
        read_refcoco(synth, "refcoco", "test")
    # the curriculum option: only sentences of at most max_words words, all of them
    every = read_refcoco(synth, "refcoco", "train")
    short = read_refcoco(synth, "refcoco", "train", max_words=2)
    assert short and all(len(r.expression.split()) <= 2 for r in short)
    assert len(short) == sum(len(r.expression.split()) <= 2 for r in every) < len(every)
    with pytest.raises(DataError, match="max_words"):
        read_refcoco(synth, "refcoco", "train", max_words=0)
    # only refs with a same-category distractor in their picture, counted from instances.json here
    instances = json.loads((synth / "refcoco" / "instances.json").read_text())
    per_image = {}
    for a in instances["annotations"]:
        per_image[(a["image_id"], a["category_id"])] = per_image.get((a["image_id"], a["category_id"]), 0) + 1
    shared = read_refcoco(synth, "refcoco", "train", min_same_category=2)
    expected = [r for r in every if per_image[(r.meta["image_id"], r.meta["category_id"])] >= 2]
    assert shared and [r.expression for r in shared] == [r.expression for r in expected] and len(shared) < len(every)
    assert len(read_refcoco(synth, "refcoco", "train", min_same_category=1)) == len(every)
    with pytest.raises(DataError, match="min_same_category"):
        read_refcoco(synth, "refcoco", "train", min_same_category=0)
    vqa = read_vqa(synth / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
                   synth / "vqav2/v2_mscoco_val2014_annotations.json", images=synth / "images")
    assert vqa and all(len(r.answers) == 10 and Path(r.image).is_file() for r in vqa)
    with pytest.raises(DataError, match="annotations"):
        read_vqa(synth / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json")
    gqa = read_gqa(synth / "gqa/testdev_balanced_questions.json", images=synth / "images")
    assert gqa and all(len(r.answers) == 1 and Path(r.image).is_file() for r in gqa)
    vsr = read_vsr(synth / "vsr/test.jsonl")
    assert all(r.answers in (["true"], ["false"]) for r in vsr)
    det = read_coco_detection(synth / "coco_det/instances_val.json", synth / "images")
    assert det and all(r.meta["image_id"] and len(r.objects) == len(r.meta["category_ids"]) for r in det)


def test_readers_vizwiz_aokvqa_and_errors(tmp_path):
    from tasks.readers.vqa import read_vqa

    viz = tmp_path / "val.json"
    viz.write_text(json.dumps([{"image": "VizWiz_val_00000000.jpg", "question": "what is this?",
                                "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10,
                                "answer_type": "unanswerable", "answerable": 0}]))
    (r,) = read_vqa(viz, images="/imgs")
    assert r.image == "/imgs/VizWiz_val_00000000.jpg" and r.answers == ["unanswerable"] * 10
    aok = tmp_path / "aokvqa_v1p0_val.json"
    aok.write_text(json.dumps([{"question_id": "x1", "image_id": 42, "question": "why?", "choices": ["a", "b"],
                                "correct_choice_idx": 0, "direct_answers": ["rain"] * 10}]))
    (r,) = read_vqa(aok)
    assert r.image == "000000000042.jpg" and r.meta["question_id"] == "x1"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "a.jpg", "question": "q"}]))
    with pytest.raises(DataError, match="unknown VQA format"):
        read_vqa(bad)


# ----------------------------------------------------------------------------- tiny-model engine


def test_tiny_end_to_end_on_shared_annotations(tmp_path, capsys, placeholder_images):
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(["eval", "refcoco", "--split", "val", "--images", str(placeholder_images),
                             "--limit", "14", "--out", str(out), "--batch-size", "4", "--workers", "2",
                             "--no-progress", "--json"], capsys)
    assert rc == 0
    payload = json.loads(stdout)
    assert payload["splits"]["val"]["n"] == 14
    lines = [json.loads(x) for x in (out / "val" / "predictions.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == list(range(14))
    assert all(x["prompt"].startswith("[refer] give me the location of ") for x in lines)
    for name in ("iou_hist.png", "worst_cases.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 100
    report = (out / "report.md").read_text()
    assert "## Failure breakdown" in report and "iou_hist.png" in report and "worst_cases.png" in report
    assert json.loads((out / "metrics.json").read_text()) == payload


def test_json_output_stays_json_when_the_config_loads_a_vision_checkpoint(tmp_path, capsys, placeholder_images):
    """The vision encoder's load report is a diagnostic: stderr, not the --json stdout."""
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.vision import EVAViT

    cfg = load_yaml(ModelConfig, ROOT / "configs" / "model" / "demo.yaml")
    torch.save(EVAViT(cfg.vision).state_dict(), tmp_path / "vit.pth")
    rc, stdout, stderr = run_cli(["eval", "refcoco", "--split", "val", "--images", str(placeholder_images),
                                  "--limit", "2", "--out", str(tmp_path / "run"), "--workers", "0", "--no-progress",
                                  "--json", "--set", f"vision.checkpoint={tmp_path / 'vit.pth'}"], capsys)
    assert rc == 0
    assert json.loads(stdout)["splits"]["val"]["n"] == 2
    assert "vision encoder: loaded" not in stderr  # --json is quiet on every stream ...
    rc, stdout, stderr = run_cli(["eval", "refcoco", "--split", "val", "--images", str(placeholder_images),
                                  "--limit", "2", "--out", str(tmp_path / "run2"), "--workers", "0", "--no-progress",
                                  "--set", f"vision.checkpoint={tmp_path / 'vit.pth'}"], capsys)
    assert rc == 0 and "vision encoder: loaded" in stderr and "vision encoder" not in stdout  # ... else stderr


def test_resume_gives_the_same_file_as_one_run(tmp_path, capsys, monkeypatch, placeholder_images):
    args = ["eval", "refcoco", "--split", "val", "--images", str(placeholder_images), "--batch-size", "3",
            "--workers", "0", "--no-progress", "--json"]
    one = tmp_path / "one"
    assert run_cli([*args, "--limit", "14", "--out", str(one)], capsys)[0] == 0
    two = tmp_path / "two"
    assert run_cli([*args, "--limit", "5", "--out", str(two)], capsys)[0] == 0  # "killed" after 5 items
    pred = two / "val" / "predictions.jsonl"
    assert len(pred.read_text().splitlines()) == 5
    with open(pred, "a") as f:  # and a line cut off mid-write
        f.write('{"index": 5, "answer": "{<1')
    rc, out, _ = run_cli([*args, "--limit", "14", "--out", str(two)], capsys)
    assert rc == 0
    assert pred.read_bytes() == (one / "val" / "predictions.jsonl").read_bytes()
    indices = [json.loads(x)["index"] for x in pred.read_text().splitlines()]
    assert indices == list(range(14))  # nothing lost, nothing twice
    assert json.loads(out)["splits"] == json.loads((one / "metrics.json").read_text())["splits"]
    # a rerun with nothing left to do does not even build the model
    def no_model(*_):
        raise AssertionError("the model was built although every prediction exists")

    monkeypatch.setattr("eval.cli._pipeline", no_model)
    rc, again, _ = run_cli([*args, "--limit", "14", "--out", str(two)], capsys)
    assert rc == 0 and json.loads(again)["splits"] == json.loads(out)["splits"]
    # a rerun with other settings into the same folder is refused
    rc, _, err = run_cli([*args, "--limit", "14", "--out", str(two), "--max-new-tokens", "5"], capsys)
    assert rc == 2 and "other settings" in err


def test_image_embedding_reuse_and_same_answers_as_official_loop(tmp_path, tiny_pipeline, synth):
    from eval.benchmarks import get_benchmark
    from mgv2.image import load_image
    from mgv2.sample import Sample, Turn
    from tasks.readers.refcoco import read_refcoco

    bench = get_benchmark("refcoco")
    records = read_refcoco(synth, "refcoco", "val", images=synth / "images")[:12]
    items = [EvalItem(i, r.image, bench.prompt(r)) for i, r in enumerate(records)]
    n_images = len({r.image for r in records})
    assert n_images < len(records)
    embedded = []
    original = tiny_pipeline.model.embed_images

    def counting(pixels):
        embedded.append(pixels.shape[0])
        return original(pixels)

    tiny_pipeline.model.embed_images = counting
    found = run_generation(tiny_pipeline, items, tmp_path / "o", batch_size=5, workers=0, progress=False)
    tiny_pipeline.model.embed_images = original
    assert sum(embedded) == n_images  # each unique image encoded once
    assert sorted(found) == list(range(len(records)))
    # the official loop: every expression re-encodes its image, batches of 10
    reference = []
    for start in range(0, len(records), 10):
        chunk = records[start:start + 10]
        emb = tiny_pipeline.model.embed_images(tiny_pipeline.processor.batch([load_image(r.image) for r in chunk]))
        samples = [Sample(image=r.image, turns=[Turn(bench.prompt(r))]) for r in chunk]
        reference += tiny_pipeline.generate(samples, emb, list(range(len(chunk))))
    assert [found[i] for i in range(len(records))] == reference
    plain = run_generation(tiny_pipeline, items, tmp_path / "plain", batch_size=5, workers=0, progress=False,
                           share_prefix=False)
    assert plain == found


def test_shared_prefix_generation_matches_model_generate_with_eos(tiny_pipeline, synth):
    """The shared-prefix greedy loop against the model's own generate (transformers), with an
    EOS that occurs mid-answer (a random model never emits the real one): same ids, rows finish
    on time; the pipeline uses it for greedy decoding and gives the same texts either way."""
    from eval.benchmarks import get_benchmark
    from mgv2.generation import shared_prefix_greedy
    from mgv2.image import load_image
    from mgv2.model import GenerationSettings
    from mgv2.sample import Sample, Turn
    from tasks.readers.refcoco import read_refcoco

    records = read_refcoco(synth, "refcoco", "testA", images=synth / "images")[:6]
    keys = list(dict.fromkeys(r.image for r in records))
    embeds = tiny_pipeline.model.embed_images(tiny_pipeline.processor.batch([load_image(k) for k in keys]))
    index = [keys.index(r.image) for r in records]
    samples = [Sample(image=r.image, turns=[Turn(get_benchmark("refcoco").prompt(r))]) for r in records]
    settings = GenerationSettings(max_new_tokens=8)
    model, enc = tiny_pipeline.model, tiny_pipeline.encoder
    ids = model.generate(tiny_pipeline.prompt_batch(samples, index), settings, image_embeds=embeds)
    real_eos = model.eos_token_id
    model.eos_token_id = ids[0][3]  # this row stops after at most 3 tokens
    try:
        reference = model.generate(tiny_pipeline.prompt_batch(samples, index), settings, image_embeds=embeds)
        with warnings.catch_warnings():  # the KV cache goes in under the name this transformers wants
            warnings.simplefilter("error", FutureWarning)
            shared = shared_prefix_greedy(model, enc, samples, embeds, index, settings)
        texts = tiny_pipeline.generate(samples, embeds, index, settings)
        plain = tiny_pipeline.generate(samples, embeds, index, settings, share_prefix=False)
    finally:
        model.eos_token_id = real_eos
    assert shared == reference and len(shared[0]) <= 3  # stopped at the (first) EOS
    assert texts == plain == [enc.decode(r) for r in reference]
    assert shared_prefix_greedy(model, enc, samples, embeds, index, GenerationSettings(num_beams=2)) is None


def test_run_info_mismatch_is_refused(tmp_path):
    from eval.engine import DistInfo

    check_run_info(tmp_path, {"model": "a", "seed": 0}, DistInfo())
    check_run_info(tmp_path, {"model": "a", "seed": 0}, DistInfo())
    with pytest.raises(ResumeError, match="seed"):
        check_run_info(tmp_path, {"model": "a", "seed": 1}, DistInfo())


def test_refer_train_split_from_refer_layout(tmp_path, capsys, synth):
    """``--split train`` scores the training expressions (the fit beside the held-out splits);
    "all" leaves it out and the evaluation-json layout, which has no train file, says what to pass."""
    from eval.benchmarks import get_benchmark
    from tasks.readers.refcoco import read_refcoco

    bench = get_benchmark("refcoco")
    assert bench.resolve_splits("train") == ["train"] and "train" not in bench.resolve_splits("all")
    with pytest.raises(MGV2Error, match="val, testA, testB, train"):
        bench.resolve_splits("test")
    train = read_refcoco(synth, "refcoco", "train", "unc", images=synth / "images")
    preds = write_jsonl(tmp_path / "p.jsonl", (
        {"index": i, "answer": boxes.format_box(r.box_xyxy, r.width, r.height)} for i, r in enumerate(train)
    ))
    rc, out, _ = run_cli(["eval", "refcoco", "--split", "train", "--data", str(synth), "--images",
                          str(synth / "images"), "--predictions", str(preds), "--json", "--out", str(tmp_path / "r")],
                         capsys)
    assert rc == 0
    m = json.loads(out)["splits"]["train"]
    assert m["n"] == len(train) > 0 and m["acc50"] > 0.9
    rc, _, err = run_cli(["eval", "refcoco", "--split", "train", "--data", str(synth / "refcoco_eval"),
                          "--predictions", str(preds), "--out", str(tmp_path / "e")], capsys)
    assert rc != 0 and "refer layout" in err


def test_vqa_benchmark_end_to_end_on_synthetic_world(tmp_path, capsys, synth):
    rc, out, _ = run_cli(["eval", "vqav2", "--data", str(synth / "vqav2"), "--images", str(synth / "images"),
                          "--limit", "6", "--out", str(tmp_path / "v"), "--workers", "0", "--batch-size", "6",
                          "--no-progress", "--json"], capsys)
    assert rc == 0
    m = json.loads(out)["splits"]["val"]
    assert m["n"] == 6 and m["metric"] == "vqa_acc" and "by_answer_type" in m
    prompts = [json.loads(x)["prompt"] for x in (tmp_path / "v/val/predictions.jsonl").read_text().splitlines()]
    assert all(p.startswith("[vqa] Based on the image, respond to this question with a short answer: ")
               for p in prompts)
    # GQA: rescoring exact answers from the folder layout
    from tasks.readers.gqa import read_gqa

    gqa = read_gqa(synth / "gqa/testdev_balanced_questions.json", balanced_only=True)
    preds = write_jsonl(tmp_path / "g.jsonl", ({"index": i, "answer": r.answers[0].upper()} for i, r in enumerate(gqa)))
    rc, out, _ = run_cli(["eval", "gqa", "--data", str(synth / "gqa"), "--predictions", str(preds), "--json",
                          "--out", str(tmp_path / "g")], capsys)
    assert rc == 0 and json.loads(out)["splits"]["testdev"]["accuracy"] == 1.0


def test_torchrun_two_gloo_processes_match_one(tmp_path, capsys, synth):
    common = ["eval", "refcoco", "--data", str(synth), "--images", str(synth / "images"), "--split", "val",
              "--limit", "12", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert run_cli([*common, "--out", str(tmp_path / "one"), "--json"], capsys)[0] == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "mgv2.cli", *common, "--out", str(tmp_path / "two")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["splits"] == one["splits"]
    assert (tmp_path / "two/val/predictions.jsonl").read_bytes() == (tmp_path / "one/val/predictions.jsonl").read_bytes()
    assert not list((tmp_path / "two/val").glob("predictions.rank*.jsonl"))  # merged and cleaned up


# ----------------------------------------------------------------------------- detection


def _detection_answers(records, shift=None):
    from tasks.detection import detection_text

    out = []
    for k, r in enumerate(records):
        groups = []
        for phrase, found in r.groups():
            grid = []
            for box in found:
                b = boxes.from_pixels(box, r.width, r.height)
                if shift is not None and shift(k):
                    b = boxes.make_box(b.x1 + 6, b.y1 + 6, min(b.x2 + 6, 100), min(b.y2 + 6, 100))
                grid.append(b)
            groups.append((phrase, grid))
        out.append(detection_text(groups))
    return out


def test_detection_map_perfect_and_cross_check(tmp_path, capsys, synth):
    from eval.detection import category_index, coco_map, score_detection, supervision_map
    from tasks.readers.coco_det import load_coco, read_coco_detection

    gt_path = synth / "coco_det" / "instances_val.json"
    records = read_coco_detection(gt_path, synth / "images")
    coco = load_coco(gt_path)
    categories = category_index(coco)
    # perfect detections (the GT boxes themselves): mAP 1 in both implementations
    perfect = [{"image_id": r.meta["image_id"], "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "score": 1.0} for r in records for (_, b), c in zip(r.objects, r.meta["category_ids"])]
    assert coco_map(coco, perfect, [r.meta["image_id"] for r in records])["map50_95"] == pytest.approx(1.0)
    assert supervision_map(records, perfect, categories)["map50_95"] == pytest.approx(1.0)
    # GT boxes written as answers: the 0..100 grid truncation keeps every IoU >= 0.5 (AP50 = 1)
    # but not >= 0.95, so mAP@[.5:.95] < 1; both implementations must agree on that too
    m, _ = score_detection(records, _detection_answers(records), coco)
    assert m["map50"] == pytest.approx(1.0) and m["supervision"]["map50"] == pytest.approx(1.0)
    assert 0.5 < m["map50_95"] < 1.0 and m["cross_check_ok"]
    # imperfect: every other image shifted, one answer unparseable, one missing
    answers = _detection_answers(records, shift=lambda k: k % 2 == 0)
    answers[1] = "nothing here"
    answers[3] = None
    m, _ = score_detection(records, answers, coco)
    assert 0.0 < m["map50_95"] < 1.0
    assert m["cross_check_max_abs_diff"] <= 0.02 and m["cross_check_ok"]
    assert m["n_unparseable"] == 1 and m["n_missing"] == 1
    # through the CLI (rescoring)
    preds = write_jsonl(tmp_path / "d.jsonl", ({"index": i, "answer": a} for i, a in
                                               enumerate(_detection_answers(records))))
    rc, out, _ = run_cli(["eval", "detection", "--data", str(gt_path), "--predictions", str(preds), "--json",
                          "--out", str(tmp_path / "d")], capsys)
    assert rc == 0 and json.loads(out)["splits"]["val"]["map50"] == pytest.approx(1.0)
