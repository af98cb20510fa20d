"""Greedy generation that computes the shared prompt prefix once per image.

Every inference prompt starts with the same tokens and the image (``<s><s>[INST] <Img>`` +
image embeddings), and the prompts of one benchmark also share the template words right after
the image (``</Img> [refer] give me the location of``).  :func:`shared_prefix_greedy` runs that
prefix once per unique image, copies its keys/values to each prompt, runs only the rest of each
prompt and decodes greedily.  The arithmetic is the model's own (same positions as the
left-padded batch, same masks), only not repeated; tests compare it with
:meth:`mgv2.model.MiniGPTv2.generate` (transformers ``generate``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from mgv2.model import GenerationSettings
from mgv2.prompt import PromptEncoder
from mgv2.sample import Sample


def _forward_parameters(llm):
    """The keyword parameters of the (PEFT-unwrapped) LLM's forward, for names that vary by version."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return inspect.signature(base.forward).parameters


def last_logits_kwargs(llm) -> dict[str, int]:
    """Ask the LLM for the last position's logits only, under the name its version uses."""
    params = _forward_parameters(llm)
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def cache_kwarg(llm) -> str:
    """The forward keyword of the KV cache: ``cache`` in recent transformers, which warn on every
    call that still says ``past_key_values`` (the older name, kept for transformers 4.x)."""
    return "cache" if "cache" in _forward_parameters(llm) else "past_key_values"


def plain_greedy(settings: GenerationSettings) -> bool:
    return (
        not settings.do_sample
        and settings.num_beams == 1
        and settings.repetition_penalty == 1.0
        and settings.min_new_tokens == 0
    )


@torch.inference_mode()
def shared_prefix_greedy(
    model, encoder: PromptEncoder, samples: Sequence[Sample], image_embeds: torch.Tensor,
    image_index: Sequence[int], settings: GenerationSettings,
) -> list[list[int]] | None:
    """Greedy answers computing the image prefix of the prompt once per image.

    Every inference prompt starts with the same tokens and the image, ``<s><s>[INST] <Img>`` +
    image embeddings (+ the text tokens right after the image that all prompts of the batch share,
    e.g. ``</Img> [refer] give me the location of``): their keys/values are computed once per
    unique image of the batch and copied to each of its prompts; then only the rest of each prompt
    is run, padded BETWEEN prefix and text so that the positions of the
    real tokens are those of the left-padded prompt (``cumsum(mask) - 1``), and decoding is the
    plain greedy loop of ``transformers`` (argmax; finished rows get the pad token; stop at EOS
    or ``max_new_tokens``).  The arithmetic is the model's own, only not repeated; answers are
    compared with :meth:`mgv2.pipeline.Pipeline.generate` in the tests and in ``bench/eval.py``.

    Returns the new token ids of each prompt (cut at EOS), or ``None`` (the caller then uses
    ``model.generate``) when the settings are not plain greedy or the prompts share no prefix.
    """
    from transformers import DynamicCache

    if not plain_greedy(settings):
        return None
    enc = encoder
    llm = model.llama_model
    encoded = [enc.encode_prompt(s) for s in samples]
    start = encoded[0].image_start
    if start is None:
        return None
    n_prefix = start + enc.num_image_tokens
    head = encoded[0].input_ids[:start]
    if any(e.image_start != start or e.input_ids[:start] != head or len(e) <= n_prefix for e in encoded):
        return None
    # text tokens right after the image that every prompt of the batch shares ("</Img> [refer] give
    # me the location of"): part of the prefix too; each prompt keeps at least one token of its own
    tails = [e.input_ids[n_prefix:] for e in encoded]
    shared = 0
    while shared < min(len(t) for t in tails) - 1 and all(t[shared] == tails[0][shared] for t in tails):
        shared += 1
    dev = image_embeds.device
    embed = llm.get_input_embeddings()
    last_only = last_logits_kwargs(llm)
    kv = cache_kwarg(llm)
    n_img = image_embeds.shape[0]
    # 1. the shared prefix, once per unique image
    head_embeds = embed(torch.tensor([head], device=dev)).expand(n_img, -1, -1)
    text_embeds = embed(torch.tensor([tails[0][:shared]], device=dev, dtype=torch.long)).expand(n_img, -1, -1)
    prefix = torch.cat([head_embeds, image_embeds.to(dev, head_embeds.dtype), text_embeds], dim=1)
    n_prefix += shared
    tails = [t[shared:] for t in tails]
    cache = DynamicCache()
    llm(inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=dev),
        position_ids=torch.arange(n_prefix, device=dev).expand(n_img, -1), **{kv: cache},
        use_cache=True, **last_only)
    cache.reorder_cache(torch.as_tensor(list(image_index), dtype=torch.long, device=dev))  # rows -> prompts
    # 2. the rest of each prompt, right-aligned (padding between prefix and text)
    width = max(len(t) for t in tails)
    batch = len(samples)
    ids = torch.full((batch, width), enc.pad_id, dtype=torch.long, device=dev)
    mask = torch.zeros((batch, n_prefix + width), dtype=torch.long, device=dev)
    mask[:, :n_prefix] = 1
    for b, tail in enumerate(tails):
        ids[b, width - len(tail):] = torch.tensor(tail, device=dev)
        mask[b, n_prefix + width - len(tail):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n_prefix:]
    out = llm(inputs_embeds=embed(ids), attention_mask=mask, position_ids=positions, **{kv: cache},
              use_cache=True, **last_only)
    # 3. greedy decoding
    eos, pad = model.eos_token_id, model.pad_token_id
    unfinished = torch.ones(batch, dtype=torch.bool, device=dev)
    position = positions[:, -1:]
    steps = []
    for step in range(settings.max_new_tokens):
        token = out.logits[:, -1, :].float().argmax(-1)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        steps.append(token)
        unfinished &= token != eos
        if step == settings.max_new_tokens - 1 or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=dev)], dim=1)
        position = position + 1
        out = llm(inputs_embeds=embed(token[:, None]), attention_mask=mask, position_ids=position,
                  **{kv: cache}, use_cache=True, **last_only)
    result = []
    for row in torch.stack(steps, dim=1).tolist():
        if eos in row:
            row = row[: row.index(eos)]
        result.append(row)
    return result
