"""The region loss (``region_loss`` of a train config): which boxes a sample's first turn names,
the image tokens' cells, their coverage targets, the loss against an independent computation,
and the trainer with it (log, gradients, resume, refusals)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mgv2.config import ConfigError, ModelConfig, load_yaml
from mgv2.errors import CheckpointError
from mgv2.model import image_token_boxes
from mgv2.prompt import PromptEncoder, first_turn_regions
from mgv2.sample import Sample, Turn
from mgv2.trainer import RegionLoss, Trainer, region_coverage
from tests.conftest import ROOT
from tests.test_trainer import _one_thread, make_cfg, read_log, tiny_world  # noqa: F401 (autouse fixture)

DEMO = ROOT / "configs" / "model" / "demo.yaml"
FIRST = ["prompt_layout=instruction_first"]


# -- what a sample points at -------------------------------------------------------------------


def test_first_turn_regions_reads_the_boxes_of_the_first_turn_only():
    refer = Turn("[refer] where is the red ball ?", "{<12><30><41><77>}")
    identify = Turn("[identify] what is it in {<5><6><50><60>}", "the red ball")
    detection = Turn("[detection] balloon", "<p>balloon</p> {<1><2><3><4>}<delim>{<10><20><30><40>}")
    assert first_turn_regions(refer) == ((12, 30, 41, 77),)
    assert first_turn_regions(identify) == ((5, 6, 50, 60),)
    assert first_turn_regions(detection) == ((1, 2, 3, 4), (10, 20, 30, 40))
    assert first_turn_regions(Turn("[vqa] what colour is the cup ?", "red")) == ()
    assert first_turn_regions(Turn("[refer] x", "{<50><10><20><60>}")) == ()  # inverted: no region


def test_encoder_and_collate_carry_the_regions_as_fractions(tiny_cfg):
    from mgv2.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_cfg.path(tiny_cfg.llm.tokenizer), pad_token=tiny_cfg.llm.pad_token)
    enc = PromptEncoder(tok, tiny_cfg.num_image_tokens, layout="instruction_first")
    two_turns = Sample("x.png", [Turn("[refer] the cup", "{<10><20><30><40>}"), Turn("[refer] the ball", "{<0><0><9><9>}")])
    detection = Sample("x.png", [Turn("[detection] cup", "<p>cup</p> {<1><2><3><4>}<delim>{<50><50><60><70>}")])
    vqa = Sample("x.png", [Turn("[vqa] how many cups ?", "2")])
    text_only = Sample(None, [Turn("[refer] the cup", "{<10><20><30><40>}")])
    encoded = [enc.encode_train(s) for s in (two_turns, detection, vqa, text_only)]
    assert [e.regions for e in encoded] == [((10, 20, 30, 40),), ((1, 2, 3, 4), (50, 50, 60, 70)), (), ()]
    batch = enc.collate(encoded, padding_side="right")
    assert batch.regions.shape == (4, 2, 4)
    expected = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]], [[0.01, 0.02, 0.03, 0.04], [0.5, 0.5, 0.6, 0.7]],
                             [[0, 0, 0, 0]] * 2, [[0, 0, 0, 0]] * 2])
    torch.testing.assert_close(batch.regions, expected)
    assert enc.collate(encoded[2:3], padding_side="right").regions is None


# -- the image tokens' cells and their targets ------------------------------------------------------


@pytest.mark.parametrize("layout,merge,first", [("row", 4, [0, 0, 0.5, 0.125]), ("square", 4, [0, 0, 0.25, 0.25]),
                                                ("row", 1, [0, 0, 0.125, 0.125])])
def test_image_token_boxes_tile_the_picture_in_token_order(layout, merge, first):
    cfg = load_yaml(ModelConfig, DEMO, [f"merge_layout={layout}", f"merge_tokens={merge}"])
    cells = image_token_boxes(cfg)
    assert cells.shape == (cfg.num_image_tokens, 4)
    torch.testing.assert_close(cells[0], torch.tensor(first))
    area = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    assert float(area.sum()) == pytest.approx(1.0)  # they tile the picture ...
    for a, b in itertools.combinations(cells.tolist(), 2):  # ... without overlapping
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
    # raster order: the second token is right of the first (same top), the last one at the bottom right
    assert float(cells[1, 0]) == pytest.approx(float(cells[0, 2])) and float(cells[1, 1]) == 0
    torch.testing.assert_close(cells[-1, 2:], torch.tensor([1.0, 1.0]))


def test_region_coverage_by_hand():
    cells = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]])
    regions = torch.tensor([
        [[0, 0, 0.5, 0.5], [0, 0, 0, 0]],  # exactly the first cell; a padding row
        [[0.6, 0.6, 0.7, 0.7], [0, 0, 0, 0]],  # small, inside the last cell
        [[0.25, 0, 0.75, 0.5], [0, 0, 0, 0]],  # half of each top cell, a cell's area
        [[0.25, 0, 0.75, 0.5], [0, 0, 0.5, 0.5]],  # the same and the first cell: the larger cover counts
    ])
    expected = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [0.5, 0.5, 0, 0], [1, 0.5, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(region_coverage(cells, regions), expected)
    assert region_coverage(cells, torch.zeros(2, 0, 4)).shape == (2, 4)


def _coverage_loops(cells, boxes) -> list[float]:
    out = []
    for cx1, cy1, cx2, cy2 in cells:
        best = 0.0
        for bx1, by1, bx2, by2 in boxes:
            inter = max(0.0, min(cx2, bx2) - max(cx1, bx1)) * max(0.0, min(cy2, by2) - max(cy1, by1))
            smaller = min((cx2 - cx1) * (cy2 - cy1), (bx2 - bx1) * (by2 - by1))
            best = max(best, min(1.0, inter / smaller))
        out.append(best)
    return out


def test_region_loss_is_the_mean_bce_per_sample_against_an_independent_computation():
    from mgv2.config import RegionLossConfig

    torch.manual_seed(0)
    cells = image_token_boxes(load_yaml(ModelConfig, DEMO))
    loss = RegionLoss(RegionLossConfig(weight=2.5, layer=2), cells, hidden_size=8)
    states = torch.randn(3, len(cells), 8)
    regions = torch.tensor([[[0.1, 0.2, 0.4, 0.5], [0.6, 0.6, 0.9, 0.8]],
                            [[0, 0, 0, 0], [0, 0, 0, 0]],  # no region: left out
                            [[0.0, 0.0, 1.0, 0.3], [0, 0, 0, 0]]])
    weighted, raw, count = loss(states, regions)
    assert count == 2
    expected = 0.0
    w, b = loss.head.weight.detach()[0], float(loss.head.bias.detach())
    for i in (0, 2):
        boxes = [r for r in regions[i].tolist() if r[2] > r[0]]
        target = _coverage_loops(cells.tolist(), boxes)
        terms = []
        for t, y in zip(states[i], target):
            z = float(t @ w) + b
            terms.append(-(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z)))))
        expected += sum(terms) / len(terms)
    assert float(raw) == pytest.approx(expected, rel=1e-5)
    assert float(weighted.detach()) == pytest.approx(2.5 * expected, rel=1e-5)
    none, _, n0 = loss(states, None)
    assert float(none.detach()) == 0 and n0 == 0 and none.requires_grad  # the head stays in the graph (DDP)
    with pytest.raises(Exception, match="image tokens per picture"):
        loss(states[:, :5], regions)


def test_image_states_are_the_decoder_layer_outputs_at_the_image_positions(tmp_path):
    trainer = Trainer(make_cfg(tmp_path / "a", steps=1, model_overrides=FIRST, region_loss={"layer": 2}),
                      records=tiny_world(6), verbose=False)
    from mgv2.data import make_loader

    [tb] = next(iter(make_loader(trainer.dataset, trainer.sampler, trainer.collator, 0)))  # one length chunk: one batch
    model = trainer.model.eval()
    with torch.no_grad():
        logits, targets, states = model.answer_logits_and_image_states(tb.batch, None, layer=2)
        plain_logits, plain_targets = model.answer_logits(tb.batch)
        out = model.llama_model.get_decoder()(**model._decoder_inputs(tb.batch, None), output_hidden_states=True)
    torch.testing.assert_close(logits, plain_logits)
    assert torch.equal(targets, plain_targets)
    rows = tb.batch.image_mask.any(dim=1)
    assert states.shape == (int(rows.sum()), model.num_image_tokens, out.hidden_states[2].shape[-1])
    torch.testing.assert_close(states, out.hidden_states[2][tb.batch.image_mask].reshape(states.shape))
    with pytest.raises(ValueError, match="outside the decoder"):
        model.answer_logits_and_image_states(tb.batch, None, layer=9)


# -- the trainer with it ------------------------------------------------------------------------


def test_region_loss_config_refusals(tmp_path):
    with pytest.raises(ConfigError, match="weight must be > 0"):
        make_cfg(tmp_path, region_loss={"weight": 0})
    with pytest.raises(ConfigError, match="layer must be >= 1"):
        make_cfg(tmp_path, region_loss={"layer": 0})
    with pytest.raises(ConfigError, match="instruction_first"):
        make_cfg(tmp_path, region_loss={}).model_config()  # the tiny preset keeps the official layout
    with pytest.raises(ConfigError, match="past the LLM's 4 layers"):
        make_cfg(tmp_path, region_loss={"layer": 5}, model_overrides=FIRST).model_config()


def test_trainer_adds_the_region_loss_logs_it_and_trains_its_head(tmp_path):
    over = {"steps": 8, "save_every": 100, "model_overrides": FIRST,
            "datasets": [{"name": "refer", "source": "refcoco", "task": "refer", "batch_size": 4},
                         {"name": "vqa", "source": "vqav2", "task": "vqa", "batch_size": 2}]}
    plain = Trainer(make_cfg(tmp_path / "a", **over), records=tiny_world(), verbose=False)
    region = Trainer(make_cfg(tmp_path / "b", region_loss={"weight": 3.0, "layer": 2}, **over),
                     records=tiny_world(), verbose=False)
    assert plain.loss_module.region_loss is None
    head = region.loss_module.region_loss.head
    assert all(any(p is q for q in region.trainable) for p in head.parameters())
    from mgv2.data import make_loader

    [tb] = next(iter(make_loader(region.dataset, region.sampler, region.collator, 0)))  # one length chunk: one batch
    with torch.no_grad():
        total, n = region.loss_module(tb.batch)
        answer, region_sum, count = region.loss_module.parts.tolist()
        plain_total, plain_n = plain.loss_module(tb.batch)
    assert int(n) == int(plain_n) and count == tb.num_samples  # every refer sample names its box
    assert float(answer) == pytest.approx(float(plain_total), rel=1e-5)  # same start weights, same answer loss
    assert float(total) == pytest.approx(answer + 3.0 * region_sum, rel=1e-5)
    before = head.weight.detach().clone()
    res = region.train()
    assert not torch.equal(before, head.weight.detach())
    log = read_log(tmp_path / "b")
    refer_steps = [r for r in log if r["datasets"] == ["refer"]]
    vqa_steps = [r for r in log if r["datasets"] == ["vqa"]]
    assert refer_steps and vqa_steps
    assert all(r["region_loss"] > 0 for r in refer_steps) and all("region_loss" not in r for r in vqa_steps)
    assert [h.region_loss is None for h in res.history] == [r["datasets"] == ["vqa"] for r in log]
    state = torch.load(tmp_path / "b" / "final" / "train_state.pt", weights_only=True)
    torch.testing.assert_close(state["region_head"]["head.weight"], head.weight.detach())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "final" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not any("region" in k or k.startswith("head.") for k in names)  # not part of the model


def test_region_loss_run_resumes_with_the_same_losses(tmp_path):
    over = {"steps": 6, "save_every": 2, "model_overrides": FIRST, "region_loss": {"weight": 2.0, "layer": 1}}
    full = Trainer(make_cfg(tmp_path / "a", **over), records=tiny_world(), verbose=False).train()
    cfg = make_cfg(tmp_path / "b", **over)
    Trainer(cfg, records=tiny_world(), verbose=False).train(stop_after=5)  # killed after step 5; last save 4
    resumed = Trainer(cfg, records=tiny_world(), resume=True, verbose=False)
    assert resumed.step == 4
    rest = resumed.train()
    assert rest.losses == pytest.approx(full.losses[4:], rel=1e-6, abs=1e-7)
    regions = [(h.region_loss is None, h.region_loss or 0.0) for h in rest.history]
    assert regions == [(h.region_loss is None, pytest.approx(h.region_loss or 0.0, rel=1e-6, abs=1e-7))
                       for h in full.history[4:]]
    assert any(h.region_loss for h in full.history)
    plain = make_cfg(tmp_path / "b", **{k: v for k, v in over.items() if k != "region_loss"})
    with pytest.raises(CheckpointError, match="trained with a region loss but this config has no region_loss"):
        Trainer(plain, records=tiny_world(), resume=True, verbose=False)


def test_region_loss_with_an_identify_sample_marks_the_asked_box(tmp_path):
    """Identify puts the box in the question: its region is that box (the model must find it)."""
    over = {"steps": 1, "save_every": 100, "model_overrides": FIRST, "region_loss": {},
            "datasets": [{"name": "refer", "source": "refcoco", "task": "identify", "batch_size": 2}]}
    trainer = Trainer(make_cfg(tmp_path / "i", **over), records=tiny_world(4), verbose=False)
    item = trainer.dataset.datasets[0].build(1, "refer:1")
    record = tiny_world(4)["refer"][1]
    x1, y1, x2, y2 = record.box_xyxy
    assert item.encoded.regions == ((int(x1 / 128 * 100), int(y1 / 96 * 100), int(x2 / 128 * 100), int(y2 / 96 * 100)),)


def test_the_next_stage_goes_on_with_the_region_head(tmp_path):
    over = {"steps": 2, "save_every": 100, "model_overrides": FIRST, "region_loss": {"layer": 2}}
    first = Trainer(make_cfg(tmp_path / "s1", **over), records=tiny_world(), verbose=False)
    first.train()
    trained = first.loss_module.region_loss.head.weight.detach().clone()
    second = Trainer(make_cfg(tmp_path / "s2", init_from=str(tmp_path / "s1" / "final"), **over),
                     records=tiny_world(), verbose=False)
    torch.testing.assert_close(second.loss_module.region_loss.head.weight.detach(), trained)
    fresh = Trainer(make_cfg(tmp_path / "s3", **over), records=tiny_world(), verbose=False)  # from nothing: seeded init
    assert not torch.equal(fresh.loss_module.region_loss.head.weight.detach(), trained)
