"""scripts/probe_binding.py: the micro task's records name one object each; the readout's
features have the demo preset's token layout; the readout trains and reports against chance."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.conftest import load_script

pb = load_script("probe_binding")


def test_micro_records_name_exactly_one_object(small_world):
    records = pb.micro_records(small_world)
    scenes = {s["file_name"]: s for s in pb.read_scenes(small_world, "train")}
    assert records and all("train" == scenes[r.image.rsplit("/", 1)[-1]]["split"] for r in records)
    for r in records:
        objs = scenes[r.image.rsplit("/", 1)[-1]]["objects"]
        named = [o for o in objs if f"{o['color']} {o['kind']}" == r.expression]
        assert len(named) == 1 and tuple(named[0]["visible_box"]) == r.box_xyxy
    cfg = pb.micro_config(small_world, "out", 7, ["merge_tokens=4"], {"seed": 3}, turns=2, batch=16)
    assert cfg.steps == 7 and cfg.seed == 3 and [d.name for d in cfg.datasets] == ["colour_kind"]
    assert cfg.datasets[0].turns_per_image == 2 and cfg.datasets[0].batch_size == 16
    assert "checkpoint=null" in cfg.model_overrides


@pytest.mark.parametrize("view,width", [("oracle", 4 * (1 + len(pb.KINDS) + 1 + len(pb.COLOR_NAMES))),
                                        ("merged", 512), ("pixels", 3 * 64 * 16)])
def test_token_features_follow_the_demo_token_layout(small_world, view, width):
    scenes = pb.read_scenes(small_world, "held_out", 3)
    f = pb.token_features(view, scenes, small_world, [])
    assert f.shape == (3, 16, width) and torch.isfinite(f).all()
    if view == "oracle":  # 4 patches per token, each one-hot in kind and in colour
        assert (f.reshape(3, 16, 4, -1).sum(-1) == 2).all()


def test_readout_reports_accuracy_against_the_random_object_rate(small_world):
    train_s, val_s = pb.read_scenes(small_world, "train"), pb.read_scenes(small_world, "held_out")
    tq, vq = pb.readout_queries(train_s), pb.readout_queries(val_s)
    assert len(vq) == sum(len(pb.colour_kind_targets(s)) for s in val_s)
    assert Counter(q[4] for q in vq)  # object counts recorded for the chance rate
    tf, vf = pb.token_features("oracle", train_s, small_world, []), pb.token_features("oracle", val_s, small_world, [])
    curve = pb.run_readout(tf, tq, vf, vq, steps=40, batch=16, every=20, log=lambda _: None)
    assert [c["step"] for c in curve] == [20, 40]
    assert curve[-1]["loss"] < curve[0]["loss"] * 1.5 and 0 <= curve[-1]["acc50"] <= 1
    assert curve[-1]["chance"] == pytest.approx(sum(1 / q[4] for q in vq) / len(vq))


@pytest.mark.parametrize("layout", pb.LAYOUTS)
@pytest.mark.parametrize("loss", ["l1", "ce"])
def test_readout_layouts_and_losses(layout, loss):
    torch.manual_seed(0)
    net = pb.Readout(12, tokens=16, width=32, layout=layout, loss=loss, center_ln=loss == "ce",
                     template=3 if layout == "words-image" else 0)
    feats, colour, kind = torch.randn(5, 16, 12), torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 1, 2, 3, 4])
    out = net(feats, colour, kind)
    assert out.shape == ((5, 4, 101) if loss == "ce" else (5, 4))
    boxes = net.boxes(out)
    assert boxes.shape == (5, 4) and ((0 <= boxes) & (boxes <= 1)).all()
    target = torch.rand(5, 4)
    net.objective(out, target).backward()
    assert net.proj.weight.grad is not None
    if layout == "image-words":  # causal: the image tokens come first, so the words cannot change them
        x = net.proj(feats) + net.pos
        mask = torch.nn.Transformer.generate_square_subsequent_mask(19)
        words = [net.template.expand(5, -1, -1), net.colour(colour)[:, None] + net.word_pos[0],
                 net.kind(kind)[:, None] + net.word_pos[1]]
        a = net.encoder(torch.cat([x, *words, net.answer.expand(5, 1, -1)], 1), mask=mask, is_causal=True)
        words[1] = words[1] + torch.randn_like(words[1])  # not a constant shift: LayerNorm removes those
        b = net.encoder(torch.cat([x, *words, net.answer.expand(5, 1, -1)], 1), mask=mask, is_causal=True)
        torch.testing.assert_close(a[:, :16], b[:, :16])
        assert not torch.allclose(a[:, -1], b[:, -1])


def test_readout_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        pb.Readout(4, layout="sideways")
    with pytest.raises(ValueError, match="sequential"):
        pb.Readout(4, layout="words-image", loss="l1", sequential=True)


def test_sequential_readout_writes_one_coordinate_per_position():
    torch.manual_seed(0)
    net = pb.Readout(12, width=32, layout="words-image", loss="ce", sequential=True)
    feats, colour, kind = torch.randn(3, 16, 12), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    target = torch.rand(3, 4)
    assert net(feats, colour, kind).shape == (3, 1, 101)
    assert net(feats, colour, kind, (target[:, :3] * 100).long()).shape == (3, 4, 101)
    net.train_loss(feats, colour, kind, target).backward()
    boxes = net.predict(feats, colour, kind)
    assert boxes.shape == (3, 4) and ((0 <= boxes) & (boxes <= 1)).all()
    # causal: the logits of the first coordinate do not depend on what is written after it
    a = net(feats, colour, kind, torch.zeros(3, 2, dtype=torch.long))[:, 0]
    b = net(feats, colour, kind, torch.full((3, 2), 50))[:, 0]
    torch.testing.assert_close(a, b)


def test_micro_trains_the_demo_llm_on_the_micro_task(small_world, tmp_path):
    out = tmp_path / "micro"
    assert pb.main(["micro", "--data", str(small_world), "--out", str(out), "--steps", "2", "--turns", "2"]) == 0
    assert (out / "final" / "model.safetensors").is_file()
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if line]
    assert log and all('"colour_kind"' in line for line in log)
