"""MiniGPT-v2, composed from parts passed in (torchtune style).

    pixels -> visual_encoder (EVA ViT) -> ln_vision -> drop CLS -> 1x4 token merge
           -> llama_proj (Linear) -> image embeddings [N, T, D]
    Batch ids -> LLM input embeddings, image positions replaced by image embeddings -> LLM

Attribute names follow the official code (``visual_encoder``, ``ln_vision``, ``llama_proj``,
``llama_model``) so state-dict keys line up with the released checkpoints.  The model sees
token ids and pixels only; :mod:`mgv2.prompt` owns the strings.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mgv2.answer_pass import answer_query, answer_windows, decoder_answer_pass
from mgv2.boxes import SCALE
from mgv2.config import ModelConfig
from mgv2.prompt import Batch


@dataclass
class GenerationSettings:
    """Decoding settings (SPEC §7 benchmarks: greedy, 20 new tokens)."""

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")
        if self.num_beams < 1:
            raise ValueError("num_beams must be >= 1")

    @classmethod
    def demo(cls) -> GenerationSettings:
        """The official demo's sampling defaults (SPEC §8)."""
        return cls(max_new_tokens=500, do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1.05)


class MiniGPTv2(nn.Module):
    """The model.  Parts are built elsewhere (:func:`build_model`) and passed in."""

    def __init__(
        self,
        visual_encoder: nn.Module,
        ln_vision: nn.LayerNorm,
        llama_proj: nn.Linear,
        llama_model: nn.Module,
        *,
        merge_tokens: int,
        merge_layout: str = "row",
        pad_token_id: int,
        eos_token_id: int,
        image_embed_norm: str = "none",
        image_embed_scale: float = 1.0,
        save_frozen_vision: bool = False,
        image_pos_embed: nn.Parameter | None = None,
        image_coord_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if image_embed_norm not in ("none", "center_ln"):
            raise ValueError(f"image_embed_norm must be 'none' or 'center_ln', got {image_embed_norm!r}")
        self.visual_encoder = visual_encoder
        self.ln_vision = ln_vision
        self.llama_proj = llama_proj
        self.llama_model = llama_model
        self.merge_tokens = merge_tokens
        self.merge_layout = merge_layout  # ModelConfig.merge_layout
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.trainable_parts: tuple[str, ...] = ()
        self.image_embed_norm = image_embed_norm  # ModelConfig.image_embed_norm
        self.image_embed_scale = image_embed_scale
        self.save_frozen_vision = save_frozen_vision  # checkpoints keep a frozen ViT too
        # training's teacher-forced pass: the last decoder layer only where an answer logit is read
        # (mgv2/answer_pass.py; :meth:`compile_decoder` swaps in its compiled form); None = the
        # whole decoder at every position (the reference the tests compare with)
        self.answer_pass: Callable | None = decoder_answer_pass
        # [tokens, hidden] added to every image's tokens (ModelConfig.image_pos_embed); part "projector"
        self.image_pos_embed = image_pos_embed
        # [tokens, 2] token ids of <x>, <y> of each image token's centre (image_pos_embed: coords):
        # their input embeddings are added to the image tokens; derived from the config, not saved
        self.register_buffer("image_coord_ids", image_coord_ids, persistent=False)

    @property
    def image_pos_kind(self) -> str:
        """``ModelConfig.image_pos_embed`` of this model: "sincos", "coords" or "none"."""
        if self.image_pos_embed is not None:
            return "sincos"
        return "coords" if self.image_coord_ids is not None else "none"

    # -- trainable set --------------------------------------------------------------------
    def part_parameters(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every parameter, grouped by part: vision, ln_vision, projector, llm, lora."""
        parts: dict[str, list] = {"vision": [], "ln_vision": [], "projector": [], "llm": [], "lora": []}
        for name, p in self.named_parameters():
            if name.startswith("visual_encoder."):
                parts["vision"].append((name, p))
            elif name.startswith("ln_vision."):
                parts["ln_vision"].append((name, p))
            elif name.startswith("llama_proj.") or name == "image_pos_embed":
                parts["projector"].append((name, p))
            elif ".lora_" in name:
                parts["lora"].append((name, p))
            else:
                parts["llm"].append((name, p))
        return parts

    def set_trainable(self, parts: list[str] | tuple[str, ...], vision_last_blocks: int = 0) -> None:
        """Freeze everything, then unfreeze exactly ``parts``.  With ``vision`` and
        ``vision_last_blocks`` > 0 only the last N ViT blocks train."""
        groups = self.part_parameters()
        unknown = set(parts) - set(groups)
        if unknown:
            raise ValueError(f"unknown trainable part(s) {sorted(unknown)}; choose from {sorted(groups)}")
        for plist in groups.values():
            for _, p in plist:
                p.requires_grad_(False)
        for part in parts:
            for name, p in groups[part]:
                if part == "vision" and vision_last_blocks > 0:
                    depth = len(self.visual_encoder.blocks)
                    first = depth - vision_last_blocks
                    if not any(name.startswith(f"visual_encoder.blocks.{i}.") for i in range(first, depth)):
                        continue
                p.requires_grad_(True)
        self.trainable_parts = tuple(parts)
        if "vision" not in parts:
            self.visual_encoder.eval()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True) -> MiniGPTv2:
        super().train(mode)
        if "vision" not in self.trainable_parts:
            self.visual_encoder.eval()  # frozen encoder stays in eval mode (SPEC §1)
        return self

    # -- images ---------------------------------------------------------------------------
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, S, S] -> image embeddings [N, T, D] in the LLM's input space.

        Compute this once per image and pass it to :meth:`forward` / :meth:`generate` as
        ``image_embeds`` to reuse it across prompts.
        """
        return self.embed_vision_features(self.vision_features(pixel_values))

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, S, S] -> the ViT's tokens [N, 1 + P, C] (CLS first), before ``ln_vision``.
        Without a gradient when no ViT parameter trains."""
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.visual_encoder.parameters())
        with torch.set_grad_enabled(grad):
            return self.visual_encoder(pixel_values)

    def embed_vision_features(self, feats: torch.Tensor) -> torch.Tensor:
        """The ViT's tokens (:meth:`vision_features`) -> image embeddings [N, T, D]: ``ln_vision``,
        CLS dropped, 1x4 (or 2x2) merge, projection (and the demo preset's norm / position table).  Training
        with a frozen ViT (``vision_cache``) computes the tokens once per picture and starts here."""
        feats = self.ln_vision(feats.to(self.ln_vision.weight.dtype))
        feats = feats[:, 1:, :]  # drop CLS
        merged = merge_patches(feats, self.merge_tokens, self.merge_layout)
        out = self.llama_proj(merged.to(self.llama_proj.weight.dtype))
        if self.image_embed_norm == "center_ln":
            out = out - out.mean(dim=1, keepdim=True)
            out = torch.nn.functional.layer_norm(out, out.shape[-1:]) * self.image_embed_scale
        if self.image_pos_embed is not None:
            out = out + self.image_pos_embed.to(out.dtype)
        if self.image_coord_ids is not None:
            coords = self.llama_model.get_input_embeddings()(self.image_coord_ids).sum(dim=1)
            out = out + coords.to(out.dtype)
        return out

    def input_embeddings(self, batch: Batch, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image positions filled from ``image_embeds[image_index]``."""
        embed = self.llama_model.get_input_embeddings()
        embeds = embed(batch.input_ids)
        if batch.image_mask.any():
            if image_embeds is None:
                if batch.pixel_values is None:
                    raise ValueError("the batch has image tokens but neither pixel_values nor image_embeds")
                image_embeds = self.embed_images(batch.pixel_values)
            rows = batch.image_index[batch.image_mask.any(dim=1)]
            if int(rows.max()) >= image_embeds.shape[0] or int(rows.min()) < 0:
                raise ValueError(f"image_index {rows.tolist()} out of range for {image_embeds.shape[0]} image(s)")
            chosen = image_embeds[rows].to(embeds.dtype)
            expected = int(batch.image_mask.sum())
            if chosen.shape[0] * chosen.shape[1] != expected:
                raise ValueError(
                    f"the batch reserves {expected} image positions but the images give "
                    f"{chosen.shape[0]} x {chosen.shape[1]}; tokenizer and model configs disagree"
                )
            embeds = embeds.masked_scatter(batch.image_mask.unsqueeze(-1), chosen.reshape(-1, chosen.shape[-1]))
        return embeds

    # -- training -------------------------------------------------------------------------
    def forward(self, batch: Batch, image_embeds: torch.Tensor | None = None):
        """Teacher-forced pass; returns the transformers output with ``loss`` on answer tokens."""
        return self.llama_model(**self._decoder_inputs(batch, image_embeds), labels=batch.labels)

    def _decoder_inputs(self, batch: Batch, image_embeds: torch.Tensor | None) -> dict:
        """The teacher-forced LLM inputs of ``batch`` (shared by :meth:`forward` and :meth:`answer_loss`)."""
        return {
            "inputs_embeds": self.input_embeddings(batch, image_embeds),
            "attention_mask": batch.attention_mask,
            "position_ids": (batch.attention_mask.cumsum(-1) - 1).clamp(min=0),
            "use_cache": False,
        }

    def answer_logits(self, batch: Batch, image_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [K, vocab], targets [K])`` of the K answer tokens of ``batch``: the LM head
        applied only where a label follows (a refer sample has 7 answer tokens in about 45), so
        the vocabulary projection costs a fraction of :meth:`forward`'s."""
        logits, targets, _ = self.answer_logits_and_image_states(batch, image_embeds, layer=None)
        return logits, targets

    def answer_logits_and_image_states(
        self, batch: Batch, image_embeds: torch.Tensor | None, layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`answer_logits` plus the hidden states of the image tokens after decoder layer
        ``layer`` (1 = after the first), ``[sequences with an image, image tokens, hidden]`` in
        batch order; ``None`` when ``layer`` is None.  One decoder pass gives both: the answer pass
        (:attr:`answer_pass`) where ``layer`` is below the last layer, else the whole decoder."""
        if batch.labels is None:
            raise ValueError("answer_logits needs a batch with labels")
        targets = batch.labels[:, 1:]
        query = answer_query(batch.labels)
        keep = query[:, :-1]  # the positions whose logit the loss reads, against ``targets``
        decoder = self.llama_model.get_decoder()
        inputs = self._decoder_inputs(batch, image_embeds)
        layer_states = None  # [batch, seq, hidden] after decoder layer ``layer``
        if self.answer_pass is not None and (layer is None or layer < decoder.config.num_hidden_layers):
            index, window_keep = answer_windows(query)
            hidden, layer_states = self.answer_pass(decoder, inputs["inputs_embeds"], inputs["attention_mask"],
                                                    inputs["position_ids"], index, layer)
            answers = hidden[window_keep]
        else:
            out = decoder(**inputs, output_hidden_states=layer is not None)
            answers = out.last_hidden_state[:, :-1][keep]
            if layer is not None:
                states = out.hidden_states  # embeddings, then one entry per layer (the last one normed)
                if not 1 <= layer < len(states):
                    raise ValueError(f"layer {layer} is outside the decoder's 1..{len(states) - 1}")
                layer_states = states[layer]
        image_states = None
        if layer_states is not None:
            image_states = layer_states[batch.image_mask].reshape(-1, self.num_image_tokens, layer_states.shape[-1])
        return self.llama_model.get_output_embeddings()(answers), targets[keep], image_states

    def compile_decoder(self) -> None:
        """torch.compile (TorchInductor, dynamic shapes) the LLM decoder in place (its state-dict keys
        do not change; generation uses it) and the training pass (:attr:`answer_pass`); the kernels
        are built at the first call."""
        self.llama_model.get_decoder().compile(dynamic=True)
        if self.answer_pass is not None:
            self.answer_pass = torch.compile(decoder_answer_pass, dynamic=True)

    @property
    def num_image_tokens(self) -> int:
        """LLM positions one picture takes (patches / ``merge_tokens``)."""
        return self.visual_encoder.cfg.num_patches // self.merge_tokens

    def answer_loss(self, batch: Batch, image_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum of the answer-token cross-entropies, number of answer tokens)``: the training loss
        of :meth:`forward` (transformers' loss), computed from :meth:`answer_logits`."""
        logits, targets = self.answer_logits(batch, image_embeds)
        loss_sum = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        return loss_sum, torch.tensor(targets.numel(), device=targets.device)

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        settings: GenerationSettings | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Batched generation over a LEFT-padded batch; returns the new token ids of each
        sequence, cut at the first EOS (EOS excluded)."""
        from transformers import GenerationConfig

        settings = settings or GenerationSettings()
        if bool((batch.attention_mask[:, -1] == 0).any()):
            raise ValueError("generation needs a left-padded batch (collate with padding_side='left')")
        embeds = self.input_embeddings(batch, image_embeds)
        gen = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature if settings.do_sample else None,
            top_p=settings.top_p if settings.do_sample else None,
            top_k=None,
            num_beams=settings.num_beams,
            repetition_penalty=settings.repetition_penalty,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )
        out = self.llama_model.generate(
            inputs_embeds=embeds, attention_mask=batch.attention_mask, generation_config=gen
        )
        result = []
        for row in out.tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            result.append(row)
        return result


def merge_patches(tokens: torch.Tensor, merge: int, layout: str = "row") -> torch.Tensor:
    """Patch tokens [N, grid*grid, C] (raster order) -> LLM tokens [N, grid*grid / merge, merge*C],
    each the concatenation of ``merge`` patches (``ModelConfig.merge_layout``): "row" (SPEC §1)
    joins consecutive patches of one row; "square" joins a k x k block (k = sqrt(merge)), its
    patches in raster order, the blocks in raster order."""
    n, pn, c = tokens.shape
    if layout == "row":
        return tokens.reshape(n, pn // merge, c * merge)
    if layout != "square":
        raise ValueError(f"merge layout must be 'row' or 'square', got {layout!r}")
    g, k = math.isqrt(pn), math.isqrt(merge)
    if g * g != pn or k * k != merge or g % k:
        raise ValueError(f"square merge of {merge} needs a square grid divisible by {k}, got {pn} tokens")
    blocks = tokens.reshape(n, g // k, k, g // k, k, c).permute(0, 1, 3, 2, 4, 5)
    return blocks.reshape(n, pn // merge, c * merge)


def token_centres(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column centres (in patch units) of the LLM image-token grid of ``cfg``."""
    grid = cfg.vision.grid

    def centres(k: int) -> torch.Tensor:
        return torch.arange(grid // k, dtype=torch.float64) * k + (k - 1) / 2

    k_row, k_col = cfg.token_cell
    return centres(k_row), centres(k_col)


def image_token_boxes(cfg: ModelConfig) -> torch.Tensor:
    """``[tokens, 4]``: the part of the picture each LLM image token covers, ``(x1, y1, x2, y2)``
    as fractions of the (resized) picture, in the order the tokens enter the LLM."""
    grid = cfg.vision.grid
    k_row, k_col = cfg.token_cell
    rows, cols = grid // k_row, grid // k_col
    r = torch.arange(rows, dtype=torch.float32).repeat_interleave(cols)
    c = torch.arange(cols, dtype=torch.float32).repeat(rows)
    return torch.stack([c * k_col, r * k_row, (c + 1) * k_col, (r + 1) * k_row], dim=1) / grid


def image_coord_ids(cfg: ModelConfig, coord_token_ids: Sequence[int]) -> torch.Tensor:
    """``[tokens, 2]`` (image_pos_embed: coords): the ids of ``<x>`` and ``<y>``, the coordinate
    tokens (0..100 of the picture's width / height, as box text writes them) nearest each LLM image
    token's centre, in the order the tokens enter the LLM (``coord_token_ids[v]`` = id of ``<v>``)."""
    ids = [int(i) for i in coord_token_ids]
    if len(ids) != SCALE + 1 or len(set(ids)) != SCALE + 1:
        raise ValueError(
            f"image_pos_embed: coords needs {SCALE + 1} distinct single tokens <0>..<{SCALE}>, got {len(set(ids))} "
            "distinct ids (a tokenizer that splits them, such as Llama-2's, cannot use it; set image_pos_embed: none)"
        )
    grid = cfg.vision.grid
    rows, cols = token_centres(cfg)
    value = lambda centre: ((centre + 0.5) / grid * SCALE).round().long()
    y = value(rows).repeat_interleave(len(cols))
    x = value(cols).repeat(len(rows))
    table = torch.as_tensor(ids, dtype=torch.long)
    return torch.stack([table[x], table[y]], dim=1)


def _image_coord_ids(cfg: ModelConfig, coord_token_ids: Sequence[int] | None, device) -> torch.Tensor | None:
    """:func:`image_coord_ids` where ``image_pos_embed`` is "coords", else None; on the meta device
    (shapes only) any ids do."""
    if cfg.image_pos_embed != "coords":
        return None
    if coord_token_ids is None:
        if str(device) != "meta":
            raise ValueError("image_pos_embed: coords needs the tokenizer's coordinate token ids (coord_token_ids)")
        coord_token_ids = range(SCALE + 1)
    return image_coord_ids(cfg, coord_token_ids).to(device)


def _image_pos_embed(cfg: ModelConfig, device) -> nn.Parameter | None:
    """``ModelConfig.image_pos_embed``: None (also for "coords", which has no table of its own),
    or the trainable table started as the 2D sin-cos table of the LLM image-token grid (``grid``
    rows x ``grid / merge_tokens`` columns)."""
    if cfg.image_pos_embed in ("none", "coords"):
        return None
    from mgv2.vision import sincos_2d

    rows, cols = token_centres(cfg)
    table = sincos_2d(cfg.vision.grid, cfg.llm.hidden_size, cols=cols, rows=rows)
    return nn.Parameter(table.to(device))


def build_model(cfg: ModelConfig, *, pad_token_id: int, device: str | torch.device = "cpu",
                verbose: bool = True, coord_token_ids: Sequence[int] | None = None) -> MiniGPTv2:
    """Build every part from ``cfg`` and compose them.  ``device="meta"`` builds the shapes
    only (no memory, no files read): that is what ``mgv2 info`` uses.  ``coord_token_ids``
    (``ids[v]`` = token id of ``<v>``) is needed by ``image_pos_embed: coords`` only."""
    from mgv2.llm import DTYPES, add_lora, build_llm
    from mgv2.vision import EVAViT, apply_official_precision, load_eva_checkpoint

    meta = str(device) == "meta"
    with torch.device(device):
        vit = EVAViT(cfg.vision)
    if cfg.vision.checkpoint and not meta:
        report = load_eva_checkpoint(vit, cfg.path(cfg.vision.checkpoint))
        if verbose:  # a diagnostic: stderr, so that --json output on stdout stays JSON
            print(f"[mgv2] vision encoder: {report.summary()}", file=sys.stderr)
    if cfg.vision_precision != "fp32" and not meta:
        apply_official_precision(vit, DTYPES[cfg.vision_precision])
    vit = vit.to(device)
    llm_path = None if meta else cfg.path(cfg.llm.path)
    llm = build_llm(cfg.llm, llm_path, DTYPES[cfg.llm_precision], device=device)
    if cfg.llm.gradient_checkpointing and not meta:
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5 name
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llm.enable_input_require_grads()
    if cfg.lora.enabled:
        llm = add_lora(llm, cfg.lora)
    with torch.device(device):
        ln_vision = nn.LayerNorm(cfg.vision.width, eps=cfg.vision.ln_vision_eps)
        proj = nn.Linear(cfg.vision.width * cfg.merge_tokens, cfg.llm.hidden_size)
    # The projector is trainable: it keeps fp32 master weights; its output is cast to the
    # LLM's dtype when it enters the LLM (input_embeddings).
    model = MiniGPTv2(
        vit,
        ln_vision,
        proj,
        llm,
        merge_tokens=cfg.merge_tokens,
        merge_layout=cfg.merge_layout,
        pad_token_id=pad_token_id,
        eos_token_id=cfg.llm.eos_token_id,
        image_embed_norm=cfg.image_embed_norm,
        image_embed_scale=cfg.image_embed_scale,
        save_frozen_vision=cfg.save_frozen_vision,
        image_pos_embed=_image_pos_embed(cfg, device),
        image_coord_ids=_image_coord_ids(cfg, coord_token_ids, device),
    )
    model.set_trainable(cfg.trainable, cfg.vision_trainable_blocks)
    return model
