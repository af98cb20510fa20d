"""Training data: several records of one picture as the turns of one sample (turns_per_image)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from mgv2.config import ConfigError, DatasetEntry
from mgv2.data import DataBuildError, TaskDataset
from mgv2.errors import TaskError
from mgv2.prompt import IGNORE_INDEX
from tasks import TASKS
from tasks.records import ConversationRecord, RegionRecord, VQARecord


def _regions(tmp_path) -> list[RegionRecord]:
    """Picture a.png with 5 refs, b.png with 2, c.png with 1 (interleaved, as readers give them)."""
    paths = {}
    for name in "abc":
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(paths[name])
    plan = ["a", "b", "a", "c", "a", "b", "a", "a"]
    return [
        RegionRecord(str(paths[n]), 60, 40, f"thing {k}", (k, 0, k + 10, 20)) for k, n in enumerate(plan)
    ]


def _answers(encoded) -> list[list[int]]:
    """The labelled spans of an encoded sample (one per turn)."""
    spans, cur = [], []
    for i, lab in enumerate(encoded.labels):
        if lab != IGNORE_INDEX:
            cur.append(lab)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


def test_build_group_concatenates_the_turns_of_one_picture():
    task = TASKS["refer"]
    a = RegionRecord("p.jpg", 100, 100, "red cup", (0, 0, 50, 50))
    b = RegionRecord("p.jpg", 100, 100, "blue cup", (50, 50, 100, 100))
    sample = task.build_group([a, b], random.Random(0))
    assert sample.image == "p.jpg" and sample.task == "refer"
    assert [t.answer for t in sample.turns] == ["{<0><0><50><50>}", "{<50><50><100><100>}"]
    assert "red cup" in sample.turns[0].instruction and "blue cup" in sample.turns[1].instruction
    # a second sentence for the same box is skipped (it could be answered by copying); limit caps
    same_box = RegionRecord("p.jpg", 100, 100, "the left cup", (0, 0, 50, 50))
    c = RegionRecord("p.jpg", 100, 100, "green cup", (0, 50, 50, 100))
    sample = task.build_group([a, same_box, b, c], random.Random(0), limit=2)
    assert [t.answer for t in sample.turns] == ["{<0><0><50><50>}", "{<50><50><100><100>}"]
    assert len(task.build_group([a, same_box, b, c], random.Random(0)).turns) == 3
    # other tasks key nothing: two questions with the same answer are two turns
    q1, q2 = VQARecord("p.jpg", "what colour is the cup?", ["red"]), VQARecord("p.jpg", "what colour is the kite?", ["red"])
    assert len(TASKS["vqa"].build_group([q1, q2], random.Random(0)).turns) == 2
    with pytest.raises(TaskError, match="share their picture"):
        task.build_group([a, RegionRecord("q.jpg", 100, 100, "x", (0, 0, 1, 1))], random.Random(0))
    with pytest.raises(TaskError, match="at least one record"):
        task.build_group([], random.Random(0))


def test_turns_per_image_indexes_by_picture_and_draws_distinct_records(tmp_path, tiny_pipeline):
    records = _regions(tmp_path)
    pipe = tiny_pipeline
    single = TaskDataset("r", records, TASKS["refer"], pipe.encoder, pipe.processor)
    grouped = TaskDataset("r", records, TASKS["refer"], pipe.encoder, pipe.processor, turns_per_image=3)
    assert len(single) == 8 and len(grouped) == 3  # pictures a, b, c in order of first appearance
    assert grouped.groups == [[0, 2, 4, 6, 7], [1, 5], [3]]
    answer_of = {
        tuple(pipe.tokenizer(TASKS["refer"].build(r, random.Random(0)).target, add_special_tokens=False).input_ids): k
        for k, r in enumerate(records)
    }
    for i, expected_turns in [(0, 3), (1, 2), (2, 1)]:
        item = grouped.build(i, f"r:{i}")
        spans = _answers(item.encoded)
        assert len(spans) == expected_turns
        members = [answer_of[tuple(s[:-1])] for s in spans]  # drop the EOS of each answer
        assert len(set(members)) == expected_turns and set(members) <= set(grouped.groups[i])
        assert item.pixels is not None
        # deterministic for the item's seed
        assert grouped.build(i, f"r:{i}").encoded.input_ids == item.encoded.input_ids
    # different seeds draw different subsets / orders of picture a's five records
    drawn = {tuple(grouped.build(0, f"s{k}").encoded.input_ids) for k in range(8)}
    assert len(drawn) > 1
    # turns_per_image 1 keeps the per-record samples exactly
    assert single.build(4, "x").encoded.input_ids == TaskDataset(
        "r", records, TASKS["refer"], pipe.encoder, pipe.processor
    ).build(4, "x").encoded.input_ids


def test_turns_per_image_refuses_records_without_a_picture(tiny_pipeline):
    chat = [ConversationRecord(None, [("hi", "hello")])]
    with pytest.raises(DataBuildError, match="record 0.*turns_per_image: 1"):
        TaskDataset("chat", chat, TASKS["chat"], tiny_pipeline.encoder, tiny_pipeline.processor, turns_per_image=2)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_turns_per_image_must_be_a_whole_number(bad):
    with pytest.raises(ConfigError, match="turns_per_image"):
        DatasetEntry(source="refcoco", task="refer", turns_per_image=bad)


def _items(pipe, lengths: list[int]) -> list:
    """TrainItems whose encoded sequences have the given lengths (refer answers on one picture)."""
    from mgv2.data import TrainItem
    from mgv2.prompt import Encoded

    items = []
    for k, n in enumerate(lengths):
        ids = list(range(3, 3 + n))
        labels = [IGNORE_INDEX] * (n - 2) + ids[-2:]
        items.append(TrainItem(Encoded(ids, labels, None), None, dataset=0, iteration=5, image_row=None))
    return items


def test_collator_chunks_sort_by_length_and_pad_each_chunk_to_its_own_longest(tiny_pipeline):
    from mgv2.data import TrainCollator

    lengths = [9, 4, 12, 4, 7, 20, 5]
    items = _items(tiny_pipeline, lengths)
    [whole] = TrainCollator(tiny_pipeline.encoder)(items)
    assert whole.batch.input_ids.shape == (7, 20) and whole.num_samples == 7
    chunks = TrainCollator(tiny_pipeline.encoder, chunks=3)(items)
    # sorted 4 4 5 | 7 9 | 12 20: nearly equal sizes, shortest first, each as wide as its longest
    assert [tb.num_samples for tb in chunks] == [3, 2, 2]
    assert [tb.batch.input_ids.shape[1] for tb in chunks] == [5, 9, 20]
    assert [tb.batch.attention_mask.sum(1).tolist() for tb in chunks] == [[4, 4, 5], [7, 9], [12, 20]]
    for field in ("num_samples", "num_tokens", "num_answer_tokens"):
        assert sum(getattr(tb, field) for tb in chunks) == getattr(whole, field)
    assert all(tb.iteration == 5 and tb.dataset == 0 for tb in chunks)
    padded = sum(tb.batch.attention_mask.numel() for tb in chunks)
    assert padded == 3 * 5 + 2 * 9 + 2 * 20 < whole.batch.attention_mask.numel()
    # more chunks than samples: one sample each
    assert [tb.num_samples for tb in TrainCollator(tiny_pipeline.encoder, chunks=10)(items[:2])] == [1, 1]
    with pytest.raises(ValueError, match="chunks must be >= 1"):
        TrainCollator(tiny_pipeline.encoder, chunks=0)
