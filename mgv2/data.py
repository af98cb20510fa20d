"""Training data: record -> task -> Sample -> Encoded (+ pixels) -> Batch.

Everything that touches strings or image files runs here, inside DataLoader workers; the
model only ever receives a :class:`mgv2.prompt.Batch` of ids, masks and pixels.

* :class:`TaskDataset`: one source's records and the task that turns each into a sample;
  ``build(index, seed)`` draws the task's random choices from ``seed``, tokenises the sample and
  loads and preprocesses its image (or, given the :class:`mgv2.vision_cache.PictureRows` of a stage's
  frozen-ViT cache, the picture's row in it);
* :class:`MixtureDataset`: the datasets of a stage, indexed by ``(iteration, SampleKey)``;
* :class:`MixtureBatchSampler`: runs a :class:`mgv2.mixture.Mixture` and yields this process's
  slice of each iteration's global batch, remembering the mixture state after every iteration
  still in flight, so a checkpoint stores the position of what was actually consumed;
* :class:`TrainCollator`: right-padded :class:`Batch` plus counts, wrapped in a :class:`TrainBatch`;
  with ``chunks`` > 1 the iteration's samples sorted by length and collated as that many batches.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mgv2.config import DatasetEntry, TrainConfig
from mgv2.errors import MGV2Error
from mgv2.image import ImageProcessor, load_image
from mgv2.mixture import Mixture, MixtureError, SampleKey, rank_slice
from mgv2.prompt import IGNORE_INDEX, Batch, Encoded, PromptEncoder
from mgv2.vision_cache import PictureRows


class DataBuildError(MGV2Error):
    """A record could not be turned into a training sample; names dataset and record."""


@dataclass
class TrainItem:
    """One built sample: token ids and labels, and the preprocessed image (or None)."""

    encoded: Encoded
    pixels: torch.Tensor | None
    dataset: int
    iteration: int = -1
    image_row: int | None = None  # with a vision cache: the picture's row instead of pixels


@dataclass
class TrainBatch:
    """A collated batch and what the loop needs to know about it."""

    batch: Batch
    iteration: int
    dataset: int
    num_samples: int
    num_tokens: int  # non-padding tokens
    num_answer_tokens: int  # tokens with a loss
    image_rows: torch.Tensor | None = None  # [N] long: vision-cache rows of the batch's pictures


class TaskDataset(Dataset):
    """``records`` of one source + the task that builds a training sample from each.

    With ``turns_per_image`` K > 1 the dataset is indexed by picture: item ``i`` shuffles the
    records of the ``i``-th picture (with the item's seed) and :meth:`Task.build_group` takes up
    to K of them that ask different things as the successive turns of one sample: one image
    encoding carries up to K answers."""

    def __init__(
        self,
        name: str,
        records: Sequence[Any],
        task,
        encoder: PromptEncoder,
        processor: ImageProcessor,
        index: int = 0,
        turns_per_image: int = 1,
        picture_rows: PictureRows | None = None,
    ) -> None:
        self.name = name
        self.picture_rows = picture_rows
        self.records = records
        self.task = task
        self.encoder = encoder
        self.processor = processor
        self.index = index
        self.turns_per_image = turns_per_image
        self.groups: list[list[int]] | None = None
        if turns_per_image > 1:
            by_image: dict[str, list[int]] = {}
            for i, record in enumerate(records):
                image = getattr(record, "image", None)
                if image is None:
                    raise DataBuildError(
                        f"dataset {name!r}, record {i}: turns_per_image={turns_per_image} groups records by "
                        "picture, but this record has none; set turns_per_image: 1 for text-only data"
                    )
                by_image.setdefault(str(image), []).append(i)
            self.groups = list(by_image.values())  # pictures in order of first appearance

    def __len__(self) -> int:
        return len(self.records) if self.groups is None else len(self.groups)

    def build(self, i: int, seed: str) -> TrainItem:
        rng = random.Random(seed)
        # grouped: the picture's records in a random order; the task takes turns from them
        members = None if self.groups is None else rng.sample(self.groups[i], len(self.groups[i]))
        try:
            if members is None:
                sample = self.task.build(self.records[i], rng)
            else:
                sample = self.task.build_group([self.records[j] for j in members], rng, self.turns_per_image)
            encoded = self.encoder.encode_train(sample)
            pixels, row = None, None
            if sample.image is not None:
                if self.picture_rows is not None:
                    row = self.picture_rows.row(sample.image)
                else:
                    pixels = self.processor(load_image(sample.image))
        except MGV2Error as err:
            where = f"record {i}" if members is None else f"picture {i} (records {sorted(members)})"
            raise DataBuildError(f"dataset {self.name!r}, {where}: {err}") from err
        return TrainItem(encoded, pixels, self.index, image_row=row)

    def __getitem__(self, i: int) -> TrainItem:
        return self.build(i, f"{self.name}:{i}")


class MixtureDataset(Dataset):
    """The datasets of a stage; items are addressed by ``(iteration, SampleKey)``."""

    def __init__(self, datasets: Sequence[TaskDataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item: tuple[int, SampleKey]) -> TrainItem:
        iteration, key = item
        built = self.datasets[key.dataset].build(key.index, key.seed)
        built.iteration = iteration
        return built


class MixtureBatchSampler:
    """Yields this process's slice of each iteration of ``mixture`` (forever).

    DataLoader iterates the batch sampler in the main process, ahead of what the loop has
    consumed (prefetching); :meth:`state_after` gives the mixture state right after a given
    iteration, for checkpoints."""

    def __init__(self, mixture: Mixture, rank: int = 0, world: int = 1) -> None:
        small = [(n, b) for n, b in zip(mixture.names, mixture.batch_sizes) if b < world]
        if small:
            raise MixtureError(
                f"datasets {small} have a global batch smaller than the {world} processes; raise their "
                "batch_size or batch_scale so every process gets at least one sample"
            )
        self.mixture = mixture
        self.rank = rank
        self.world = world
        self._states: dict[int, dict] = {}

    def __iter__(self):
        while True:
            draw = self.mixture.next()
            self._states[draw.iteration] = self.mixture.state_dict()
            part = draw.keys[rank_slice(len(draw.keys), self.rank, self.world)]
            yield [(draw.iteration, k) for k in part]

    def state_after(self, iteration: int) -> dict:
        """The mixture state after ``iteration``; forgets older states."""
        for old in [i for i in self._states if i < iteration]:
            del self._states[old]
        if iteration not in self._states:
            raise KeyError(f"no mixture state for iteration {iteration}")
        return self._states[iteration]


class TrainCollator:
    """TrainItems of one iteration -> a list of right-padded TrainBatches (images in sample order).

    ``chunks`` = 1: one batch of every item.  ``chunks`` = K > 1: the items sorted by sequence
    length (stable) and split into up to K batches of nearly equal size (shortest first; the shorter
    ones take the remainder), each padded only to its own longest sequence (the trainer's
    ``length_chunks``): the padding a batch of mixed lengths carries is mostly not computed, and
    since the trainer sums the losses of every batch of a step and divides by the step's answer
    tokens, the gradient is the same."""

    def __init__(self, encoder: PromptEncoder, chunks: int = 1) -> None:
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        self.encoder = encoder
        self.chunks = chunks

    def __call__(self, items: Sequence[TrainItem]) -> list[TrainBatch]:
        if any(it.pixels is not None for it in items) and any(it.image_row is not None for it in items):
            raise DataBuildError("a batch mixes pixels and vision-cache rows; give every dataset of the stage the cache")
        ordered = items if self.chunks == 1 else sorted(items, key=lambda it: len(it.encoded))
        k = min(self.chunks, len(ordered))
        size, extra = divmod(len(ordered), k)  # the first `extra` (shortest) chunks take one more
        bounds = [i * size + min(i, extra) for i in range(k + 1)]
        return [self._collate(ordered[a:b]) for a, b in itertools.pairwise(bounds)]

    def _collate(self, items: Sequence[TrainItem]) -> TrainBatch:
        pixels = [it.pixels for it in items if it.pixels is not None]
        rows = [it.image_row for it in items if it.image_row is not None]
        batch = self.encoder.collate(
            [it.encoded for it in items],
            padding_side="right",
            pixel_values=torch.stack(pixels) if pixels else None,
        )
        labels = batch.labels
        return TrainBatch(
            batch=batch,
            iteration=items[0].iteration,
            dataset=items[0].dataset,
            num_samples=len(items),
            num_tokens=int(batch.attention_mask.sum()),
            num_answer_tokens=0 if labels is None else int((labels[:, 1:] != IGNORE_INDEX).sum()),
            image_rows=torch.as_tensor(rows, dtype=torch.long) if rows else None,
        )


def _worker_init(_: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)


def make_loader(
    dataset: MixtureDataset,
    sampler: MixtureBatchSampler,
    collator: TrainCollator,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader whose workers build and collate the samples.  It owns a seeded generator so it
    never draws from the global torch RNG (which the model's dropout uses)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=2 if num_workers else None,
        generator=torch.Generator().manual_seed(0),
    )


# ---------------------------------------------------------------------------------------------
# records from the configured sources


def reader_for(source: str) -> Callable[..., list]:
    """``tasks.readers.SOURCES[source]`` with a clear error when it is missing."""
    try:
        from tasks.readers import SOURCES  # type: ignore[attr-defined]
    except ImportError as err:
        raise DataBuildError(
            "tasks.readers.SOURCES is not available, so datasets cannot be read from disk; pass records "
            "in memory (Trainer(records=...)) or install the readers"
        ) from err
    if source not in SOURCES:
        raise DataBuildError(f"unknown dataset source {source!r}; known: {sorted(SOURCES)}")
    return SOURCES[source]


def read_records(cfg: TrainConfig, entry: DatasetEntry) -> list:
    root: Path = cfg.dataset_root(entry)
    if not root.exists():
        raise DataBuildError(
            f"dataset {entry.name}: {root} does not exist (data_root={cfg.data_root!r}, path={entry.path!r}); "
            "set data_root=... or the dataset's path"
        )
    try:
        records = reader_for(entry.source)(root, split=entry.split, **cfg.reader_options(entry))
    except TypeError as err:
        raise DataBuildError(f"dataset {entry.name}: reader {entry.source!r} refused its options: {err}") from err
    if not records:
        raise DataBuildError(f"dataset {entry.name}: the reader found no records under {root} (split {entry.split})")
    return list(records)
