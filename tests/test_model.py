"""The composed model on the tiny preset: prompts, loss mask, gradients, checkpoints, generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mgv2.checkpoint import (
    export_merged,
    load_official_checkpoint,
    mgv2_to_official_key,
    save_checkpoint,
)
from mgv2.errors import CheckpointError
from mgv2.model import GenerationSettings
from mgv2.prompt import IGNORE_INDEX, PromptEncoder, PromptError
from mgv2.sample import Sample, Turn


def _train_batch(pipe, image, samples):
    enc = [pipe.encoder.encode_train(s) for s in samples]
    pixels = pipe.processor.batch([image] * len(samples))
    return pipe.encoder.collate(enc, padding_side="right", pixel_values=pixels)


# -- prompt / tokenisation -------------------------------------------------------------------


def test_training_sequence_layout_and_label_mask(tiny_pipeline):
    enc = tiny_pipeline.encoder
    tok = tiny_pipeline.tokenizer
    n = tiny_pipeline.cfg.num_image_tokens
    s = Sample(image="x.jpg", turns=[Turn("[refer] red balloon", "{<12><30><41><77>}")])
    e = enc.encode_train(s)
    assert e.input_ids[0] == tok.bos_token_id and e.input_ids[1] != tok.bos_token_id  # a single BOS
    before = tok("[INST] <Img>", add_special_tokens=False).input_ids
    assert e.input_ids[1 : 1 + len(before)] == before
    assert e.image_start == 1 + len(before)
    assert e.input_ids[e.image_start : e.image_start + n] == [enc.pad_id] * n
    after = tok("</Img> [refer] red balloon  [/INST]", add_special_tokens=False).input_ids  # two spaces
    assert e.input_ids[e.image_start + n : e.image_start + n + len(after)] == after
    answer = [i for i, lab in zip(e.input_ids, e.labels) if lab != IGNORE_INDEX]
    assert answer == tok("{<12><30><41><77>}", add_special_tokens=False).input_ids + [tok.eos_token_id]
    # the loss covers exactly the answer: a contiguous tail
    first = next(i for i, lab in enumerate(e.labels) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in e.labels[:first])
    assert e.labels[first:] == e.input_ids[first:]


def test_instruction_first_layout_puts_the_image_after_the_instruction(tiny_pipeline):
    tok = tiny_pipeline.tokenizer
    n = tiny_pipeline.cfg.num_image_tokens
    enc = PromptEncoder(tok, n, layout="instruction_first")
    turn = "[refer] red balloon"
    train = enc.encode_train(Sample(image="x.jpg", turns=[Turn(turn, "{<12><30><41><77>}")]))
    before = tok("[INST] [refer] red balloon <Img>", add_special_tokens=False).input_ids
    after = tok("</Img> [/INST]", add_special_tokens=False).input_ids
    assert train.input_ids[1 : 1 + len(before)] == before and train.image_start == 1 + len(before)
    assert train.input_ids[train.image_start : train.image_start + n] == [enc.pad_id] * n
    assert train.input_ids[train.image_start + n : train.image_start + n + len(after)] == after
    # inference: the same tokens after the two BOS (training and inference text are identical here)
    prompt = enc.encode_prompt(Sample(image="x.jpg", turns=[Turn(turn)]))
    assert prompt.input_ids[:2] == [tok.bos_token_id] * 2
    assert prompt.input_ids[2:] == train.input_ids[1 : len(prompt.input_ids) - 1]
    # without an image the layouts agree
    text_only = Sample(image=None, turns=[Turn("hello", "hi")])
    assert enc.encode_train(text_only).input_ids == tiny_pipeline.encoder.encode_train(text_only).input_ids
    with pytest.raises(PromptError, match="prompt layout"):
        PromptEncoder(tok, n, layout="image_last")


def test_multi_turn_training_masks_every_question(tiny_pipeline):
    enc, tok = tiny_pipeline.encoder, tiny_pipeline.tokenizer
    s = Sample(image="x.jpg", turns=[Turn("what colour ?", "red"), Turn("[refer] the ball", "{<1><2><3><4>}")])
    e = enc.encode_train(s)
    kept = tok.decode([i for i, lab in zip(e.input_ids, e.labels) if lab != IGNORE_INDEX])
    assert kept.replace(" ", "") == "red</s>{<1><2><3><4>}</s>"
    q2 = tok("<s>[INST] [refer] the ball [/INST]", add_special_tokens=False).input_ids
    text_ids = e.input_ids
    assert any(text_ids[i : i + len(q2)] == q2 for i in range(len(text_ids)))


def test_inference_prompt_has_two_bos_and_left_padding(tiny_pipeline):
    enc, tok = tiny_pipeline.encoder, tiny_pipeline.tokenizer
    a = enc.encode_prompt(Sample(image="a", turns=[Turn("[vqa] what is it ?")]))
    b = enc.encode_prompt(Sample(image="b", turns=[Turn("[refer] the big red balloon on the left")]))
    assert a.input_ids[:2] == [tok.bos_token_id, tok.bos_token_id]
    batch = enc.collate([a, b], padding_side="left")
    assert batch.attention_mask[:, -1].all()
    assert batch.image_mask.sum(1).tolist() == [tiny_pipeline.cfg.num_image_tokens] * 2
    assert batch.image_index.tolist() == [0, 1]
    short = 0 if len(a) < len(b) else 1
    assert batch.attention_mask[short, 0] == 0 and batch.input_ids[short, 0] == enc.pad_id


@pytest.mark.parametrize("bad", ["", "   ", "look <ImageHere> here"])
def test_bad_instruction_is_refused(tiny_pipeline, bad):
    with pytest.raises(PromptError):
        tiny_pipeline.encoder.encode_prompt(Sample(image="a", turns=[Turn(bad)]))


# -- forward / backward ----------------------------------------------------------------------


def test_token_merge_is_one_by_four_in_raster_order(tiny_pipeline):
    m = tiny_pipeline.model
    pix = torch.randn(1, 3, tiny_pipeline.cfg.vision.img_size, tiny_pipeline.cfg.vision.img_size)
    with torch.no_grad():
        feats = m.ln_vision(m.visual_encoder(pix))[:, 1:]
        manual = torch.cat([feats[:, 0], feats[:, 1], feats[:, 2], feats[:, 3]], dim=-1)  # first group
        got = m.embed_images(pix)
    assert got.shape == (1, tiny_pipeline.cfg.num_image_tokens, tiny_pipeline.cfg.llm.hidden_size)
    torch.testing.assert_close(got[0, 0], m.llama_proj(manual)[0])


def test_square_merge_joins_two_by_two_blocks():
    from mgv2.model import merge_patches

    grid, c = 4, 3
    tokens = torch.arange(grid * grid * c, dtype=torch.float32).reshape(1, grid * grid, c)
    square = merge_patches(tokens, 4, "square")
    assert square.shape == (1, 4, 4 * c)
    # block (0, 1) = patches (0, 2), (0, 3), (1, 2), (1, 3) = raster 2, 3, 6, 7
    torch.testing.assert_close(square[0, 1], torch.cat([tokens[0, i] for i in (2, 3, 6, 7)]))
    torch.testing.assert_close(square[0, 2], torch.cat([tokens[0, i] for i in (8, 9, 12, 13)]))
    row = merge_patches(tokens, 4, "row")
    torch.testing.assert_close(row[0, 1], torch.cat([tokens[0, i] for i in (4, 5, 6, 7)]))
    with pytest.raises(ValueError, match="square merge"):
        merge_patches(tokens[:, :12], 4, "square")


def test_backward_reaches_exactly_the_trainable_parameters(tiny_pipeline, scene_image):
    model = tiny_pipeline.model
    model.train()
    samples = [
        Sample(image="a", turns=[Turn("[refer] red ball", "{<12><30><41><77>}")]),
        Sample(image="a", turns=[Turn("[vqa] what colour is the square ?", "blue")]),
    ]
    batch = _train_batch(tiny_pipeline, scene_image, samples)
    out = model(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = model.trainable_parameters()
    assert trainable and all(n.startswith("llama_proj.") or ".lora_" in n for n in trainable)
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # the frozen encoder stays in eval mode while the model trains
    assert not model.visual_encoder.training


def test_loss_counts_only_answer_tokens(tiny_pipeline, scene_image):
    model = tiny_pipeline.model.eval()
    s = Sample(image="a", turns=[Turn("[vqa] what colour is the square ?", "blue")])
    batch = _train_batch(tiny_pipeline, scene_image, [s])
    with torch.no_grad():
        out = model(batch)
    logits = out.logits[0, :-1]
    target = batch.labels[0, 1:]
    keep = target != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep].float(), target[keep])
    torch.testing.assert_close(out.loss, manual)
    assert int(keep.sum()) == batch.num_answer_tokens == len(tiny_pipeline.tokenizer("blue", add_special_tokens=False).input_ids) + 1


def test_answer_loss_matches_the_full_forward(tiny_pipeline, scene_image):
    """The trainer's loss (LM head only where a label follows) equals the transformers loss of
    ``forward`` on a batch of different answer lengths, and so do their gradients.  Both run the
    whole decoder here, so the LoRA dropout draws the same masks; the answer pass (last layer on
    the answer positions only) is compared with this one in tests/test_answer_pass.py."""
    model = tiny_pipeline.model.train()
    model.answer_pass = None
    samples = [
        Sample(image="a", turns=[Turn("[refer] red ball", "{<12><30><41><77>}")]),
        Sample(image="a", turns=[Turn("[vqa] what colour is the square ?", "blue")]),
        Sample(image="a", turns=[Turn("[vqa] how many ?", "2"), Turn("[refer] the cup", "{<1><2><3><4>}")]),
    ]
    batch = _train_batch(tiny_pipeline, scene_image, samples)
    params = list(model.trainable_parameters().values())
    torch.manual_seed(0)
    out = model(batch)
    n = batch.num_answer_tokens
    full = out.loss * n
    grads_full = torch.autograd.grad(full, params)
    torch.manual_seed(0)
    loss_sum, count = model.answer_loss(batch)
    grads = torch.autograd.grad(loss_sum, params)
    assert int(count) == n
    torch.testing.assert_close(loss_sum, full.float(), rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.eval()


# -- checkpoints -----------------------------------------------------------------------------


def _official_state(model, seed=1):
    """A state dict the way the released file spells it (old peft names + inv_freq buffers)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in model.named_parameters():
        if name.startswith("llama_proj.") or ".lora_" in name:
            state[mgv2_to_official_key(name)] = torch.randn(p.shape, generator=g) * 0.05
    cfg = model.llama_model.config
    head = cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (10000.0 ** (torch.arange(0, head, 2).float() / head))
    for i in range(cfg.num_hidden_layers):
        state[f"llama_model.base_model.model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv.clone()
    return state


def test_official_key_names_are_what_the_release_uses(tiny_pipeline):
    state = _official_state(tiny_pipeline.model)
    assert "llama_proj.weight" in state and "llama_proj.bias" in state
    assert "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in state
    assert "llama_model.base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight" in state
    assert not any(".default." in k for k in state)


def test_official_checkpoint_loads_and_changes_the_output(tiny_pipeline, scene_image, tmp_path):
    pipe = tiny_pipeline
    samples = [Sample(image="a", turns=[Turn("[refer] red ball", "{<12><30><41><77>}")])]
    batch = _train_batch(pipe, scene_image, samples)
    with torch.no_grad():
        before = pipe.model(batch).logits
    path = tmp_path / "minigptv2_checkpoint.pth"
    state = _official_state(pipe.model)
    torch.save({"model": state, "optimizer": {"state": {}}, "epoch": 3}, path)
    report = load_official_checkpoint(pipe.model, path)
    assert len(report.loaded) == len(state) - pipe.cfg.llm.num_layers
    assert len(report.ignored) == pipe.cfg.llm.num_layers and not report.notes
    assert "llama_proj.weight" in report.loaded
    with torch.no_grad():
        after = pipe.model(batch).logits
    assert not torch.allclose(before, after)
    torch.testing.assert_close(pipe.model.llama_proj.weight, state["llama_proj.weight"])
    lora_b = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    torch.testing.assert_close(pipe.model.state_dict()[lora_b.replace(".weight", ".default.weight")], state[lora_b])


@pytest.mark.parametrize(
    "damage, words",
    [
        ("drop", "lacks"),
        ("extra", "no place"),
        ("shape", "shape mismatch"),
        ("no_model", "not a MiniGPT-v2 checkpoint"),
    ],
)
def test_official_checkpoint_refuses_what_does_not_fit(tiny_pipeline, tmp_path, damage, words):
    state = _official_state(tiny_pipeline.model)
    if damage == "drop":
        del state["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    elif damage == "extra":
        state["llama_model.base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(2, 2)
    elif damage == "shape":
        state["llama_proj.weight"] = torch.zeros(7, 5)  # e.g. MiniGPT-4's projector
    payload = state if damage == "no_model" else {"model": state}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=words):
        load_official_checkpoint(tiny_pipeline.model, path)


def test_rotary_mismatch_is_reported(tiny_pipeline, tmp_path):
    state = _official_state(tiny_pipeline.model)
    for k in state:
        if k.endswith("inv_freq"):
            state[k] = state[k] * 0.5
    torch.save({"model": state}, tmp_path / "c.pth")
    report = load_official_checkpoint(tiny_pipeline.model, tmp_path / "c.pth")
    assert report.notes and "rope_theta" in report.notes[0]


def test_missing_or_corrupt_checkpoint_file(tiny_pipeline, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_official_checkpoint(tiny_pipeline.model, tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_official_checkpoint(tiny_pipeline.model, tmp_path / "bad.pth")


def test_mgv2_folder_round_trip_and_peft_adapter(tiny_pipeline, tiny_cfg, scene_image, tmp_path):
    pipe = tiny_pipeline
    torch.save({"model": _official_state(pipe.model, seed=5)}, tmp_path / "c.pth")
    load_official_checkpoint(pipe.model, tmp_path / "c.pth")
    batch = _train_batch(pipe, scene_image, [Sample(image="a", turns=[Turn("[vqa] colour ?", "red")])])
    with torch.no_grad():
        ref = pipe.model(batch).logits
    out = save_checkpoint(pipe.model, tiny_cfg, tmp_path / "ckpt")
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    import json

    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == tiny_cfg.lora.r and set(adapter_cfg["target_modules"]) == set(tiny_cfg.lora.target_modules)

    from mgv2.pipeline import Pipeline

    torch.manual_seed(0)  # the frozen base is random-init in the tiny preset: same seed, same base
    fresh = Pipeline.from_config(tiny_cfg, checkpoint=out, device="cpu", verbose=False)
    with torch.no_grad():
        got = fresh.model(batch).logits
    torch.testing.assert_close(got, ref)


def test_export_merged_matches_lora_model(tiny_pipeline, tiny_cfg, scene_image, tmp_path):
    pipe = tiny_pipeline
    torch.save({"model": _official_state(pipe.model, seed=7)}, tmp_path / "c.pth")
    load_official_checkpoint(pipe.model, tmp_path / "c.pth")
    batch = _train_batch(pipe, scene_image, [Sample(image="a", turns=[Turn("[vqa] colour ?", "red")])])
    with torch.no_grad():
        ref = pipe.model(batch).logits
    out = export_merged(pipe.model, tiny_cfg, pipe.tokenizer, tmp_path / "merged")
    from mgv2.config import ModelConfig, load_yaml
    from mgv2.pipeline import Pipeline

    merged_cfg = load_yaml(ModelConfig, out / "config.yaml")
    assert not merged_cfg.lora.enabled
    merged = Pipeline.from_config(merged_cfg, device="cpu", verbose=False)
    assert not hasattr(merged.model.llama_model, "peft_config")
    with torch.no_grad():
        got = merged.model(batch).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


# -- generation ------------------------------------------------------------------------------


def test_batched_greedy_equals_one_at_a_time(tiny_pipeline, scene_image):
    from PIL import Image

    pipe = tiny_pipeline
    other = Image.new("RGB", (90, 60), (10, 200, 10))
    images = [scene_image, other, scene_image]
    prompts = ["[refer] red ball", "[vqa] what colour is the big square on the right side ?", "[caption] hi"]
    settings = GenerationSettings(max_new_tokens=12, min_new_tokens=12)
    batched = pipe.predict(images, prompts, settings)
    single = [pipe.predict([im], [p], settings)[0] for im, p in zip(images, prompts)]
    assert batched == single
    assert all(len(pipe.tokenizer(t, add_special_tokens=False).input_ids) >= 1 for t in batched)


def test_image_embeddings_are_reusable(tiny_pipeline, scene_image):
    pipe = tiny_pipeline
    emb = pipe.embed_images([scene_image])
    samples = [Sample(image="a", turns=[Turn(p)]) for p in ("[refer] red ball", "[vqa] how many ?")]
    settings = GenerationSettings(max_new_tokens=6, min_new_tokens=6)
    reused = pipe.generate(samples, emb, [0, 0], settings)
    batch = pipe.prompt_batch(samples, [0, 1])
    batch.pixel_values = pipe.pixels([scene_image, scene_image])
    fresh = [pipe.encoder.decode(r) for r in pipe.model.generate(batch, settings)]
    assert reused == fresh


def test_generation_refuses_right_padding(tiny_pipeline):
    enc = tiny_pipeline.encoder
    a = enc.encode_prompt(Sample(image=None, turns=[Turn("hi")]))
    b = enc.encode_prompt(Sample(image=None, turns=[Turn("hello there, how are you today ?")]))
    with pytest.raises(ValueError, match="left-padded"):
        tiny_pipeline.model.generate(enc.collate([a, b], padding_side="right"))


def test_sampling_and_beam_search_run(tiny_pipeline, scene_image):
    torch.manual_seed(0)
    for s in (GenerationSettings.demo(), GenerationSettings(max_new_tokens=5, num_beams=3)):
        s = dataclasses.replace(s, max_new_tokens=5)
        (text,) = tiny_pipeline.predict([scene_image], ["[grounding] describe this image in detail"], s)
        assert isinstance(text, str)


def test_saved_config_loads_from_the_checkpoint_folder(tiny_pipeline, tiny_cfg, tmp_path):
    """A config whose paths are relative to its own YAML (a stage's ``vision.checkpoint=../../x``)
    is written beside the weights with those paths absolute, so ``--model <ckpt>/config.yaml``
    finds the same files; ``mgv2:`` names and nulls stay as they are."""
    from mgv2.config import ModelConfig, load_yaml

    base = tmp_path / "configs" / "model"
    base.mkdir(parents=True)
    (tmp_path / "weights").mkdir()
    cfg = dataclasses.replace(
        tiny_cfg,
        vision=dataclasses.replace(tiny_cfg.vision, checkpoint="../../weights/vit.pth"),
        llm=dataclasses.replace(tiny_cfg.llm, path=None, tokenizer="mgv2:tiny_tokenizer"),
        checkpoint="../../weights/ckpt",
        base_dir=str(base),
    )
    out = save_checkpoint(tiny_pipeline.model, cfg, tmp_path / "runs" / "deep" / "ckpt")
    saved = load_yaml(ModelConfig, out / "config.yaml")
    assert saved.path(saved.vision.checkpoint) == (tmp_path / "weights" / "vit.pth").resolve()
    assert saved.path(saved.checkpoint) == (tmp_path / "weights" / "ckpt").resolve()
    assert saved.llm.tokenizer == "mgv2:tiny_tokenizer" and saved.llm.path is None
    assert saved.path(saved.llm.tokenizer) == cfg.path(cfg.llm.tokenizer)
