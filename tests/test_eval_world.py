"""eval/world.py and `mgv2 eval --world`: answers judged by the synthetic world's own scenes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.benchmarks import Source, get_benchmark
from eval.world import VERDICTS, WorldError, WorldJudge, identify_breakdown, normalise
from mgv2 import boxes
from mgv2.cli import main


@pytest.fixture(scope="module")
def world(small_world) -> Path:
    return small_world


@pytest.fixture(scope="module")
def judge(world) -> WorldJudge:
    return WorldJudge(world)


def _records(world: Path, bench: str, split: str = "val"):
    return get_benchmark(bench).load(Source(world / "refcoco_eval", None, world / "images"), split)


def _cli(argv, capsys) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _predictions(path: Path, answers) -> Path:
    path.write_text("".join(json.dumps({"index": i, "answer": a}) + "\n" for i, a in enumerate(answers)))
    return path


def test_every_exported_expression_is_located_and_has_its_family(world, judge):
    records = _records(world, "refcoco")
    assert len(records) > 20
    families = set()
    for rec in records:
        scene, index = judge.locate(rec.image, rec.box_xyxy)
        family = judge.family(scene, index, rec.expression)
        assert family != "unknown", rec.expression  # the export writes only the world's own texts
        families.add(family)
        # the exported expression names its object, and only it
        assert judge.judge_description(scene, index, rec.expression) == "names it"
    assert {"kind", "relation", "superlative"} & families and len(families) >= 3


def test_verdicts_of_made_up_descriptions(world, judge):
    def repeated(scene):
        return [o for o in scene.objects if len(scene.of_kind(o.kind)) > 1]

    def single(scene):
        return [o for o in scene.objects if len(scene.of_kind(o.kind)) == 1]

    # a picture with a kind shown twice or more and a kind shown once (most pictures of this world)
    scene = next(s for s in map(judge.scene, sorted((world / "images").iterdir())) if repeated(s) and single(s))
    i, other = repeated(scene)[0].index, single(scene)[0]
    assert judge.judge_description(scene, i, f"the {scene.objects[i].kind}") == "ambiguous"  # true of two or more
    assert judge.judge_description(scene, i, f"the {other.kind}") == "another object"
    assert judge.judge_description(scene, other.index, f"The {other.kind}.") == "names it"
    assert judge.judge_description(scene, i, "  The purple unicorn. ") == "not true"
    assert normalise("  The  Red\nBall. ") == "the red ball"


def test_refer_breakdown_through_the_cli(world, capsys, tmp_path):
    records = _records(world, "refcoco")
    # every second answer is the right box, the others are the box of the picture's first object
    # when that is another object, so their accuracy per family is known here
    judge = WorldJudge(world)
    answers, expected = [], {}
    for n, rec in enumerate(records):
        scene, index = judge.locate(rec.image, rec.box_xyxy)
        wrong = next(o for o in scene.objects if o.index != index)
        box = rec.box_xyxy if n % 2 == 0 else wrong.visible_box
        answers.append(boxes.format_box(box, rec.width, rec.height))
        fam = judge.family(scene, index, rec.expression)
        hits, total = expected.get(fam, (0, 0))
        expected[fam] = (hits + (n % 2 == 0), total + 1)
    preds = _predictions(tmp_path / "p.jsonl", answers)
    out = tmp_path / "o"
    payload = _cli(["eval", "refcoco", "--split", "val", "--data", str(world / "refcoco_eval"), "--images",
                    str(world / "images"), "--predictions", str(preds), "--world", str(world), "--out", str(out),
                    "--json"], capsys)
    w = payload["splits"]["val"]["world"]
    assert payload["settings"]["world"] == str(world)
    assert set(w["by_family"]) == set(expected)
    for fam, (hits, total) in expected.items():
        got = w["by_family"][fam]
        assert got["n"] == total
        # a wrong object's box can still overlap the target at IoU >= 0.5 (rarely): at least the hits
        assert got["acc50"] >= hits / total - 1e-9
    assert sum(v["n"] for v in w["by_objects"].values()) == len(records)
    assert list(w["by_objects"]) == sorted(w["by_objects"], key=lambda k: int(k.split()[0]))
    # size groups: every expression once, smallest first, each group's counts from the boxes themselves
    assert sum(v["n"] for v in w["by_size"].values()) == len(records)
    groups = list(w["by_size"])
    assert groups == sorted(groups, key=lambda g: 0.0 if "<" in g else float(g.split()[1].split("-")[0].rstrip("%+")))
    sides = [math.sqrt((r.box_xyxy[2] - r.box_xyxy[0]) * (r.box_xyxy[3] - r.box_xyxy[1]) / (r.width * r.height))
             for r in records]
    assert w["by_size"]["side < 12.5%"]["n"] == sum(sd < 0.125 for sd in sides)
    assert w["by_size"]["side 18.75-25%"]["n"] == sum(0.1875 <= sd < 0.25 for sd in sides)
    report = (out / "report.md").read_text()
    assert "by expression family" in report and "by object size" in report


def test_identify_names_the_object_through_the_cli(world, capsys, tmp_path):
    records = _records(world, "identify")
    judge = WorldJudge(world)
    answers = []
    for n, rec in enumerate(records):
        if n % 3 == 0:
            answers.append(rec.expression)  # an exported expression: names it
        elif n % 3 == 1:
            answers.append("the purple unicorn")  # not true of any object
        else:
            answers.append("")  # nothing: no answer
    preds = _predictions(tmp_path / "p.jsonl", answers)
    payload = _cli(["eval", "identify", "--split", "val", "--data", str(world / "refcoco_eval"), "--images",
                    str(world / "images"), "--predictions", str(preds), "--world", str(world), "--out",
                    str(tmp_path / "o"), "--json"], capsys)
    w = payload["splits"]["val"]["world"]
    n = len(records)
    assert w["verdicts"] == {"names it": len(range(0, n, 3)), "ambiguous": 0, "another object": 0,
                             "not true": len(range(1, n, 3)), "no answer": len(range(2, n, 3))}
    assert w["names_object"] == pytest.approx(len(range(0, n, 3)) / n)
    assert set(VERDICTS) < set(w["verdicts"])
    # the same numbers from the function, on rows the scorer made
    from eval.scoring import score_identify

    _, rows = score_identify(records, answers)
    assert identify_breakdown(judge, records, rows)["verdicts"] == w["verdicts"]
    assert "does the answer name the object" in (tmp_path / "o" / "report.md").read_text()


def test_bad_worlds_and_benchmarks_are_refused(world, judge, tmp_path, capsys):
    with pytest.raises(WorldError, match="no scenes.jsonl"):
        WorldJudge(tmp_path)
    with pytest.raises(WorldError, match="not in this world"):
        judge.scene("elsewhere/picture.jpg")
    rec = _records(world, "refcoco")[0]
    with pytest.raises(WorldError, match="not from this world"):
        judge.locate(rec.image, (0.0, 0.0, 3.0, 3.0))
    capsys.readouterr()
    rc = main(["eval", "vqav2", "--data", str(world / "vqav2"), "--world", str(world), "--predictions",
               str(_predictions(tmp_path / "p.jsonl", ["yes"])), "--split", "val"])
    assert rc != 0 and "--world judges refer and identify answers; vqav2 has none" in capsys.readouterr().err


def test_family_subset_odds_match_the_draw_in_closed_form():
    from mgv2.synth.language import _FAMILY_WEIGHT, family_subset_odds

    assert family_subset_odds(("kind",)) == {frozenset({"kind"}): 1.0}
    # two families: one sentence (k = 1, probability 1/3) comes from a family in proportion to its
    # weight; k = 2 or 3 (2/3) takes both
    odds = family_subset_odds(("kind", "relation"))
    w_kind, w_rel = _FAMILY_WEIGHT["kind"], _FAMILY_WEIGHT["relation"]
    assert sum(odds.values()) == pytest.approx(1.0)
    assert odds[frozenset({"kind", "relation"})] == pytest.approx(2 / 3, abs=0.02)
    assert odds[frozenset({"kind"})] == pytest.approx(w_kind / (w_kind + w_rel) / 3, abs=0.02)
    with pytest.raises(ValueError, match="distinct, sorted"):
        family_subset_odds(("relation", "kind"))


def test_best_guess_is_a_true_description_written_as_often_as_it_says(world, judge):
    """The odds of :meth:`WorldJudge.best_guess` against the export's own draw, rerun 3000 times."""
    import numpy as np

    from eval.metrics import normalize_answer
    from mgv2.synth.language import referring_sentences

    scenes = [judge.scene(p) for p in sorted((world / "images").iterdir())[:40]]
    # objects with several families to draw from (the hard case for the odds)
    cases = [(s, i) for s in scenes for i in sorted(s.unique) if len({d.family for _, d in s.unique[i]}) >= 3][:3]
    assert len(cases) == 3
    for scene, index in cases:
        answer, odds = judge.best_guess(scene, index)
        assert 0.0 < odds <= 1.0
        assert judge.judge_description(scene, index, answer) == "names it"
        rng = np.random.default_rng(1)
        hits = sum(normalize_answer(answer) in {normalize_answer(t) for t in referring_sentences(scene, rng)[index]}
                   for _ in range(3000))
        assert hits / 3000 == pytest.approx(odds, abs=0.03)  # binomial s.e. <= 0.009, odds' s.e. <= 0.005
    # an object told apart by one family only: one of its texts is drawn, each as often
    one = [(s, i) for s in scenes for i, opts in s.unique.items() if len({d.family for _, d in opts}) == 1]
    assert one, "the small world has objects with descriptions of one family"
    for scene, index in one[:5]:
        texts = scene.unique[index]
        best = judge.best_guess(scene, index)
        same = sum(normalize_answer(t) == normalize_answer(best[0]) for t, _ in texts)
        assert best[1] == pytest.approx(same / len(texts))


def test_identify_exact_ceiling_through_the_cli(world, capsys, tmp_path):
    records = _records(world, "identify")
    judge = WorldJudge(world)
    answers = [judge.best_guess(*judge.locate(r.image, r.box_xyxy))[0] for r in records]
    payload = _cli(["eval", "identify", "--split", "val", "--data", str(world / "refcoco_eval"), "--images",
                    str(world / "images"), "--predictions", str(_predictions(tmp_path / "p.jsonl", answers)),
                    "--world", str(world), "--out", str(tmp_path / "o"), "--json"], capsys)
    split = payload["splits"]["val"]
    assert split["world"]["names_object"] == 1.0  # every best guess names its object
    ceiling = split["world"]["exact_ceiling"]
    assert 0.2 < ceiling < 0.9  # the export writes 1-3 of many true descriptions
    # the best guesses' exact match is one draw of what the ceiling expects
    n = split["n"]
    assert abs(split["accuracy"] - ceiling) < 4 * (0.25 / n) ** 0.5
    assert "exact-match ceiling" in (tmp_path / "o" / "report.md").read_text()
