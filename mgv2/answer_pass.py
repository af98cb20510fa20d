"""The teacher-forced decoder pass of training, with the last decoder layer computed only where an
answer logit is read.

The loss reads the LM head at the answer positions only (a refer sample has 7 answer tokens in
about 45).  Every layer but the last must still run at every position (its keys and values feed the
layers above), but the last layer's keys and values are all it contributes at the other positions:
its queries, attention output, MLP and the final norm are needed only where a label follows.  For
each sequence that is the window from its first to its last answer position; the pass runs the last
layer on those windows (``[batch, window, hidden]``) against the keys and values of the whole
sequence.  Same hidden states as the full pass up to float rounding (tests/test_answer_pass.py).

Works on any transformers Llama decoder (``LlamaModel``), LoRA-wrapped projections included: it
calls the layer's own modules, and transformers' mask, rotary and key/value-repeat functions.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from mgv2.prompt import IGNORE_INDEX


def answer_query(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` [B, T] -> [B, T] bool: the positions whose logit the loss reads (the logit at t
    predicts label t + 1, so the last position is never read)."""
    return nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1))


def answer_windows(query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``query`` [B, T] (True where an answer logit is read) -> ``(index [B, W], keep [B, W])``: per
    sequence the positions from its first to its last query position (W the longest such span;
    positions past a sequence's own span repeat its last one), and which of them are queries.
    ``keep`` selects the queries in the row-major order of ``tensor[query]``."""
    if query.dim() != 2 or query.dtype != torch.bool:
        raise ValueError(f"query must be a [batch, seq] bool mask, got {tuple(query.shape)} {query.dtype}")
    t = query.shape[1]
    pos = torch.arange(t, device=query.device)
    first = torch.where(query, pos, t).amin(dim=1)
    last = torch.where(query, pos, -1).amax(dim=1)
    length = (last - first + 1).clamp(min=0)
    width = max(int(length.max()), 1) if t else 0
    offsets = torch.arange(width, device=query.device)
    index = (first.clamp(max=max(t - 1, 0)).unsqueeze(1) + offsets).clamp(max=max(t - 1, 0))
    keep = query.gather(1, index) & (offsets < length.unsqueeze(1))
    return index, keep


def decoder_answer_pass(
    decoder: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    index: torch.Tensor,
    capture: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``decoder`` (a transformers ``LlamaModel``) on ``inputs_embeds`` [B, T, D] and return the
    final-normed hidden states at ``index`` [B, W] (:func:`answer_windows`), ``[B, W, D]``, and the
    hidden states of every position after layer ``capture`` (1 = the first; must be below the last
    layer), or None.  The last layer runs only on the ``index`` positions."""
    layers = decoder.layers[: decoder.config.num_hidden_layers]
    if capture is not None and not 1 <= capture < len(layers):
        raise ValueError(f"capture layer {capture} must be in 1..{len(layers) - 1} (the last layer runs on "
                         "the answer positions only)")
    mask = create_causal_mask(config=decoder.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              cache=None, position_ids=position_ids)
    cos, sin = decoder.rotary_emb(inputs_embeds, position_ids=position_ids)
    hidden, captured = inputs_embeds, None
    for i, layer in enumerate(layers[:-1], start=1):
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=position_ids)
        if i == capture:
            captured = hidden

    last = layers[-1]
    attn = last.self_attn
    b, t, d = hidden.shape
    w = index.shape[1]
    normed = last.input_layernorm(hidden)
    keys = attn.k_proj(normed).view(b, t, -1, attn.head_dim).transpose(1, 2)
    values = attn.v_proj(normed).view(b, t, -1, attn.head_dim).transpose(1, 2)
    rows = index.unsqueeze(-1)
    residual = hidden.gather(1, rows.expand(-1, -1, d))
    queries = attn.q_proj(normed.gather(1, rows.expand(-1, -1, d))).view(b, w, -1, attn.head_dim).transpose(1, 2)
    cos, sin = cos.expand(b, -1, -1), sin.expand(b, -1, -1)
    rope = rows.expand(-1, -1, cos.shape[-1])
    queries, _ = apply_rotary_pos_emb(queries, queries, cos.gather(1, rope), sin.gather(1, rope))
    keys, _ = apply_rotary_pos_emb(keys, keys, cos, sin)
    key_pos = torch.arange(t, device=index.device)
    seen = key_pos <= rows  # [B, W, T] causal
    if attention_mask is not None:
        # a window position that is padding still sees itself (its output is never read): no empty row
        seen = seen & (attention_mask.bool().unsqueeze(1) | (key_pos == rows))
    out = nn.functional.scaled_dot_product_attention(
        queries, repeat_kv(keys, attn.num_key_value_groups), repeat_kv(values, attn.num_key_value_groups),
        attn_mask=seen.unsqueeze(1), dropout_p=attn.attention_dropout if attn.training else 0.0, scale=attn.scaling,
    )
    hidden_w = residual + attn.o_proj(out.transpose(1, 2).reshape(b, w, -1))
    hidden_w = hidden_w + last.mlp(last.post_attention_layernorm(hidden_w))
    return decoder.norm(hidden_w), captured
