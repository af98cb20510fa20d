"""Prompt template and tokenisation: Sample (strings) -> token ids -> Batch (tensors).

This is the only place where instruction text meets the tokenizer; the model receives a
:class:`Batch` of ids, masks and pixels and never a string (SPEC §3).

Training sequence (official ``preparing_embedding`` + ``prompt_wrap``, single BOS)::

    <s> tok("[INST] <Img>") [IMG x N] tok("</Img> {instruction}  [/INST]") tok(answer) </s>
        tok("<s>[INST] {q2} [/INST]") tok(answer2) </s> ...          (further turns)

Inference sequence (official ``get_context_emb``: the first segment is tokenised with
special tokens on, so a literal ``<s>`` plus the tokenizer's BOS give two BOS tokens)::

    tok+bos("<s>[INST] <Img>") [IMG x N] tok("</Img> {instruction} [/INST]")

Each text segment is tokenised on its own, exactly where the official code splits it.

``layout="instruction_first"`` (a from-scratch model's choice, ``ModelConfig.prompt_layout``) puts
the image after the instruction of the first turn: ``[INST] {instruction} <Img>..</Img> [/INST]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from mgv2 import boxes
from mgv2.errors import MGV2Error
from mgv2.sample import Sample, Turn

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_WRAP = "<Img>" + IMAGE_PLACEHOLDER + "</Img>"
TEMPLATE = "[INST] {} [/INST]"
IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenised sequence.  ``image_start`` is where its image tokens begin (or None);
    ``regions`` are the boxes (0..100 grid, as written) that the first turn's instruction and
    answer name, the part of the picture that turn is about (the trainer's region loss)."""

    input_ids: list[int]
    labels: list[int]
    image_start: int | None
    regions: tuple[tuple[int, int, int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Batch:
    """What the model consumes.  ``image_mask`` marks the positions that receive image
    embeddings; ``image_index[b]`` says which row of ``pixel_values`` (or of precomputed image
    embeddings) sequence ``b`` shows (-1 = no image)."""

    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long
    image_mask: torch.Tensor  # [B, L] bool
    image_index: torch.Tensor  # [B] long
    labels: torch.Tensor | None = None  # [B, L] long, IGNORE_INDEX where no loss
    pixel_values: torch.Tensor | None = None  # [N, 3, S, S]
    # [B, R, 4] float: each sequence's Encoded.regions as fractions of the picture (x1, y1, x2, y2),
    # zero rows where it has fewer than R; None when no sequence names one
    regions: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return Batch(**moved)

    @property
    def num_answer_tokens(self) -> int:
        return 0 if self.labels is None else int((self.labels != IGNORE_INDEX).sum())


class PromptError(MGV2Error, ValueError):
    """A sample cannot be turned into a prompt (empty instruction, too long ...)."""


class PromptEncoder:
    """Turns samples into token ids with a Hugging Face tokenizer.

    ``num_image_tokens`` is the number of LLM positions one image occupies (256 for the 7B
    preset); ``max_answer_tokens`` truncates each answer like the official ``max_txt_len``.
    """

    LAYOUTS = ("official", "instruction_first")

    def __init__(
        self, tokenizer, num_image_tokens: int, max_answer_tokens: int = 1024, layout: str = "official"
    ) -> None:
        if layout not in self.LAYOUTS:
            raise PromptError(f"prompt layout must be one of {self.LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.max_answer_tokens = max_answer_tokens
        if tokenizer.pad_token_id is None:
            raise PromptError("the tokenizer has no pad token; load it with mgv2.tokenizer.load_tokenizer")
        self.pad_id = int(tokenizer.pad_token_id)
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        # Llama-2 spells these "<s>" / "</s>"; another LLM (SmolLM2) has its own strings.
        self.bos_text = str(tokenizer.bos_token)
        self.eos_text = str(tokenizer.eos_token)

    # -- text pieces ---------------------------------------------------------------------
    def _tok(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=special).input_ids)

    @staticmethod
    def _check(turns: Sequence[Turn]) -> None:
        for t in turns:
            if not t.instruction or not t.instruction.strip():
                raise PromptError("empty instruction: type a question or a task such as '[refer] red balloon'")
            if IMAGE_PLACEHOLDER in t.instruction:
                raise PromptError(f"instructions must not contain {IMAGE_PLACEHOLDER}; the image is added for you")

    def _first_turn_text(self, instruction: str, has_image: bool, training: bool) -> str:
        if training:
            instruction += " "  # the official datasets end every instruction with a space
        if not has_image:
            body = instruction
        elif self.layout == "official":
            body = f"{IMAGE_WRAP} {instruction}"
        else:
            body = f"{instruction.strip()} {IMAGE_WRAP}"  # same text in training and inference
        return TEMPLATE.format(body)

    def _with_image(self, first_text: str, has_image: bool, special: bool) -> tuple[list[int], int | None]:
        """Tokenise the first turn, splitting at the image placeholder."""
        if not has_image:
            return self._tok(first_text, special), None
        before, after = first_text.split(IMAGE_PLACEHOLDER)
        ids = self._tok(before, special)
        start = len(ids)
        ids += [self.pad_id] * self.num_image_tokens + self._tok(after)
        return ids, start

    # -- public --------------------------------------------------------------------------
    def encode_train(self, sample: Sample) -> Encoded:
        """Ids and labels for teacher forcing; loss only on answer tokens (and their EOS)."""
        self._check(sample.turns)
        if any(t.answer is None for t in sample.turns):
            raise PromptError("a training sample needs an answer for every turn")
        has_image = sample.image is not None
        first = self._first_turn_text(sample.turns[0].instruction, has_image, training=True)
        prompt_ids, image_start = self._with_image(first, has_image, special=False)
        ids = [self.bos_id] + prompt_ids
        labels = [IGNORE_INDEX] * len(ids)
        image_start = None if image_start is None else image_start + 1
        for i, turn in enumerate(sample.turns):
            if i > 0:
                q = self._tok(self.bos_text + TEMPLATE.format(turn.instruction))
                ids += q
                labels += [IGNORE_INDEX] * len(q)
            a = self._tok(turn.answer)[: self.max_answer_tokens] + [self.eos_id]
            ids += a
            labels += a
        return Encoded(ids, labels, image_start, first_turn_regions(sample.turns[0]) if has_image else ())

    def encode_prompt(self, sample: Sample) -> Encoded:
        """Ids of the inference prompt; earlier turns must carry their answers (history)."""
        self._check(sample.turns)
        if sample.turns[-1].answer is not None:
            raise PromptError("the last turn of an inference prompt must have no answer yet")
        has_image = sample.image is not None
        text = self.bos_text + self._first_turn_text(sample.turns[0].instruction, has_image, training=False)
        rest = ""
        for i, turn in enumerate(sample.turns):
            if i > 0:
                rest += self.bos_text + TEMPLATE.format(turn.instruction)
            if turn.answer is not None:
                rest += f" {turn.answer}{self.eos_text}"
        ids, image_start = self._with_image(text, has_image, special=True)
        ids += self._tok(rest)
        return Encoded(ids, [IGNORE_INDEX] * len(ids), image_start)

    def collate(
        self,
        encoded: Sequence[Encoded],
        *,
        padding_side: str,
        image_index: Sequence[int] | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> Batch:
        """Pad to one length: right padding for training, left for batched generation."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        if not encoded:
            raise PromptError("cannot collate an empty list of samples")
        n = self.num_image_tokens
        length = max(len(e) for e in encoded)
        B = len(encoded)
        input_ids = torch.full((B, length), self.pad_id, dtype=torch.long)
        labels = torch.full((B, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((B, length), dtype=torch.long)
        image_mask = torch.zeros((B, length), dtype=torch.bool)
        if image_index is None:
            image_index, k = [], 0
            for e in encoded:
                image_index.append(k if e.image_start is not None else -1)
                k += e.image_start is not None
        index = torch.as_tensor(list(image_index), dtype=torch.long)
        for b, e in enumerate(encoded):
            off = length - len(e) if padding_side == "left" else 0
            input_ids[b, off : off + len(e)] = torch.as_tensor(e.input_ids)
            labels[b, off : off + len(e)] = torch.as_tensor(e.labels)
            attention[b, off : off + len(e)] = 1
            if e.image_start is not None:
                if index[b] < 0:
                    raise PromptError(f"sequence {b} has image tokens but image_index is -1")
                image_mask[b, off + e.image_start : off + e.image_start + n] = True
        has_labels = bool((labels != IGNORE_INDEX).any())
        regions = None
        most = max(len(e.regions) for e in encoded)
        if most:
            regions = torch.zeros((B, most, 4), dtype=torch.float32)
            for b, e in enumerate(encoded):
                if e.regions:
                    regions[b, : len(e.regions)] = torch.as_tensor(e.regions, dtype=torch.float32) / boxes.SCALE
        return Batch(input_ids, attention, image_mask, index, labels if has_labels else None, pixel_values, regions)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Official post-processing of generated ids (SPEC §3)."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return postprocess(text, self.bos_text, self.eos_text)


def first_turn_regions(turn: Turn) -> tuple[tuple[int, int, int, int], ...]:
    """The valid boxes written in ``turn``'s instruction and answer (a refer answer, an identify
    question, a detection answer's boxes), in the order written."""
    found = boxes.parse(turn.instruction).boxes + (boxes.parse(turn.answer).boxes if turn.answer else [])
    return tuple(b.coords for b in found if b.valid)


def postprocess(text: str, bos: str = "<s>", eos: str = "</s>") -> str:
    """Cut at ``</s>``, drop ``<s>``, keep what follows the last ``[/INST]``, strip."""
    text = text.split(eos)[0].replace(bos, "")
    return text.split("[/INST]")[-1].strip()
