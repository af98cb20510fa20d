"""tasks: instruction/target strings against SPEC §4, determinism, parsing, scoring, routing."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgv2.errors import TaskError
from mgv2.sample import Sample
from tasks import TASKS, get_task, task_for_prompt
from tasks.base import split_identifier
from tasks.records import (
    CaptionRecord,
    ConversationRecord,
    DetectionRecord,
    GroundedCaptionRecord,
    RegionRecord,
    VQARecord,
)
from tasks.refer import ReferTask
from tasks.text import process_text
from tasks.vqa import draw_answer

# SPEC §4, written out again on purpose: the task modules must match these verbatim.
SPEC_TEMPLATES = {
    "refer": (
        "[refer] {}",
        "[refer] give me the location of {}",
        "[refer] where is {} ?",
        "[refer] from this image, tell me the location of {}",
        "[refer] the location of {} is",
        "[refer] could you tell me the location for {} ?",
        "[refer] where can I locate the {} ?",
    ),
    "identify": (
        "[identify] {}",
        "[identify] what object is in this location {}",
        "[identify] identify the object present at this location {}",
        "[identify] what is it in {}",
        "[identify] describe this object in {}",
        "[identify] this {} is",
        "[identify] the object in {} is",
    ),
    "grounding": (
        "[grounding] please describe this image in details",
        "[grounding] describe this image as detailed as possible",
        "[grounding] summarize this image in details",
        "[grounding] give a thorough description of what you see in this image",
    ),
    "detection": ("[detection] {}",),
    "vqa": ("[vqa] {}", "[vqa] Based on the image, respond to this question with a short answer: {}"),
}

# 200 x 100 image; box (20, 10, 100, 55) px -> {<10><10><50><55>}
REGION = RegionRecord(
    image="img.jpg",
    width=200,
    height=100,
    expression="the Red cup.",
    box_xyxy=(20, 10, 100, 55),
    alternatives=("cup on the left",),
)
DETECTION = DetectionRecord(
    image="img.jpg",
    width=100,
    height=100,
    objects=[("dog", (0, 0, 10, 10)), ("cat", (50, 50, 60, 60)), ("dog", (20, 0, 30, 10))],
    query="dog and cat",
)
CAPTION_TEXT = "A man walks a dog."
GROUNDED = GroundedCaptionRecord(
    image="img.jpg",
    width=100,
    height=100,
    caption=CAPTION_TEXT,
    phrases=[(14, 17, [(40, 40, 60, 60)]), (2, 5, [(0, 0, 20, 50), (80, 0, 100, 50)])],
)
VQA = VQARecord(image="img.jpg", question="What Color is the Cup?", answers=["red"] * 9 + ["pink"])
CAPTION = CaptionRecord(image="img.jpg", caption="A Dog (running) on the beach!")
CONVERSATION = ConversationRecord(
    image=None, turns=[("hi", "hello"), ("where is it? {<1><2><3><4>}", "there")]
)

RECORDS = {
    "refer": REGION,
    "identify": REGION,
    "detection": DETECTION,
    "grounding": GROUNDED,
    "vqa": VQA,
    "caption": CAPTION,
    "chat": CONVERSATION,
}


def _all_builds(name: str, n: int = 200) -> list[Sample]:
    return [TASKS[name].build(RECORDS[name], random.Random(seed)) for seed in range(n)]


# ----------------------------------------------------------------------------- templates and targets


@pytest.mark.parametrize("name", sorted(SPEC_TEMPLATES))
def test_templates_are_spec_verbatim(name):
    assert TASKS[name].templates == SPEC_TEMPLATES[name]


def test_caption_templates():
    templates = TASKS["caption"].templates
    assert len(templates) == 17
    assert templates[0] == "[caption] Briefly describe this image."
    assert "[caption] A photo of " in templates  # trailing space kept verbatim
    assert all(t.startswith("[caption] ") for t in templates)


def test_identifiers():
    assert {n: t.identifier for n, t in TASKS.items()} == {
        "grounding": "[grounding]",
        "refer": "[refer]",
        "identify": "[identify]",
        "detection": "[detection]",
        "vqa": "[vqa]",
        "caption": "[caption]",
        "chat": "",
    }


def test_refer_build():
    samples = _all_builds("refer")
    assert {s.target for s in samples} == {"{<10><10><50><55>}"}
    instructions = {s.instruction for s in samples}
    # every template is drawn, with the text-processed sentence of either sentence of the ref
    for t in SPEC_TEMPLATES["refer"]:
        assert t.format("the red cup") in instructions
    assert "[refer] where is cup on the left ?" in instructions
    assert instructions <= {
        t.format(s) for t in SPEC_TEMPLATES["refer"] for s in ("the red cup", "cup on the left")
    }
    assert all(s.task == "refer" and s.image == "img.jpg" and len(s.turns) == 1 for s in samples)


def test_refer_benchmark_prompt():
    assert TASKS["refer"].prompt(REGION) == "[refer] give me the location of the Red cup."
    sample = TASKS["refer"].eval_sample(REGION)
    assert sample.instruction == "[refer] give me the location of the Red cup." and sample.target is None


def test_identify_build_and_prompt():
    samples = _all_builds("identify")
    assert {s.target for s in samples} == {"the red cup", "cup on the left"}
    assert {s.instruction for s in samples} == {
        t.format("{<10><10><50><55>}") for t in SPEC_TEMPLATES["identify"]
    }
    assert TASKS["identify"].prompt(REGION) == "[identify] what is this {<10><10><50><55>}"


def test_detection_target_joins_boxes_with_delim_and_phrases_with_space():
    sample = TASKS["detection"].build(DETECTION, random.Random(0))
    assert sample.instruction == "[detection] dog and cat"
    assert (
        sample.target == "<p>dog</p> {<0><0><10><10>}<delim>{<20><0><30><10>} <p>cat</p> {<50><50><60><60>}"
    )
    single = DetectionRecord(image=None, width=100, height=100, objects=[("a red ball", (10, 10, 20, 20))])
    one = TASKS["detection"].build(single, random.Random(0))
    assert (one.instruction, one.target) == ("[detection] a red ball", "<p>a red ball</p> {<10><10><20><20>}")


def test_grounding_target_marks_phrases_in_place():
    samples = _all_builds("grounding", 100)
    assert {s.instruction for s in samples} == set(SPEC_TEMPLATES["grounding"])
    assert samples[0].target == (
        "A <p>man</p> {<0><0><20><50>}<delim>{<80><0><100><50>} walks a <p>dog</p> {<40><40><60><60>}."
    )
    assert TASKS["grounding"].prompt(GROUNDED) == SPEC_TEMPLATES["grounding"][0]


def test_vqa_build_weighted_answer_and_processed_question():
    samples = _all_builds("vqa", 2000)
    assert {s.instruction for s in samples} == {
        t.format("what color is the cup?") for t in SPEC_TEMPLATES["vqa"]
    }
    counts = Counter(s.target for s in samples)
    assert set(counts) == {"red", "pink"}
    assert 0.85 < counts["red"] / 2000 < 0.95  # 9 of 10 annotators said red
    assert Counter(draw_answer(["a", "b", "b", "b"], random.Random(i)) for i in range(4000))["b"] / 4000 == (
        pytest.approx(0.75, abs=0.03)
    )


def test_vqa_statement_records_are_posed_as_true_or_false():
    """A VSR statement is trained with the true-or-false wording the benchmark asks with (SPEC §7),
    never with "respond to this question"; questions never get the statement wording."""
    claim = VQARecord(image="img.jpg", question="The Cup is left of the dog.", answers=["true"], statement=True)
    task = TASKS["vqa"]
    built = {task.build(claim, random.Random(i)).instruction for i in range(200)}
    assert built == {
        "[vqa] Based on the image, is this statement true or false? the cup is left of the dog",
        "[vqa] Is this statement true or false? the cup is left of the dog",
    }
    assert task.prompt(claim, style="vsr") == (
        "[vqa] Based on the image, is this statement true or false? The Cup is left of the dog."
    )
    questions = {s.instruction for s in _all_builds("vqa", 200)}
    assert not any("true or false" in q for q in questions)


def test_vsr_reader_marks_statements(tmp_path):
    from tasks.readers.vsr import read_vsr

    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"image": "1.jpg", "caption": "The cat is left of the dog.", "label": 0}) + "\n")
    (record,) = read_vsr(path)
    assert record.statement and record.answers == ["false"]
    assert not VQA.statement


def test_vqa_benchmark_prompts():
    vqa = TASKS["vqa"]
    assert (
        vqa.prompt(VQA)
        == "[vqa] Based on the image, respond to this question with a short answer: What Color is the Cup?"
    )
    assert vqa.prompt(VQA, style="vsr").startswith(
        "[vqa] Based on the image, is this statement true or false? "
    )
    assert vqa.prompt(VQA, style="vizwiz").startswith(
        "[vqa] The question is 'What Color is the Cup?' Based on"
    )
    with pytest.raises(TaskError, match="short"):
        vqa.prompt(VQA, style="nope")


def test_caption_build():
    samples = _all_builds("caption")
    assert {s.target for s in samples} == {"a dog running on the beach"}
    assert {s.instruction for s in samples} == set(TASKS["caption"].templates)


def test_chat_multi_turn():
    sample = TASKS["chat"].build(CONVERSATION, random.Random(0))
    assert [(t.instruction, t.answer) for t in sample.turns] == CONVERSATION.turns
    assert sample.image is None and sample.task == "chat"
    ev = TASKS["chat"].eval_sample(CONVERSATION)
    assert [(t.instruction, t.answer) for t in ev.turns] == [
        ("hi", "hello"),
        ("where is it? {<1><2><3><4>}", None),
    ]


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_build_is_deterministic_for_a_seeded_rng(name):
    a = [TASKS[name].build(RECORDS[name], random.Random(seed)) for seed in range(20)]
    b = [TASKS[name].build(RECORDS[name], random.Random(seed)) for seed in range(20)]
    assert [(s.instruction, s.target) for s in a] == [(s.instruction, s.target) for s in b]


def test_build_rejects_wrong_record_type():
    with pytest.raises(TaskError, match="RegionRecord"):
        TASKS["refer"].build(CAPTION, random.Random(0))


def test_text_processor():
    assert process_text('A "Big" dog:  runs (fast)!') == "a big dog runs fast"
    assert process_text(" ".join(f"w{i}" for i in range(60))) == " ".join(f"w{i}" for i in range(50))
    assert process_text("what is it?") == "what is it?"


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize(
    "answer",
    [
        "",
        "{<10><20><30>}",
        "<p>dog</p>",
        "<p>dog</p> {<1><2><3><4>}<delim>",
        "{<120><-5><30><40>}",
        "{<50><50><10><10>}",
        "<<1><2><3><4>>",
        "[/INST] </s>",
        None,
        123,
    ],
)
def test_parse_malformed_never_raises(name, answer):
    result = TASKS[name].parse(answer)
    assert result.parsed is not None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}<>pdelim/0123456789 ,.-abc")), max_size=60))
def test_parse_fuzz_never_raises(text):
    for task in TASKS.values():
        task.parse(text)


def test_parse_well_formed():
    refer = TASKS["refer"].parse(" {<10><10><50><55>} ")
    assert refer.ok and refer.box.coords == (10, 10, 50, 55)
    assert not TASKS["refer"].parse("I cannot see it").ok
    det = TASKS["detection"].parse(
        "<p>dog</p> {<0><0><10><10>}<delim>{<20><0><30><10>} <p>cat</p> {<50><50><60><60>}"
    )
    assert [(p, [b.coords for b in bs]) for p, bs in det.objects] == [
        ("dog", [(0, 0, 10, 10), (20, 0, 30, 10)]),
        ("cat", [(50, 50, 60, 60)]),
    ]
    grounding = TASKS["grounding"].parse("A <p>man</p> {<0><0><20><50>} walks.")
    assert grounding.caption == "A man walks." and grounding.groups[0].phrase == "man"
    assert TASKS["vqa"].parse("Two.").normalized == "2"
    assert TASKS["caption"].parse("A Dog, running.").normalized == "a dog running"


# ----------------------------------------------------------------------------- scoring


def test_refer_score_iou_and_boundary():
    record = RegionRecord(image=None, width=100, height=100, expression="x", box_xyxy=(0, 0, 50, 100))
    task = TASKS["refer"]
    exact = task.score(task.parse("{<0><0><50><100>}"), record)
    assert exact == {"iou": 1.0, "hit": 1.0, "parsed": 1.0}
    boundary = task.score(task.parse("{<0><0><100><100>}"), record)
    assert boundary["iou"] == pytest.approx(0.5) and boundary["hit"] == 1.0  # IoU >= 0.5
    miss = task.score(task.parse("{<0><0><49><100>}"), RegionRecord(None, 100, 100, "x", (0, 0, 100, 100)))
    assert miss["iou"] == pytest.approx(0.49) and miss["hit"] == 0.0
    assert task.score(task.parse("no box here"), record) == {"iou": 0.0, "hit": 0.0, "parsed": 0.0}


def test_refer_score_official_plus_one():
    official = ReferTask(plus_one=True)
    # 10 x 10 px image: grid 0..100 maps to 0..10 px.  gt (0,0,4,9) vs pred (0,0,9,9):
    # +1 areas 5*10=50 and 10*10=100, intersection 50 -> exactly 0.5 -> not a hit (needs > 0.5)
    record = RegionRecord(image=None, width=10, height=10, expression="x", box_xyxy=(0, 0, 4, 9))
    out = official.score(official.parse("{<0><0><90><90>}"), record)
    assert out["iou"] == pytest.approx(0.5) and out["hit"] == 0.0
    continuous = TASKS["refer"].score(TASKS["refer"].parse("{<0><0><90><90>}"), record)
    assert continuous["iou"] == pytest.approx(36 / 81) and continuous["hit"] == 0.0


def test_identify_score():
    task = TASKS["identify"]
    assert task.score(task.parse("The red cup!"), REGION)["exact"] == 1.0
    assert task.score(task.parse("cup on the left"), REGION)["exact"] == 1.0
    partial = task.score(task.parse("a red cup"), REGION)
    assert partial["exact"] == 0.0 and partial["token_f1"] == pytest.approx(2 / 3)


def test_detection_score_phrase_aware_and_box_only():
    task = TASKS["detection"]
    perfect = task.score(task.parse(task.build(DETECTION, random.Random(0)).target), DETECTION)
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)
    # dog box right, a dog box far away, the cat box labelled "dog"
    answer = "<p>dog</p> {<0><0><10><10>}<delim>{<80><80><90><90>} <p>Dog</p> {<50><50><60><60>}"
    out = task.score(task.parse(answer), DETECTION)
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1 / 3)
    assert out["box_precision"] == pytest.approx(2 / 3) and out["box_recall"] == pytest.approx(2 / 3)
    assert (out["tp"], out["n_pred"], out["n_gt"]) == (1.0, 3.0, 3.0)
    nothing = task.score(task.parse("nothing"), DETECTION)
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["f1"] == 0.0


def test_grounding_score_phrase_recall():
    task = TASKS["grounding"]
    perfect = task.score(task.parse(task.build(GROUNDED, random.Random(0)).target), GROUNDED)
    assert perfect == {"phrase_recall": 1.0, "caption_f1": 1.0}
    half = task.score(
        task.parse("A <p>man</p> {<80><0><100><50>} walks a <p>dog</p> {<0><0><10><10>}."), GROUNDED
    )
    assert half["phrase_recall"] == 0.5  # man matches his second box; the dog box is wrong
    assert task.score(task.parse("A man walks a dog."), GROUNDED)["phrase_recall"] == 0.0


def test_vqa_score():
    task = TASKS["vqa"]
    out = task.score(task.parse("Red."), VQA)
    assert out == {"exact": 1.0, "vqa_acc": pytest.approx(1.0)}
    assert task.score(task.parse("pink"), VQA)["vqa_acc"] == pytest.approx(0.3)
    gqa = VQARecord(image=None, question="q", answers=["yes"])
    assert task.score(task.parse("Yes"), gqa) == {"exact": 1.0}  # no leave-one-out with one answer


def test_caption_score():
    task = TASKS["caption"]
    assert task.score(task.parse("a dog running on the beach"), CAPTION) == {"exact": 1.0, "token_f1": 1.0}
    assert task.score(task.parse("a cat"), CAPTION)["exact"] == 0.0


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("name", [n for n in TASKS if n != "chat"])
def test_task_for_prompt_every_identifier(name):
    task, rest = task_for_prompt(f"  [{name}] some text ")
    assert task is TASKS[name] and rest == "some text"
    assert get_task(name) is TASKS[name] and get_task(f"[{name}]") is TASKS[name]
    assert task.compose("some text") == f"[{name}] some text"


def test_task_for_prompt_chat_and_errors():
    task, rest = task_for_prompt("what is in the picture?")
    assert task is TASKS["chat"] and rest == "what is in the picture?"
    assert task_for_prompt("[1, 2] is a list")[0] is TASKS["chat"]
    with pytest.raises(TaskError, match=r"unknown task identifier \[foo\].*\[refer\].*\[vqa\]"):
        task_for_prompt("[foo] bar")
    with pytest.raises(TaskError, match="unknown"):
        task_for_prompt("[chat] hi")
    with pytest.raises(TaskError, match="empty prompt"):
        task_for_prompt("   ")
    with pytest.raises(TaskError, match="nothing after"):
        task_for_prompt("[refer]  ")
    with pytest.raises(TaskError, match="known identifiers"):
        get_task("segment")
    assert split_identifier("[refer]where") == ("refer", "where")
    assert split_identifier("plain") == (None, "plain")


# ----------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RegionRecord(None, 0, 10, "x", (0, 0, 1, 1)), "width"),
        (lambda: RegionRecord(None, 10, 10, "x", (5, 0, 1, 1)), "x2 > x1"),
        (lambda: RegionRecord(None, 10, 10, " ", (0, 0, 1, 1)), "expression"),
        (lambda: RegionRecord(None, 10, 10, "x", (0, 0, 1)), "4 finite"),
        (lambda: DetectionRecord(None, 10, 10, []), "at least one"),
        (
            lambda: GroundedCaptionRecord(
                None, 10, 10, "abc", [(0, 2, [(0, 0, 1, 1)]), (1, 3, [(0, 0, 1, 1)])]
            ),
            "overlap",
        ),
        (lambda: GroundedCaptionRecord(None, 10, 10, "abc", [(0, 9, [(0, 0, 1, 1)])]), "outside"),
        (lambda: GroundedCaptionRecord(None, 10, 10, "abc", [(0, 2, [])]), "no box"),
        (lambda: VQARecord(None, "q?", []), "at least one"),
        (lambda: VQARecord(None, "q?", ["yes"], statement="yes"), "statement must be True or False"),
        (lambda: ConversationRecord(None, [("hi",)]), "pair"),
    ],
)
def test_records_validate(make, message):
    with pytest.raises(TaskError, match=message):
        make()
