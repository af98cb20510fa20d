"""The training pass that runs the last decoder layer only where an answer logit is read
(mgv2/answer_pass.py) against the whole decoder: same hidden states, same gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from mgv2.answer_pass import answer_windows, decoder_answer_pass
from mgv2.prompt import IGNORE_INDEX
from mgv2.sample import Sample, Turn


def test_windows_span_each_rows_first_to_last_query():
    query = torch.tensor([
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    index, keep = answer_windows(query)
    assert index.tolist() == [[1, 2, 3, 4], [5, 5, 5, 5], [0, 1, 2, 3], [5, 5, 5, 5]]
    assert keep.tolist() == [[True, True, False, False], [False] * 4, [True, False, False, True],
                             [True, False, False, False]]
    values = torch.arange(24).reshape(4, 6)
    assert torch.equal(values.gather(1, index)[keep], values[query])  # the same order as tensor[query]
    index, keep = answer_windows(torch.zeros(2, 3, dtype=torch.bool))
    assert index.shape == (2, 1) and not keep.any()
    with pytest.raises(ValueError, match="bool mask"):
        answer_windows(torch.zeros(2, 3))


def _decoder(kv_heads: int) -> LlamaModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64)
    return LlamaModel(cfg).train()


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_same_states_and_gradients_as_the_whole_decoder(kv_heads, padding):
    decoder = _decoder(kv_heads)
    b, t, d = 3, 11, 32
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(b, t, d, generator=g, requires_grad=True)
    lengths = [11, 7, 9]
    mask = torch.zeros(b, t, dtype=torch.long)
    query = torch.zeros(b, t, dtype=torch.bool)
    spans = [[(3, 5), (8, 10)], [(4, 6)], [(6, 8)]]  # answers (multi-turn in row 0), ending at each row's end
    for i, n in enumerate(lengths):
        start = 0 if padding == "right" else t - n
        mask[i, start:start + n] = 1
        for lo, hi in spans[i]:
            query[i, start + lo:start + hi] = True
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    weights = torch.randn(int(query.sum()), d, generator=g)
    params = [embeds] + [p for n, p in decoder.named_parameters() if not n.startswith("embed_tokens")]

    full = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False,
                   output_hidden_states=True)
    ref_states, ref_captured = full.last_hidden_state[query], full.hidden_states[2]
    ref_grads = torch.autograd.grad((ref_states * weights).sum() + ref_captured.square().sum(),
                                    params)

    index, keep = answer_windows(query)
    assert index.shape[1] < t  # the last layer runs on fewer positions
    hidden, captured = decoder_answer_pass(decoder, embeds, mask, position_ids, index, capture=2)
    states = hidden[keep]
    grads = torch.autograd.grad((states * weights).sum() + captured.square().sum(), params)
    torch.testing.assert_close(states, ref_states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(captured, ref_captured)
    for a, ref in zip(grads, ref_grads):
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-5)


def test_capture_must_be_below_the_last_layer():
    decoder = _decoder(4)
    embeds, mask = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.long)
    index, _ = answer_windows(torch.tensor([[0, 0, 1, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="capture layer 3 must be in 1..2"):
        decoder_answer_pass(decoder, embeds, mask, mask.cumsum(-1) - 1, index, capture=3)


def test_model_answer_logits_match_the_whole_decoder(tiny_pipeline, scene_image):
    """MiniGPTv2.answer_logits_and_image_states with the answer pass (the default) against
    ``answer_pass = None``, on the LoRA-wrapped tiny model, multi-turn and padded, with the image
    states of a middle layer; the LoRA dropout is off so that both draw the same (no) masks."""
    from tests.test_model import _train_batch

    model = tiny_pipeline.model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    samples = [
        Sample(image="a", turns=[Turn("[refer] red ball", "{<12><30><41><77>}")]),
        Sample(image="a", turns=[Turn("[vqa] what colour is the square ?", "blue")]),
        Sample(image="a", turns=[Turn("[vqa] how many ?", "2"), Turn("[refer] the cup", "{<1><2><3><4>}")]),
    ]
    batch = _train_batch(tiny_pipeline, scene_image, samples)
    assert bool((batch.attention_mask == 0).any())  # padded
    params = list(model.trainable_parameters().values())
    layers = model.llama_model.get_decoder().config.num_hidden_layers
    results = {}
    for name, fn in (("answer", model.answer_pass), ("full", None)):
        model.answer_pass = fn
        logits, targets, states = model.answer_logits_and_image_states(batch, None, layer=layers - 1)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum") + states.square().mean()
        results[name] = (logits, targets, states, torch.autograd.grad(loss, params))
    (la, ta, sa, ga), (lf, tf, sf, gf) = results["answer"], results["full"]
    assert torch.equal(ta, tf) and int(ta.numel()) == int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(la, lf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sa, sf)
    for a, ref in zip(ga, gf):
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
    model.eval()
