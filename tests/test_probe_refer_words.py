"""scripts/probe_refer_words.py: a predictor that reads the words scores 100% and never answers
two colours with one place; one that ignores them sits at its chance rate and always does."""

from __future__ import annotations

import json

import pytest

from mgv2 import boxes
from tasks.refer import BENCHMARK_PROMPT
from tests.conftest import load_script

prw = load_script("probe_refer_words")


class _Scripted:
    """Answers from the scene file: the named object (reads_words) or always the first one."""

    def __init__(self, world, reads_words: bool):
        self.scenes = {s["file_name"]: s for s in map(json.loads, (world / "scenes.jsonl").read_text().splitlines())}
        self.reads_words = reads_words

    def predict(self, images, instructions):
        out = []
        for im, text in zip(images, instructions):
            s = self.scenes[im.name]
            expr = text.removeprefix(BENCHMARK_PROMPT.format(""))
            pick = s["objects"][0]
            if self.reads_words:
                pick = next(o for o in s["objects"] if expr in (o["kind"], f"{o['color']} {o['kind']}")
                            and (expr != o["kind"] or sum(p["kind"] == o["kind"] for p in s["objects"]) == 1))
            out.append(boxes.format_box(pick["visible_box"], s["width"], s["height"]))
        return out


def test_queries_name_exactly_one_object():
    scene = {"objects": [{"color": "red", "kind": "ball"}, {"color": "blue", "kind": "ball"},
                         {"color": "red", "kind": "ball"}, {"color": "red", "kind": "cup"}]}
    assert prw.queries(scene) == [("colour kind", "blue ball", 1), ("colour kind", "red cup", 3), ("kind", "cup", 3)]
    assert prw.swap_pairs(scene) == []  # the blue ball's partners are not uniquely named
    scene["objects"].pop(2)
    assert prw.swap_pairs(scene) == [(0, 1)]


def test_a_reader_of_the_words_scores_full_marks_and_a_blind_one_its_chance(small_world):
    held_out = sum(json.loads(line)["split"] != "train" for line in (small_world / "scenes.jsonl").open())
    reader = prw.probe(_Scripted(small_world, True), small_world, n_images=100)
    assert reader["images"] == held_out and reader["swap"]["pairs"] > 0
    for r in reader["prompts"].values():
        assert r["n"] > 10 and r["accuracy"] == 1.0 and 0.1 < r["chance"] < 0.5
    assert reader["swap"]["same_place"] == 0.0
    blind = prw.probe(_Scripted(small_world, False), small_world, n_images=100)
    assert blind["swap"]["same_place"] == 1.0
    ck = blind["prompts"]["colour kind"]
    assert ck["accuracy"] == pytest.approx(ck["chance"], abs=0.15)
