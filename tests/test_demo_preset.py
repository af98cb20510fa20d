"""The demo preset's design choices: configs load, the sin-cos inits do what they say."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mgv2.config import ModelConfig, TrainConfig, VisionConfig, load_yaml
from mgv2.vision import EVAViT, sincos_2d

ROOT = Path(__file__).resolve().parents[1]


def test_demo_configs_load():
    cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml")
    assert cfg.vision.pos_embed_init == "sincos" and cfg.llm.coord_init == "sincos"
    assert cfg.image_embed_norm == "center_ln"
    assert cfg.vision.grid % cfg.merge_tokens == 0
    for s in (1, 2, 3):
        t = load_yaml(TrainConfig, ROOT / f"configs/train/demo_stage{s}.yaml")
        assert t.stage == s and t.name == "demo"
        m = t.model_config()
        assert "llm" in m.trainable and not m.lora.enabled
        assert m.prompt_layout == "instruction_first"  # the expression before the image (docs/demo_model.md)
        refer = [d for d in t.datasets if d.task == "refer"]
        assert refer and all(d.turns_per_image == 1 for d in refer)  # every refer prompt in that layout
        questions = [d for d in t.datasets if d.task == "vqa"]  # VQA-, GQA-, VSR-style: the same (stages 2-3)
        assert all(d.turns_per_image == 1 for d in questions) and (s == 1 or len(questions) == 3)
    # stage 1 freezes the ViT that stage 0 (scripts/train_demo.sh) writes to runs/demo/vision0.pth
    first = load_yaml(TrainConfig, ROOT / "configs/train/demo_stage1.yaml").model_config()
    assert first.path(first.vision.checkpoint).resolve() == (ROOT / "runs/demo/vision0.pth").resolve()
    assert "vision" not in first.trainable


def test_sincos_pos_embed_init():
    table = sincos_2d(4, 16)
    assert table.shape == (16, 16)
    assert len({tuple(r.tolist()) for r in table}) == 16  # every patch position distinct
    vit = EVAViT(VisionConfig(img_size=56, patch_size=14, width=16, depth=1, heads=2, pos_embed_init="sincos"))
    assert torch.allclose(vit.pos_embed[0, 1:], table)
    assert torch.all(vit.pos_embed[0, 0] == 0)
    default = EVAViT(VisionConfig(img_size=56, patch_size=14, width=16, depth=1, heads=2))
    assert float(default.pos_embed.std()) < 0.05  # the official init is unchanged by default


def test_coordinate_token_init_is_ordered():
    from transformers import LlamaConfig, LlamaForCausalLM

    from mgv2.llm import init_coordinate_tokens

    llm = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2))
    ids = list(range(150, 251))
    init_coordinate_tokens(llm, ids)
    for w in (llm.get_input_embeddings().weight, llm.get_output_embeddings().weight):
        near = F.cosine_similarity(w[150], w[151], dim=0)
        far = F.cosine_similarity(w[150], w[200], dim=0)
        assert near > 0.5 and near > far + 0.3


def test_center_ln_image_embeds():
    """center_ln: each image's tokens have zero mean over tokens and per-token scale image_embed_scale."""
    from mgv2.model import build_model

    cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml",
                    ["vision.depth=1", "vision.width=32", "llm.num_layers=1", "llm.hidden_size=32",
                     "llm.intermediate_size=64", "llm.num_heads=2", "llm.num_kv_heads=2"])
    model = build_model(cfg, pad_token_id=0)
    with torch.no_grad():
        emb = model.embed_images(torch.randn(2, 3, cfg.vision.img_size, cfg.vision.img_size))
    assert emb.shape == (2, cfg.num_image_tokens, 32)
    assert float(emb.mean(dim=-1).abs().max()) < 1e-4
    assert torch.allclose(emb.std(dim=-1, unbiased=False), torch.full((2, cfg.num_image_tokens), cfg.image_embed_scale), atol=1e-3)
    model.image_embed_norm = "none"
    with torch.no_grad():
        raw = model.embed_images(torch.randn(1, 3, cfg.vision.img_size, cfg.vision.img_size))
    assert float(raw.std(dim=-1).mean()) < 0.9  # the official path is untouched


def test_save_frozen_vision(tmp_path):
    """A frozen random ViT goes into the checkpoint when save_frozen_vision is set, and only then."""
    from safetensors import safe_open

    from mgv2.checkpoint import save_checkpoint
    from mgv2.model import build_model

    small = ["vision.depth=1", "vision.width=32", "llm.num_layers=1", "llm.hidden_size=32",
             "llm.intermediate_size=64", "llm.num_heads=2", "llm.num_kv_heads=2",
             "trainable=[projector, llm]"]
    for flag in (True, False):
        cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + [f"save_frozen_vision={str(flag).lower()}"])
        model = build_model(cfg, pad_token_id=0)
        out = save_checkpoint(model, cfg, tmp_path / str(flag))
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert any(k.startswith("visual_encoder.") for k in keys) is flag
        assert any(k.startswith("ln_vision.") for k in keys) is flag


def test_image_pos_embed_is_a_trainable_projector_table_saved_and_required(tmp_path):
    """image_pos_embed: sincos starts as the 2D table of the LLM token grid, trains with the
    projector, goes into checkpoints, and a checkpoint without it does not load into a model with it."""
    import pytest

    from mgv2.checkpoint import load_checkpoint_folder, save_checkpoint
    from mgv2.errors import CheckpointError
    from mgv2.model import build_model, token_centres

    small = ["vision.depth=1", "vision.width=32", "llm.num_layers=1", "llm.hidden_size=32",
             "llm.intermediate_size=64", "llm.num_heads=2", "llm.num_kv_heads=2", "trainable=[projector]"]
    cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + ["image_pos_embed=sincos"])
    model = build_model(cfg, pad_token_id=0)
    rows, cols = (len(c) for c in token_centres(cfg))
    assert (rows, cols) == (cfg.vision.grid, cfg.vision.grid // cfg.merge_tokens)  # 1x4 strips
    square_cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + ["image_pos_embed=sincos",
                                                                                   "merge_layout=square"])
    square = build_model(square_cfg, pad_token_id=0).image_pos_embed
    k = cfg.vision.grid // 2  # 2x2 blocks: grid/2 x grid/2 tokens
    assert square.shape == (k * k, 32) and len({tuple(r.tolist()) for r in square}) == k * k
    table = model.image_pos_embed
    assert table.shape == (rows * cols, 32) == (cfg.num_image_tokens, 32)
    assert len({tuple(r.tolist()) for r in table}) == rows * cols  # every token position distinct
    assert "image_pos_embed" in [n for n, _ in model.part_parameters()["projector"]]
    model.set_trainable(["projector"])
    assert table.requires_grad
    pixels = torch.randn(1, 3, cfg.vision.img_size, cfg.vision.img_size)
    with torch.no_grad():
        with_pos = model.embed_images(pixels)
        model.image_pos_embed = None
        without = model.embed_images(pixels)
        model.image_pos_embed = table
    torch.testing.assert_close(with_pos - without, table.detach().unsqueeze(0))
    # saved with the projector, loaded back; required where the model has one
    with torch.no_grad():
        table.add_(1.0)
    out = save_checkpoint(model, cfg, tmp_path / "with")
    fresh = build_model(cfg, pad_token_id=0)
    load_checkpoint_folder(fresh, out)
    torch.testing.assert_close(fresh.image_pos_embed, table)
    plain_cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small)
    plain = save_checkpoint(build_model(plain_cfg, pad_token_id=0), plain_cfg, tmp_path / "without")
    with pytest.raises(CheckpointError, match="image_pos_embed"):
        load_checkpoint_folder(build_model(cfg, pad_token_id=0), plain)
    assert build_model(plain_cfg, pad_token_id=0).image_pos_embed is None  # official default: none


def test_a_checkpoint_of_one_merge_layout_does_not_load_into_the_other(tmp_path):
    """Row and square merges give projectors of one shape: the checkpoint header tells them apart."""
    import pytest

    from mgv2.checkpoint import load_checkpoint_folder, save_checkpoint
    from mgv2.errors import CheckpointError
    from mgv2.model import build_model

    small = ["vision.depth=1", "vision.width=32", "llm.num_layers=1", "llm.hidden_size=32",
             "llm.intermediate_size=64", "llm.num_heads=2", "llm.num_kv_heads=2", "trainable=[projector]"]
    row_cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + ["merge_layout=row"])
    square_cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + ["merge_layout=square"])
    row = save_checkpoint(build_model(row_cfg, pad_token_id=0), row_cfg, tmp_path / "row")
    square = save_checkpoint(build_model(square_cfg, pad_token_id=0), square_cfg, tmp_path / "square")
    load_checkpoint_folder(build_model(square_cfg, pad_token_id=0), square)
    load_checkpoint_folder(build_model(row_cfg, pad_token_id=0), row)
    with pytest.raises(CheckpointError, match="merge_layout: row, this model config has merge_layout: square"):
        load_checkpoint_folder(build_model(square_cfg, pad_token_id=0), row)
    with pytest.raises(CheckpointError, match="merge_layout: square"):
        load_checkpoint_folder(build_model(row_cfg, pad_token_id=0), square)


def test_image_pos_embed_coords_adds_the_coordinate_tokens_embeddings_and_is_in_the_header(tmp_path):
    """image_pos_embed: coords adds to each image token the LLM's input embeddings of <x> and <y>
    of its centre (tied: the box text's own tokens, so their gradient reaches them), has no tensor
    of its own, and its checkpoints say so in the header: they refuse a model without it."""
    import pytest

    from mgv2.checkpoint import load_checkpoint_folder, save_checkpoint
    from mgv2.errors import CheckpointError
    from mgv2.model import build_model, image_coord_ids

    small = ["vision.depth=1", "vision.width=32", "llm.num_layers=1", "llm.hidden_size=32",
             "llm.intermediate_size=64", "llm.num_heads=2", "llm.num_kv_heads=2", "trainable=[projector,llm]"]
    cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small + ["image_pos_embed=coords"])
    ids = list(range(300, 401))  # <v> -> token id 300 + v
    # the 1x4 strips of an 8x8 grid: columns centred on 25 and 75 of 100, rows on 6.25, 18.75, ...
    table = image_coord_ids(cfg, ids) - 300
    assert table.shape == (cfg.num_image_tokens, 2)
    assert table[:4].tolist() == [[25, 6], [75, 6], [25, 19], [75, 19]] and table[-1].tolist() == [75, 94]
    with pytest.raises(ValueError, match="coordinate token ids"):
        build_model(cfg, pad_token_id=0)
    with pytest.raises(ValueError, match="101 distinct single tokens"):
        image_coord_ids(cfg, [0] * 101)  # a tokenizer without <v> tokens maps them all to unk
    model = build_model(cfg, pad_token_id=0, coord_token_ids=ids)
    assert model.image_pos_kind == "coords" and model.image_pos_embed is None
    assert "image_coord_ids" not in model.state_dict()  # derived from the config, not saved
    pixels = torch.randn(1, 3, cfg.vision.img_size, cfg.vision.img_size)
    emb = model.llama_model.get_input_embeddings().weight
    with torch.no_grad():
        with_pos = model.embed_images(pixels)
        saved, model.image_coord_ids = model.image_coord_ids, None
        without = model.embed_images(pixels)
        model.image_coord_ids = saved
    torch.testing.assert_close(with_pos - without, (emb[table[:, 0] + 300] + emb[table[:, 1] + 300]).unsqueeze(0))
    model.embed_images(pixels).sum().backward()  # the coordinate rows get a gradient, other rows none
    assert emb.grad[300 + 25].abs().sum() > 0 and emb.grad[300 + 94].abs().sum() > 0
    assert emb.grad[300 + 50].abs().sum() == 0 and emb.grad[:300].abs().sum() == 0
    out = save_checkpoint(model, cfg, tmp_path / "coords")
    load_checkpoint_folder(build_model(cfg, pad_token_id=0, coord_token_ids=ids), out)
    plain_cfg = load_yaml(ModelConfig, ROOT / "configs/model/demo.yaml", small)
    with pytest.raises(CheckpointError, match="image_pos_embed: coords, this model config has image_pos_embed: none"):
        load_checkpoint_folder(build_model(plain_cfg, pad_token_id=0), out)
    plain = save_checkpoint(build_model(plain_cfg, pad_token_id=0), plain_cfg, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="image_pos_embed: none"):
        load_checkpoint_folder(build_model(cfg, pad_token_id=0, coord_token_ids=ids), plain)
