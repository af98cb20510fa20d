"""The generation engine of ``mgv2 eval``: items -> ``predictions.jsonl``, resumable and sharded.

* Each unique image is decoded (in DataLoader workers) and embedded ONCE; its embedding is reused
  for every prompt about it.  Images are taken in groups that hold at least ``batch_size`` prompts;
  prompts wait in a queue (with a reference to their image's embedding) and are generated in full
  greedy batches of ``batch_size``.  The prompt part up to and including the image is the same
  for every prompt about an image: its keys/values are computed once per image of a batch
  (:func:`mgv2.generation.shared_prefix_greedy`, same arithmetic as the left-padded batch, not repeated).
* Every finished batch is appended to the predictions file and flushed, one JSON line per item:
  ``{"index", "answer", "image", "prompt"}``.  A rerun reads what is there (a line cut off by a
  crash is dropped), checks each line's prompt against the current item, and generates only the
  rest: nothing is lost and nothing is done twice.  ``run.json`` records what the predictions
  were made with (benchmark, split, model, checkpoint, seed, decoding) and a rerun with other
  settings into the same folder is refused.
* Under ``torchrun`` (``WORLD_SIZE`` > 1) images are dealt round-robin to the ranks (an image is
  embedded by one rank only), rank ``k`` appends to ``predictions.rank{k}.jsonl``; after a
  barrier rank 0 merges every file by index into ``predictions.jsonl``.  The finished file is
  always sorted by index, so an interrupted-and-resumed run ends with the same file as an
  uninterrupted one.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgv2.errors import MGV2Error
from mgv2.image import ImageProcessor, load_image
from mgv2.io import atomic_write_text
from mgv2.model import GenerationSettings
from mgv2.sample import Sample, Turn
from tasks.readers.base import DataError

PREDICTIONS = "predictions.jsonl"
RUN_INFO = "run.json"


class ResumeError(MGV2Error):
    """An output folder holds predictions that do not belong to this run."""


@dataclass(frozen=True)
class EvalItem:
    """One prompt to answer: ``index`` = position in the split's annotation list."""

    index: int
    image: Any  # a path (str/Path) or a PIL image
    prompt: str

    @property
    def image_key(self) -> str:
        if isinstance(self.image, (str, Path)):
            return str(self.image)
        return f"<{type(self.image).__name__} {id(self.image)}>"


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun); with more than one process,
    join a gloo process group (only barriers are needed, so gloo serves CPU and GPU runs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def close_distributed(info: DistInfo | None) -> None:
    """Destroy the process group before the process exits: a torchrun process that leaves the gloo
    group open can abort in interpreter teardown ("terminate called without an active exception")."""
    if info is not None and info.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def shard(items: Sequence[EvalItem], info: DistInfo) -> list[EvalItem]:
    """The items of this rank: unique images in order of first appearance, dealt round-robin."""
    if info.world <= 1:
        return list(items)
    order: dict[str, int] = {}
    for it in items:
        order.setdefault(it.image_key, len(order))
    return [it for it in items if order[it.image_key] % info.world == info.rank]


# --------------------------------------------------------------------------- predictions files


def prediction_files(folder: Path) -> list[Path]:
    """The merged file (if any) and every rank file, in a fixed order."""
    merged = folder / PREDICTIONS
    ranks = sorted(folder.glob("predictions.rank*.jsonl"))
    return ([merged] if merged.exists() else []) + ranks


def read_prediction_lines(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Lines of one predictions file.  A last line without its newline that is not valid JSON is
    what a killed writer leaves: it is dropped (and, with ``repair``, cut from the file).  Any
    other bad line is an error naming the file and line."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    torn = False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if n == len(lines):  # the unterminated tail of an interrupted write
                torn = True
                break
            raise DataError(f"{path}:{n}: not valid JSON ({err})") from err
        if not isinstance(obj, dict) or not isinstance(obj.get("index"), int) or "answer" not in obj:
            raise DataError(f'{path}:{n}: expected {{"index": int, "answer": text, ...}}, got {line[:80]!r}')
        if obj["answer"] is not None and not isinstance(obj["answer"], str):
            raise DataError(f"{path}:{n}: answer must be text, got {type(obj['answer']).__name__}")
        out.append(obj)
    if repair and (torn or (text and not text.endswith("\n"))):
        atomic_write_text(path, "".join(json.dumps(obj) + "\n" for obj in out))
    return out


def collect_predictions(
    folder: Path, items: Sequence[EvalItem], repair_file: Path | None = None
) -> dict[int, dict[str, Any]]:
    """Every prediction line in ``folder`` by index, checked against ``items`` (the whole split):
    an index outside the split, or a prompt that differs from the item's, means the files belong
    to another run and raises :class:`ResumeError`.  Repeated indices (a crash between merge and
    clean-up) must agree and are kept once."""
    done: dict[int, dict[str, Any]] = {}
    for path in prediction_files(folder):
        for obj in read_prediction_lines(path, repair=path == repair_file):
            i = obj["index"]
            if not 0 <= i < len(items):
                raise ResumeError(f"{path}: index {i} is outside this split (0..{len(items) - 1}); use a fresh --out")
            if "prompt" in obj and obj["prompt"] != items[i].prompt:
                raise ResumeError(
                    f"{path}: the prediction for index {i} was made for prompt {obj['prompt']!r}, "
                    f"not {items[i].prompt!r}; these files belong to another run: use a fresh --out"
                )
            if "image" in obj and Path(str(obj["image"])).name != Path(items[i].image_key).name:
                raise ResumeError(
                    f"{path}: the prediction for index {i} was made on image {obj['image']!r}, not "
                    f"{items[i].image_key!r}; these files belong to another run: use a fresh --out"
                )
            if i in done and done[i]["answer"] != obj["answer"]:
                raise ResumeError(f"{path}: index {i} appears twice with different answers")
            done.setdefault(i, obj)
    return done


def line_of(item: EvalItem, answer: str) -> str:
    return json.dumps({"index": item.index, "answer": answer, "image": item.image_key, "prompt": item.prompt}) + "\n"


def write_merged(folder: Path, done: dict[int, dict[str, Any]]) -> Path:
    """Rewrite ``predictions.jsonl`` sorted by index (atomically) and remove the rank files."""
    path = folder / PREDICTIONS
    atomic_write_text(path, "".join(json.dumps(done[i]) + "\n" for i in sorted(done)))
    for rank_file in folder.glob("predictions.rank*.jsonl"):
        rank_file.unlink()
    return path


def check_run_info(folder: Path, info: dict[str, Any], dist: DistInfo) -> None:
    """Refuse to resume predictions made with other settings; record the settings otherwise."""
    path = folder / RUN_INFO
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}
        if diff:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ResumeError(
                f"{folder} holds predictions made with other settings ({listed}); "
                "use a fresh --out or delete that folder"
            )
    elif dist.is_main:
        atomic_write_text(path, json.dumps(info, indent=2) + "\n")


# --------------------------------------------------------------------------- images


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class ImageGroups(torch.utils.data.Dataset):
    """Group ``g`` -> pixel tensor [n_g, 3, S, S] of its images (decoded in the worker)."""

    def __init__(self, groups: Sequence[Sequence[Any]], processor: ImageProcessor) -> None:
        self.groups = [list(g) for g in groups]
        self.processor = processor

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, g: int) -> torch.Tensor:
        return torch.stack([self.processor(load_image(src)) for src in self.groups[g]])


def group_images(items: Sequence[EvalItem], batch_size: int) -> list[list[EvalItem]]:
    """Unique images (first-appearance order), as groups of consecutive images that together
    hold at least ``batch_size`` prompts (at most ``batch_size`` images per group)."""
    per_image: dict[str, list[EvalItem]] = {}
    for it in items:
        per_image.setdefault(it.image_key, []).append(it)
    groups: list[list[EvalItem]] = []
    current: list[EvalItem] = []
    n_images = 0
    for its in per_image.values():
        current.extend(its)
        n_images += 1
        if len(current) >= batch_size or n_images >= batch_size:
            groups.append(current)
            current, n_images = [], 0
    if current:
        groups.append(current)
    return groups


# --------------------------------------------------------------------------- generation


class _Writer:
    """Appends prediction lines and flushes after every batch."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, lines: Iterable[str]) -> None:
        self.f.writelines(lines)
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _batches(
    pipe, groups: list[list[EvalItem]], workers: int, batch_size: int
) -> Iterator[tuple[list[EvalItem], torch.Tensor, list[int]]]:
    """(items, image embeddings, image index per item) in batches of ``batch_size`` prompts."""
    group_images_ = [list(dict.fromkeys(it.image_key for it in g)) for g in groups]
    sources = [[next(it.image for it in g if it.image_key == k) for k in keys] for g, keys in zip(groups, group_images_)]
    loader = torch.utils.data.DataLoader(
        ImageGroups(sources, pipe.processor),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
    )
    dtype = pipe._vision_dtype()
    pending: deque[tuple[EvalItem, torch.Tensor]] = deque()

    def take(n: int):
        chosen = [pending.popleft() for _ in range(n)]
        rows: dict[int, int] = {}
        embeds = []
        index = []
        for _, emb in chosen:
            if id(emb) not in rows:
                rows[id(emb)] = len(embeds)
                embeds.append(emb)
            index.append(rows[id(emb)])
        return [it for it, _ in chosen], torch.stack(embeds), index

    with torch.no_grad():
        for g, pixels in enumerate(loader):
            emb = pipe.model.embed_images(pixels.to(pipe.device, dtype))
            row = {k: emb[j] for j, k in enumerate(group_images_[g])}
            for it in groups[g]:
                pending.append((it, row[it.image_key]))
            while len(pending) >= batch_size:
                yield take(batch_size)
        while pending:
            yield take(min(batch_size, len(pending)))


def run_generation(
    pipe,
    items: Sequence[EvalItem],
    folder: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    workers: int = 2,
    settings: GenerationSettings | None = None,
    run_info: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
    desc: str = "eval",
    share_prefix: bool = True,
) -> dict[int, str] | None:
    """Generate the answers of ``items[:limit]`` that ``folder`` does not hold yet.

    ``pipe`` is a :class:`mgv2.pipeline.Pipeline` or a function returning one (called only when
    something is left to generate).  ``share_prefix`` computes the image part of the prompt once
    per image (:func:`mgv2.generation.shared_prefix_greedy`); off, every prompt goes through ``pipe.generate``.
    ``items`` is the whole split (for checking resumed lines).  Returns ``{index: answer}`` of
    every prediction in the merged file on rank 0, ``None`` on the other ranks.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dist = dist or DistInfo()
    settings = settings or GenerationSettings()
    for k, it in enumerate(items):
        if it.index != k:
            raise ValueError(f"item {k} has index {it.index}; items must be the whole split in order")
    own = folder / (PREDICTIONS if dist.world == 1 else f"predictions.rank{dist.rank}.jsonl")
    if run_info is not None:
        check_run_info(folder, run_info, dist)
    done = collect_predictions(folder, items, repair_file=own)
    barrier(dist)  # every rank has read the old state before anyone appends
    wanted = list(items[: len(items) if limit is None else max(0, min(limit, len(items)))])
    todo = [it for it in shard(wanted, dist) if it.index not in done]

    if todo:
        if callable(pipe) and not hasattr(pipe, "generate"):
            pipe = pipe()  # built only when there is something to generate
        writer = _Writer(own)
        bar = tqdm(total=len(todo), desc=desc, unit="item", file=sys.stderr, disable=not (progress and dist.is_main),
                   dynamic_ncols=True)
        try:
            for batch_items, embeds, index in _batches(pipe, group_images(todo, batch_size), workers, batch_size):
                samples = [Sample(image=it.image, turns=[Turn(it.prompt)]) for it in batch_items]
                texts = pipe.generate(samples, embeds, index, settings, share_prefix=share_prefix)
                writer.write(line_of(it, text) for it, text in zip(batch_items, texts))
                bar.update(len(batch_items))
        finally:
            writer.close()
            bar.close()
    barrier(dist)  # every rank has finished writing
    if not dist.is_main:
        return None
    merged = collect_predictions(folder, items)
    write_merged(folder, merged)
    return {i: obj["answer"] for i, obj in merged.items()}


def read_predictions(path: str | Path, n_items: int) -> dict[int, str | None]:
    """A predictions jsonl for rescoring (``index`` + raw ``answer`` per line): indices must lie in
    the split and appear once; returns ``{index: answer}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    out: dict[int, str | None] = {}
    for obj in read_prediction_lines(path):
        i = obj["index"]
        if not 0 <= i < n_items:
            raise DataError(f"{path}: index {i} is outside the split (0..{n_items - 1})")
        if i in out:
            raise DataError(f"{path}: index {i} appears more than once; each item must be scored once")
        out[i] = obj["answer"]
    return out
