"""A loaded model with everything around it: tokenizer, prompt encoder, image processor.

``Pipeline.from_config`` is the one way the CLI, evaluators and the app get a model:

    pipe = Pipeline.from_config(load_yaml(ModelConfig, "configs/model/tiny.yaml"))
    pipe.predict([image], ["[refer] red balloon"])   # -> ['{<12><30><41><77>}']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mgv2.config import ModelConfig
from mgv2.errors import CheckpointError
from mgv2.image import ImageProcessor, load_image
from mgv2.model import GenerationSettings, MiniGPTv2, build_model
from mgv2.prompt import Batch, PromptEncoder
from mgv2.sample import Sample, Turn


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Pipeline:
    cfg: ModelConfig
    model: MiniGPTv2
    tokenizer: object
    encoder: PromptEncoder
    processor: ImageProcessor
    device: torch.device

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        checkpoint: str | Path | None = None,
        device: str | None = None,
        verbose: bool = True,
    ) -> Pipeline:
        """Tokenizer + model from ``cfg``; then the MiniGPT-v2 checkpoint (``checkpoint``
        argument, else ``cfg.checkpoint``), released ``.pth`` or mgv2 folder."""
        from mgv2.checkpoint import load_any_checkpoint
        from mgv2.tokenizer import load_tokenizer

        dev = pick_device(device)
        tok_path = cfg.path(cfg.llm.tokenizer or cfg.llm.path)
        if tok_path is None:
            raise CheckpointError("the model config names no tokenizer: set llm.tokenizer or llm.path")
        tokenizer = load_tokenizer(tok_path, pad_token=cfg.llm.pad_token)
        if len(tokenizer) > cfg.llm.vocab_size:
            raise CheckpointError(
                f"tokenizer at {tok_path} has {len(tokenizer)} tokens but llm.vocab_size is {cfg.llm.vocab_size}"
            )
        from mgv2.tokenizer import coordinate_token_ids

        coord_ids = coordinate_token_ids(tokenizer)
        model = build_model(cfg, pad_token_id=int(tokenizer.pad_token_id), device=dev, verbose=verbose,
                            coord_token_ids=coord_ids if cfg.image_pos_embed == "coords" else None)
        if cfg.llm.coord_init == "sincos" and cfg.llm.path is None:
            from mgv2.llm import init_coordinate_tokens

            init_coordinate_tokens(model.llama_model, coord_ids)
        ckpt = Path(checkpoint) if checkpoint is not None else cfg.path(cfg.checkpoint)
        if ckpt is not None:
            report = load_any_checkpoint(model, ckpt)
            if verbose:
                print(f"[mgv2] {report.summary()}")
        model.eval()
        encoder = PromptEncoder(tokenizer, cfg.num_image_tokens, cfg.max_txt_len, layout=cfg.prompt_layout)
        return cls(cfg, model, tokenizer, encoder, ImageProcessor(size=cfg.vision.img_size), dev)

    # -- building batches -----------------------------------------------------------------
    def pixels(self, images: Sequence) -> torch.Tensor:
        return self.processor.batch([load_image(im) for im in images]).to(self.device)

    def prompt_batch(self, samples: Sequence[Sample], image_index: Sequence[int]) -> Batch:
        encoded = [self.encoder.encode_prompt(s) for s in samples]
        return self.encoder.collate(encoded, padding_side="left", image_index=image_index).to(self.device)

    @torch.no_grad()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        """Image embeddings, to compute once and reuse across prompts."""
        return self.model.embed_images(self.pixels(images).to(self._vision_dtype()))

    def _vision_dtype(self) -> torch.dtype:
        return self.model.visual_encoder.patch_embed.proj.weight.dtype

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        samples: Sequence[Sample],
        image_embeds: torch.Tensor | None,
        image_index: Sequence[int],
        settings: GenerationSettings | None = None,
        share_prefix: bool = True,
    ) -> list[str]:
        """Answers for prompts about already-embedded images.  Plain greedy decoding runs the
        prompt prefix shared by all prompts once per image (:mod:`mgv2.generation`); other
        settings go through the model's ``generate`` (transformers)."""
        from mgv2.generation import shared_prefix_greedy

        settings = settings or GenerationSettings()
        ids = None
        if share_prefix and image_embeds is not None:
            ids = shared_prefix_greedy(self.model, self.encoder, samples, image_embeds, image_index, settings)
        if ids is None:
            batch = self.prompt_batch(samples, image_index)
            ids = self.model.generate(batch, settings, image_embeds=image_embeds)
        return [self.encoder.decode(row) for row in ids]

    @torch.no_grad()
    def predict(
        self,
        images: Sequence,
        instructions: Sequence[str],
        settings: GenerationSettings | None = None,
        history: Sequence[Sequence[Turn]] | None = None,
    ) -> list[str]:
        """One answer per (image, instruction); identical images are encoded once."""
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        unique: list = []
        seen: dict = {}
        index: list[int] = []
        for im in images:
            key = str(im) if isinstance(im, (str, Path)) else id(im)
            if key not in seen:
                seen[key] = len(unique)
                unique.append(im)
            index.append(seen[key])
        embeds = self.embed_images(unique)
        samples = []
        for i, text in enumerate(instructions):
            turns = list(history[i]) if history else []
            samples.append(Sample(image=images[i], turns=turns + [Turn(text)]))
        return self.generate(samples, embeds, index, settings)
