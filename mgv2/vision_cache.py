"""Frozen-ViT tokens computed once per picture for a training stage (``vision_cache: true``).

When no parameter of the vision encoder trains (it stays in eval mode), its tokens for a picture
are the same at every step.  The stage then computes them once, before its first step, for every
picture its datasets name; the data pipeline hands over the picture's row of that table instead
of pixels, so a step decodes, resizes and encodes no image.  What still trains on the image side
(``ln_vision``, the projection) runs in the step, from the cached tokens
(:meth:`mgv2.model.MiniGPTv2.embed_vision_features`), so the losses are the uncached ones.

The table lives in memory in every process: pictures x (1 + patches) x ViT width, in the ViT's
output dtype (the demo world: 20000 x 65 x 128 fp32 = 666 MB).  With several processes each
computes a slice and all of them gather the whole table.

With a ``cache_dir`` (``vision_cache_dir`` in a train config) the table is also saved there, named
by a hash of everything it depends on (the ViT's weights, the picture processing, the autocast
dtype, each picture's path, size and modification time), and a later stage with the same ViT and
pictures memory-maps it instead of encoding again (the demo's stages 2 and 3: 40-50 s each).
Anything that changes a token changes the name, so a stale table is never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgv2.errors import MGV2Error
from mgv2.image import ImageProcessor, load_image
from mgv2.io import atomic_path


class VisionCacheError(MGV2Error):
    """The stage cannot use a vision cache (trainable ViT, in-memory pictures, unknown picture)."""


def image_key(source: Any) -> str:
    """The cache key of a record's ``image``: its file path."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise VisionCacheError(
        f"vision_cache: true needs records whose image is a file path; got a {type(source).__name__}. "
        "Set vision_cache: false for in-memory pictures"
    )


@dataclass(frozen=True)
class PictureRows:
    """Picture path -> its row of the cache table: all the data pipeline needs (no tensors, so
    DataLoader workers receive it cheaply)."""

    rows: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, source: Any) -> int:
        key = image_key(source)
        try:
            return self.rows[key]
        except KeyError:
            raise VisionCacheError(
                f"picture {key} is not in the stage's vision cache (built from the datasets' records); "
                "a task must show the picture of its record"
            ) from None


@dataclass
class VisionCache:
    """``features[index.row(path)]``: the frozen ViT's tokens [1 + P, C] of the picture at ``path``."""

    index: PictureRows
    features: torch.Tensor  # [N, 1 + P, C]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def check_frozen(model) -> None:
    trainable = [n for n, p in model.visual_encoder.named_parameters() if p.requires_grad]
    if trainable:
        raise VisionCacheError(
            f"vision_cache: true needs a frozen vision encoder, but {len(trainable)} of its parameters train "
            f"(e.g. {trainable[0]}); drop 'vision' from trainable (or set vision_trainable_blocks: 0), "
            "or set vision_cache: false"
        )
    if model.visual_encoder.training:
        raise VisionCacheError("vision_cache: the frozen vision encoder is in training mode; call model.train() "
                               "after freezing (MiniGPTv2.train keeps a frozen encoder in eval mode)")


TABLE_NAME = "vision_*.pt"  # a saved table's file name; * = the hash of what its tokens depend on


def cache_file(cache_dir: str | os.PathLike, model, processor: ImageProcessor, keys: list[str],
               precision: str) -> Path:
    """Where the table of ``keys`` is saved in ``cache_dir``: ``vision_<hash>.pt``, the hash over
    the ViT's state dict (names, shapes, dtypes, bytes), ``processor``, ``precision`` (the
    autocast dtype the tokens are computed under) and every picture's path, size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"size": processor.size, "mean": list(processor.mean), "std": list(processor.std),
                         "precision": precision}).encode())
    for name, t in sorted(model.visual_encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for k in keys:
        try:
            st = os.stat(k)
        except OSError as e:
            raise VisionCacheError(f"vision cache: cannot read picture {k} ({e.strerror}); check the dataset's "
                                   "images path") from None
        h.update(f"{k}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / TABLE_NAME.replace("*", h.hexdigest()[:24])


def _load_table(path: Path, keys: list[str]) -> torch.Tensor:
    """The saved table at ``path`` (memory-mapped: processes share its pages), checked against ``keys``."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError) as e:
        raise VisionCacheError(f"vision cache {path} cannot be read ({e}); delete it and the stage encodes "
                               "the pictures again") from None
    if not isinstance(saved, dict) or saved.get("keys") != keys or not isinstance(saved.get("features"), torch.Tensor) \
            or saved["features"].shape[0] != len(keys):
        raise VisionCacheError(f"vision cache {path} does not hold this stage's {len(keys)} pictures (a file "
                               "written by something else under its name); delete it and run the stage again")
    return saved["features"]


def build_vision_cache(
    model,
    processor: ImageProcessor,
    sources: Iterable[Any],
    *,
    device: torch.device,
    autocast: Callable[[], Any],
    rank: int = 0,
    world: int = 1,
    batch_size: int = 128,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    precision: str = "fp32",
) -> VisionCache:
    """The frozen ViT's tokens of every picture in ``sources`` (record images; repeats are one row).

    Each of the ``world`` processes encodes ``ceil(N / world)`` rows (the last slice padded with
    the first picture) under ``autocast`` (the training step's, ``precision`` names its dtype),
    then all gather the table.  With ``cache_dir``: the table saved there by an earlier stage with
    the same ViT, processing and pictures is loaded instead (:func:`cache_file`), and a table
    computed here is saved there (atomically, by rank 0)."""
    check_frozen(model)
    keys = sorted({image_key(s) for s in sources})
    if not keys:
        raise VisionCacheError("vision_cache: true but no dataset record names a picture; set vision_cache: false")
    t0 = time.perf_counter()
    path, features = None, None
    if cache_dir is not None:
        path = cache_file(cache_dir, model, processor, keys, precision)
        found = torch.tensor([int(path.is_file())])
        if world > 1:  # rank 0 decides, so no process waits in a gather that another one skipped
            import torch.distributed as dist

            dist.broadcast(found, 0)
        if found.item():
            features = _load_table(path, keys)
            done = f"read from {path} in {time.perf_counter() - t0:.1f} s"
    if features is None:
        features = _encode_table(model, processor, keys, device, autocast, rank, world, batch_size, progress)
        done = f"{time.perf_counter() - t0:.1f} s"
        if path is not None and rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save({"keys": keys, "features": features}, tmp)
            done += f", saved to {path}"
            others = [p for p in path.parent.glob(TABLE_NAME) if p != path]
            if others:  # nothing prunes them: another stage or run may still read them
                mib = sum(p.stat().st_size for p in others) / 2**20
                done += (f"; {len(others)} other table(s) beside it ({mib:.0f} MiB), of other ViT weights or "
                         "pictures: delete the ones no stage reads any more")
    cache = VisionCache(PictureRows({k: i for i, k in enumerate(keys)}), features)
    if say is not None:
        say(f"vision cache: {len(keys)} pictures, {tuple(features.shape[1:])} tokens each, "
            f"{cache.nbytes / 2**20:.0f} MiB, {done}")
    return cache


def _encode_table(model, processor: ImageProcessor, keys: list[str], device: torch.device,
                  autocast: Callable[[], Any], rank: int, world: int, batch_size: int,
                  progress: bool) -> torch.Tensor:
    """The ViT's tokens of ``keys`` in order: this process encodes its slice, then all gather."""
    per = math.ceil(len(keys) / world)
    mine = keys[rank * per : (rank + 1) * per]
    mine += [keys[0]] * (per - len(mine))
    dtype = model.visual_encoder.patch_embed.proj.weight.dtype
    starts = range(0, per, batch_size)
    if progress and rank == 0:
        from tqdm import tqdm

        starts = tqdm(starts, desc="vision cache", unit="batch", dynamic_ncols=True)
    parts = []
    with torch.no_grad():
        for s in starts:
            pixels = processor.batch([load_image(k) for k in mine[s : s + batch_size]])
            with autocast():
                parts.append(model.vision_features(pixels.to(device, dtype)))
    local = torch.cat(parts)
    if world > 1:
        import torch.distributed as dist

        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        local = torch.cat(gathered)
    return local[: len(keys)].contiguous()
