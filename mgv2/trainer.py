"""The training loop (SPEC §5): one stage = one :class:`mgv2.config.TrainConfig`.

    cfg = load_yaml(TrainConfig, "configs/train/tiny_stage2.yaml")
    Trainer(cfg).train()

* AdamW in two groups: decay for matrices, none for biases, norms and every 1-D tensor;
* learning rate per optimizer step from :func:`lr_at` (warm-up, then cosine);
* each optimizer step runs ``grad_accum`` iterations, each drawing one dataset of the mixture;
  the loss of a step is the mean over ALL answer tokens of all its iterations and processes
  (token-weighted), so one process and N processes give the same loss and gradients;
* bf16/fp16 autocast on GPU (fp16 with a GradScaler; bf16 also on the CPU), fp32 master weights for
  trainable half-precision tensors, optional clipping, gradient checkpointing; ``precision: auto``
  takes bf16 only where the hardware computes it (:func:`native_bf16`);
* under torchrun: DistributedDataParallel (gloo on CPU, nccl on GPU), or FSDP2 ``fully_shard``
  per transformer block (``distributed: fsdp``) for models that do not fit one GPU;
* checkpoints every ``save_every`` steps, written atomically: the mgv2 model folder
  (:func:`mgv2.checkpoint.save_checkpoint`) plus ``train_state.pt`` (optimizer, scaler, step,
  mixture position, every process's RNG states; plain types and tensors, read back with
  ``weights_only=True``); ``resume=True`` continues with the same losses;
* ``region_loss`` (:class:`RegionLoss`): an auxiliary loss that teaches the image tokens which part
  of the picture the first turn is about; ``log.jsonl`` then also has ``region_loss``;
* ``vision_cache: true`` (frozen ViT): every picture of the stage is encoded once before step 1
  (:mod:`mgv2.vision_cache`) and the steps start from those tokens, with the same losses;
* a NaN/inf loss stops the run with a :class:`TrainingError` after writing a checkpoint of the
  last good state;
* rank 0 shows a tqdm bar and appends one JSON line per ``log_every`` steps to ``log.jsonl``
  (loss, lr, samples/s, tokens/s).

Output folder (``output_dir``, default ``runs/<name>/stage<N>``)::

    train.yaml              the resolved TrainConfig
    log.jsonl
    checkpoints/step_0001000/{config.yaml, model.safetensors, adapter/, train_state.pt}
    checkpoints/latest      name of the newest complete checkpoint
    final/                  the last step's checkpoint: what stage N+1 starts from
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgv2.config import RegionLossConfig, ScheduleConfig, TrainConfig, save_yaml
from mgv2.errors import CheckpointError, MGV2Error
from mgv2.io import atomic_path, atomic_write_text
from mgv2.prompt import Batch
from mgv2.vision_cache import VisionCache, build_vision_cache

STATE_FILE = "train_state.pt"
STATE_VERSION = 1


class TrainingError(MGV2Error):
    """Training cannot go on (a NaN loss, nothing to resume ...); the message says what to do."""


# ---------------------------------------------------------------------------------------------
# optimizer and schedule


def no_decay(name: str, param: torch.Tensor) -> bool:
    """SPEC §5: no weight decay for biases, norms and 1-D parameters."""
    low = name.lower()
    return param.ndim < 2 or low.endswith(".bias") or "norm" in low or "ln_vision" in low


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters in two AdamW groups (decay / no decay), in a fixed order."""
    decay, plain, decay_names, plain_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if no_decay(name, p):
            plain.append(p)
            plain_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    if not decay and not plain:
        raise TrainingError("nothing to train: no parameter requires grad (check trainable: in the configs)")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "names": decay_names})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "names": plain_names})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.optim.weight_decay)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(
        groups, lr=cfg.schedule.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )


def lr_at(step: int, sched: ScheduleConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total_steps``."""
    w, lr, lo, start = sched.warmup_steps, sched.lr, sched.min_lr, sched.warmup_start_lr
    if sched.style == "epoch_cosine":  # LAVIS LinearWarmupCosineLRScheduler, stepped per epoch
        ipe = int(sched.iters_per_epoch or 1)
        epoch, it = divmod(step, ipe)
        if epoch == 0 and w > 0:
            return min(lr, start + (lr - start) * it / w)
        epochs = max(1, math.ceil(total_steps / ipe))
        return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if step < w:
        return start + (lr - start) * step / w
    if sched.style == "constant":
        return lr
    progress = (step - w) / max(1, total_steps - w)
    return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX.  Elsewhere PyTorch emulates bf16 on the CPU: on an AVX2-only AMD EPYC (Zen 3)
    the demo stage-1 refer step (batch 128) took 17.0 s in bf16 against 0.97 s in fp32
    (docs/demo_model.md, twelfth session), so ``precision: auto`` trains in fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


# ---------------------------------------------------------------------------------------------
# the module DDP / FSDP wrap


def compile_unavailable(device: torch.device, distributed: str | None = None) -> str | None:
    """Why torch.compile cannot train on ``device`` here, or None where it can: TorchInductor
    needs a C++ compiler for CPU kernels and Triton for CUDA ones; sharded (fsdp) training is not
    compiled by mgv2."""
    if distributed == "fsdp":
        return "mgv2 does not compile fsdp-sharded training"
    if device.type == "cpu":
        names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(n) for n in names):
            return (f"no C++ compiler ({' / '.join(names)}) is on PATH, which TorchInductor needs for CPU "
                    "kernels; install one (e.g. apt install g++)")
        return None
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return "the triton package, which TorchInductor needs for CUDA kernels, is not installed"
        return None
    return f"mgv2 compiles on cpu and cuda devices, not {device.type}"


class SoftCoordinateLoss(nn.Module):
    """Answer-token loss where each coordinate token's target is a Gaussian over the values.

    ``coord_ids[v]`` is the token id of ``<v>``.  An answer token ``<t>`` is scored against
    ``q_t(v) ~ exp(-(v - t)^2 / (2 sigma^2))`` over the coordinate tokens (the rest of the
    vocabulary gets none) as ``KL(q_t || p) = -sum_v q_t(v) log p(<v>) - H(q_t)``: zero when the
    model puts exactly ``q_t`` on the coordinates, and the plain cross-entropy in the limit
    ``sigma -> 0``.  A prediction one value off then costs less than one twenty values off,
    where one-hot cross-entropy charges both alike.  Every other answer token keeps the
    cross-entropy.  Returns the summed loss like ``answer_loss``."""

    def __init__(self, coord_ids: Sequence[int], sigma: float, vocab_size: int) -> None:
        super().__init__()
        if sigma <= 0:
            raise TrainingError(f"coord_target_sigma must be > 0, got {sigma}")
        ids = torch.as_tensor(list(coord_ids), dtype=torch.long)
        if ids.unique().numel() != ids.numel():
            raise TrainingError("the coordinate tokens <0>..<100> do not have distinct ids; the tokenizer lacks them")
        values = torch.arange(ids.numel(), dtype=torch.float64)
        q = torch.exp(-((values.reshape(-1, 1) - values.reshape(1, -1)) ** 2) / (2 * sigma**2))
        q = q / q.sum(dim=1, keepdim=True)
        entropy = -(q * q.clamp_min(1e-300).log()).sum(dim=1)
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise TrainingError(f"coordinate token ids {int(ids.min())}..{int(ids.max())} fall outside the vocabulary of {vocab_size}")
        self.register_buffer("coord_ids", ids, persistent=False)
        self.register_buffer("gaussian", q.float(), persistent=False)  # row t = the target distribution of <t>
        self.register_buffer("entropy", entropy.float(), persistent=False)
        value_of = torch.full((vocab_size,), -1, dtype=torch.long)  # token id -> coordinate value, -1 = not one
        value_of[ids] = torch.arange(ids.numel())
        self.register_buffer("value_of", value_of, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        value = self.value_of[targets]
        is_coord = value >= 0
        loss = nn.functional.cross_entropy(logits[~is_coord], targets[~is_coord], reduction="sum")
        if bool(is_coord.any()):
            v = value[is_coord]
            logp = torch.log_softmax(logits[is_coord], dim=-1)[:, self.coord_ids]
            loss = loss + (-(self.gaussian[v] * logp).sum(dim=-1) - self.entropy[v]).sum()
        return loss


def region_coverage(cells: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """How much of each image token the regions cover: ``cells [T, 4]`` and ``regions [N, R, 4]``
    (both ``x1, y1, x2, y2`` as fractions of the picture; all-zero rows are padding) ->
    ``[N, T]`` in 0..1, the largest over the regions of intersection / min(cell area, region
    area): 1 where a region fills the cell or lies inside it."""
    c = cells.unsqueeze(0).unsqueeze(2)  # [1, T, 1, 4]
    r = regions.unsqueeze(1)  # [N, 1, R, 4]
    iw = (torch.minimum(c[..., 2], r[..., 2]) - torch.maximum(c[..., 0], r[..., 0])).clamp(min=0)
    ih = (torch.minimum(c[..., 3], r[..., 3]) - torch.maximum(c[..., 1], r[..., 1])).clamp(min=0)
    cell_area = (c[..., 2] - c[..., 0]) * (c[..., 3] - c[..., 1])
    region_area = ((r[..., 2] - r[..., 0]).clamp(min=0) * (r[..., 3] - r[..., 1]).clamp(min=0))
    cover = iw * ih / torch.minimum(cell_area, region_area).clamp(min=1e-12)
    if cover.shape[-1] == 0:
        return cover.new_zeros(cover.shape[:2])
    return cover.clamp(0, 1).amax(dim=-1)


class RegionLoss(nn.Module):
    """The ``region_loss`` of a train config (:class:`mgv2.config.RegionLossConfig`).

    ``head`` (a Linear to one logit) reads each image token's hidden state after decoder layer
    ``cfg.layer`` and is trained, with binary cross-entropy, to give :func:`region_coverage` of
    the sample's regions (``Batch.regions``: the boxes its first turn names).  Per sample the
    mean over its image tokens; summed over the samples that name a region, times
    ``cfg.weight``.  With the instruction before the image, an image token that has read "the
    red ball" must say whether it is part of the red ball: the lookup the answer needs, taught
    at every image token instead of only through the few box tokens of the answer."""

    def __init__(self, cfg: RegionLossConfig, cells: torch.Tensor, hidden_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = nn.Linear(hidden_size, 1)
        self.register_buffer("cells", cells.float(), persistent=False)

    def forward(self, image_states: torch.Tensor, regions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``image_states [N, T, D]`` (one row per image-bearing sequence) and their ``regions
        [N, R, 4]`` -> ``(weight x summed loss, summed loss (detached), samples with a region)``."""
        if image_states.shape[1] != self.cells.shape[0]:
            raise TrainingError(f"the batch has {image_states.shape[1]} image tokens per picture but the region "
                                f"loss was built for {self.cells.shape[0]}; model and tokenizer configs disagree")
        logits = self.head(image_states.float()).squeeze(-1)  # [N, T]
        if regions is None or regions.shape[1] == 0:
            return 0.0 * logits.sum(), logits.new_zeros(()), 0  # every parameter in the graph (DDP)
        regions = regions.to(logits.device, torch.float32)
        has = (((regions[..., 2] - regions[..., 0]) > 0) & ((regions[..., 3] - regions[..., 1]) > 0)).any(dim=-1)
        if not bool(has.any()):
            return 0.0 * logits.sum(), logits.new_zeros(()), 0
        target = region_coverage(self.cells, regions[has])
        per_sample = nn.functional.binary_cross_entropy_with_logits(logits[has], target, reduction="none").mean(-1)
        total = per_sample.sum()
        return self.cfg.weight * total, total.detach(), int(has.sum())


class LossModule(nn.Module):
    """``forward(batch) -> (sum of the losses, number of answer tokens)``.

    The loss is the cross-entropy of ``answer_loss``, or ``coord_loss``'s where one is given
    (:class:`SoftCoordinateLoss`, the ``coord_target_sigma`` key of a train config), plus
    ``region_loss``'s where one is given (:class:`RegionLoss`).  ``parts`` holds the last
    forward's ``[answer loss sum, region loss sum, samples with a region]`` (detached) for the log.

    A batch without images still touches the trainable image branch with a zero-weighted dummy
    image, so every trainable parameter gets a gradient in every step (DDP needs that, and
    AdamW then treats every parameter the same way in one process or many)."""

    def __init__(self, model: nn.Module, coord_loss: SoftCoordinateLoss | None = None,
                 region_loss: RegionLoss | None = None) -> None:
        super().__init__()
        self.model = model
        self.coord_loss = coord_loss
        self.region_loss = region_loss
        self.parts = torch.zeros(3, dtype=torch.float64)
        image_parts = ("visual_encoder.", "ln_vision.", "llama_proj.")
        self.touch_images = any(
            p.requires_grad for n, p in model.named_parameters() if n.startswith(image_parts)
        )
        self.vision_dtype = model.visual_encoder.patch_embed.proj.weight.dtype
        self.img_size = model.visual_encoder.cfg.img_size
        self.vision_cache: VisionCache | None = None  # an attribute, not a buffer: DDP must not broadcast it

    def forward(self, batch: Batch, image_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_rows``: the batch's pictures as rows of ``vision_cache`` (then it has no pixels)."""
        if batch.pixel_values is not None:
            batch = dataclasses.replace(batch, pixel_values=batch.pixel_values.to(self.vision_dtype))
        if batch.labels is None:
            raise TrainingError("a training batch has no answer tokens (labels); check the task's targets")
        image_embeds = None
        if image_rows is not None:
            if self.vision_cache is None:
                raise TrainingError("a batch names vision-cache rows but the stage built no vision cache")
            image_embeds = self.model.embed_vision_features(self.vision_cache.features[image_rows])
        layer = None if self.region_loss is None else self.region_loss.cfg.layer
        logits, targets, image_states = self.model.answer_logits_and_image_states(batch, image_embeds, layer)
        if self.coord_loss is None:
            loss_sum = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        else:
            loss_sum = self.coord_loss(logits, targets)
        n = torch.tensor(targets.numel(), device=targets.device)
        self.parts = torch.tensor([float(loss_sum.detach()), 0.0, 0.0], dtype=torch.float64)
        if self.region_loss is not None:
            regions = None if batch.regions is None else batch.regions[batch.image_mask.any(dim=1)]
            weighted, raw, count = self.region_loss(image_states, regions)
            loss_sum = loss_sum + weighted
            self.parts[1:] = torch.tensor([float(raw), float(count)], dtype=torch.float64)
        if self.touch_images and batch.pixel_values is None and image_rows is None:
            dummy = torch.zeros(1, 3, self.img_size, self.img_size, device=batch.input_ids.device,
                                dtype=self.vision_dtype)
            loss_sum = loss_sum + 0.0 * self.model.embed_images(dummy).float().sum()
        return loss_sum, n


# ---------------------------------------------------------------------------------------------
# distributed set-up


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """From torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or device == "auto":
        use_cuda = torch.cuda.is_available()
        dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def _all_reduce(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.active:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _barrier(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------------------------
# the trainer


@dataclass
class StepRecord:
    step: int  # 1-based: the number of optimizer steps done
    loss: float
    lr: float
    datasets: list[str]
    samples: int
    tokens: int
    region_loss: float | None = None  # mean per sample that names a region (region_loss on)


@dataclass
class TrainResult:
    history: list[StepRecord]
    output_dir: Path
    final: Path | None

    @property
    def losses(self) -> list[float]:
        return [h.loss for h in self.history]


class Trainer:
    """One stage.  ``records`` (dataset name -> record list) replaces reading from disk (tests,
    notebooks); ``resume`` continues from ``output_dir/checkpoints/latest``."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        records: dict[str, Sequence[Any]] | None = None,
        resume: bool = False,
        device: str | None = None,
        verbose: bool = True,
    ) -> None:
        self.cfg = cfg
        self.records = records
        self.resume = resume
        self.verbose = verbose
        self.dist = init_distributed(device)
        self.out = cfg.out_dir
        self._setup()

    # -- set-up ----------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.verbose and self.dist.main:
            print(f"[mgv2 train] {msg}", flush=True)

    def _setup(self) -> None:
        from mgv2.data import MixtureBatchSampler, MixtureDataset, TaskDataset, TrainCollator, read_records
        from mgv2.mixture import Mixture
        from mgv2.pipeline import Pipeline
        from tasks import get_task

        cfg, info = self.cfg, self.dist
        self.latest = self._find_resume() if self.resume else None
        if not self.resume and (self.out / "checkpoints" / "latest").is_file():
            raise TrainingError(
                f"{self.out} already holds a run; pass --resume to continue it, or set output_dir=... for a new one"
            )
        self.model_cfg = cfg.model_config()
        init = cfg.init_path()
        if init is not None and not init.exists():
            raise TrainingError(
                f"stage {cfg.stage} starts from {init}, which does not exist: run stage {cfg.stage - 1} first, "
                "or set init_from=PATH (a checkpoint folder or released .pth) or init_from=null"
            )
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        build_device = "cpu" if cfg.distributed == "fsdp" else info.device
        pipe = Pipeline.from_config(self.model_cfg, checkpoint=init, device=str(build_device),
                                    verbose=self.verbose and info.main)
        self.pipe = pipe
        self.model = pipe.model
        self._fp32_masters()  # before the resume load, so saved fp32 masters come back unrounded
        if self.latest is not None:
            from mgv2.checkpoint import load_checkpoint_folder

            load_checkpoint_folder(self.model, self.latest)
        self.model.train()
        coord_loss = None
        if cfg.coord_target_sigma is not None:
            from mgv2.tokenizer import coordinate_token_ids

            coord_loss = SoftCoordinateLoss(coordinate_token_ids(pipe.tokenizer), cfg.coord_target_sigma,
                                            self.model_cfg.llm.vocab_size).to(info.device)
        region_loss = None
        if cfg.region_loss is not None:
            from mgv2.model import image_token_boxes

            if cfg.distributed == "fsdp" and info.active:
                raise TrainingError("region_loss runs with distributed: ddp or one process, not fsdp "
                                    "(its head is not part of the sharded model); drop region_loss or use ddp")
            with torch.random.fork_rng(devices=[]):  # the head's own seeded init; the run's stream is untouched
                torch.manual_seed(cfg.seed + 1)
                region_loss = RegionLoss(cfg.region_loss, image_token_boxes(self.model_cfg),
                                         self.model_cfg.llm.hidden_size).to(info.device)
            if self.latest is None and init is not None and self._carry_region_head(region_loss, init):
                self._say(f"region loss: head carried over from {init}")
        self.loss_module = LossModule(self.model, coord_loss, region_loss)
        self.compiled = self._maybe_compile()
        self.wrapped = self._wrap(self.loss_module)
        self.trainable = [p for p in self.loss_module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.loss_module, cfg)
        self.scaler = self._make_scaler()
        self.autocast = self._autocast_ctx()

        # data
        entries = cfg.datasets
        records = [self.records[e.name] if self.records is not None else read_records(cfg, e) for e in entries]
        rows = None
        if cfg.vision_cache:
            images = (r.image for recs in records for r in recs if getattr(r, "image", None) is not None)
            self.loss_module.vision_cache = build_vision_cache(
                self.model, pipe.processor, images, device=info.device, autocast=self.autocast,
                rank=info.rank, world=info.world, progress=cfg.progress and info.main, say=self._say,
                cache_dir=None if cfg.vision_cache_dir is None else Path(os.path.expanduser(cfg.vision_cache_dir)),
                precision=str(self._amp_dtype() or torch.float32).removeprefix("torch."),
            )
            rows = self.loss_module.vision_cache.index
        datasets = [
            TaskDataset(
                entry.name, recs, get_task(entry.task), pipe.encoder, pipe.processor, i,
                turns_per_image=entry.turns_per_image, picture_rows=rows,
            )
            for i, (entry, recs) in enumerate(zip(entries, records))
        ]
        self.mixture = Mixture(
            [e.name for e in entries], [len(d) for d in datasets], [e.ratio for e in entries],
            [e.batch_size * cfg.batch_scale for e in entries], seed=cfg.seed,
        )
        self.step = 0
        if self.latest is not None:
            self._load_state(self.latest)
        else:
            torch.manual_seed(cfg.seed + 1000 * info.rank)  # dropout: its own stream per process
        self.sampler = MixtureBatchSampler(self.mixture, info.rank, info.world)
        self.dataset = MixtureDataset(datasets)
        self.collator = TrainCollator(pipe.encoder, chunks=cfg.length_chunks)
        counts = {n: len(d) for n, d in zip(self.mixture.names, datasets)}
        n_train = sum(p.numel() for p in self.trainable)
        if region_loss is not None:
            n_head = sum(p.numel() for p in region_loss.parameters())
            self._say(f"region loss: weight {cfg.region_loss.weight}, head on the image tokens after decoder "
                      f"layer {cfg.region_loss.layer} ({n_head} of the trainable parameters, not saved in the model)")
        self._say(f"stage {cfg.stage}: {n_train:,} trainable parameters; datasets {counts}; "
                  f"{info.world} process(es) on {info.device}; output {self.out}")

    @staticmethod
    def _carry_region_head(region_loss: RegionLoss, init: Path) -> bool:
        """A stage that starts from a checkpoint folder trained with a region loss goes on with
        that head (it is saved in the folder's train_state.pt); False where there is none."""
        state_file = init / STATE_FILE
        if not (init.is_dir() and state_file.is_file()):
            return False
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as err:  # several error types for a damaged file
            raise CheckpointError(f"{state_file} cannot be read ({type(err).__name__}: {err})") from err
        head = state.get("region_head")
        if head is None:
            return False
        try:
            region_loss.load_state_dict(head)
        except RuntimeError as err:
            raise CheckpointError(f"{state_file}: its region-loss head does not fit this model ({err})") from err
        return True

    def _fp32_masters(self) -> None:
        """Under fp16/bf16 autocast, trainable tensors stored in half precision (a trained fp16 ViT,
        a full fp16 LLM) are kept in fp32: the optimizer updates fp32 master weights and autocast
        computes in half precision (GradScaler refuses fp16 gradients)."""
        if self._amp_dtype() is None:
            return
        half = [p for p in self.model.parameters() if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16)]
        for p in half:
            p.data = p.data.float()
        if half:
            self._say(f"{len(half)} trainable half-precision tensors upcast to fp32 master weights")

    def _find_resume(self) -> Path:
        pointer = self.out / "checkpoints" / "latest"
        if not pointer.is_file():
            raise TrainingError(f"nothing to resume in {self.out} (no checkpoints/latest); start without --resume")
        folder = self.out / "checkpoints" / pointer.read_text().strip()
        if not (folder / STATE_FILE).is_file():
            raise TrainingError(f"{folder} has no {STATE_FILE}; the checkpoint is incomplete")
        return folder

    def _maybe_compile(self) -> bool:
        """``compile``: torch.compile the LLM decoder in place (its state-dict keys do not change);
        TorchInductor builds the kernels at the first step.  True where it is compiled."""
        mode = self.cfg.compile
        if mode is False:
            return False
        why = compile_unavailable(self.dist.device, self.cfg.distributed if self.dist.active else None)
        if why is not None:
            if mode is True:
                raise TrainingError(f"compile: true, but {why}; set compile: auto (train eagerly where it "
                                    "cannot compile) or compile: false")
            self._say(f"compile auto: training eagerly ({why})")
            return False
        self.model.compile_decoder()
        self._say("compile: the LLM decoder is compiled (torch.compile, dynamic shapes) during the first steps")
        return True

    def _wrap(self, module: nn.Module) -> nn.Module:
        info, cfg = self.dist, self.cfg
        if cfg.distributed == "fsdp":
            return self._wrap_fsdp(module)
        if not info.active:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers (RoPE tables) are identical in every process and never change: no per-step sync.
        # torch 2.13 renamed the switch; older versions only know broadcast_buffers.
        params = inspect.signature(DDP.__init__).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        return DDP(module, device_ids=[info.device.index] if info.device.type == "cuda" else None, **no_sync)

    def _wrap_fsdp(self, module: nn.Module) -> nn.Module:
        """FSDP2: each LLM decoder layer and each ViT block is its own shard group, the rest is
        the root group.  The model was built on the CPU; ``fully_shard`` moves one group at a
        time to this process's device and keeps only its shard there."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # FSDP2 gathers a layer's weights when the layer is called; the answer pass calls the last
        # layer's parts one by one, so sharded training runs the whole decoder (mgv2/answer_pass.py)
        self.model.answer_pass = None

        from mgv2.vision import Block

        dtype = self._amp_dtype()
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
        layers = [m for m in module.modules() if type(m).__name__.endswith("DecoderLayer") or isinstance(m, Block)]
        for layer in layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(module, mp_policy=mp)
        return module

    def _amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype: fp16 / bf16 on GPU; on the CPU only bf16 (fp16 runs in fp32);
        ``auto``: bf16 where :func:`native_bf16`, else fp16 on a GPU and none (fp32) on a CPU."""
        precision, device = self.cfg.precision, self.dist.device
        if precision == "auto":
            if native_bf16(device):
                return torch.bfloat16
            return torch.float16 if device.type == "cuda" else None
        if precision == "fp32" or (device.type != "cuda" and precision == "fp16"):
            return None
        return torch.float16 if precision == "fp16" else torch.bfloat16

    def _autocast_ctx(self):
        dtype = self._amp_dtype()
        precision, device = self.cfg.precision, self.dist.device
        if precision == "auto":
            chosen = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast", None: "fp32"}[dtype]
            why = "has" if dtype is torch.bfloat16 else "has no"  # _amp_dtype took bf16 iff native_bf16
            self._say(f"precision auto: {chosen} (this {device.type} {why} native bf16)")
        elif precision == "bf16" and not native_bf16(device):
            self._say(f"warning: precision bf16 on a {device.type} without native bf16 (no AVX512-BF16 / AMX): "
                      "its matmuls are emulated (the demo stage-1 step: 17x slower than fp32 on an AVX2 CPU); "
                      "set precision=auto (bf16 where the hardware has it) or precision=fp32")
        if dtype is None:
            if precision not in ("fp32", "auto"):
                self._say(f"precision {precision} needs a GPU; this CPU run trains in fp32")
            return contextlib.nullcontext
        device_type = device.type
        return lambda: torch.autocast(device_type, dtype=dtype)

    def _make_scaler(self):
        if self._amp_dtype() is torch.float16 and self.dist.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    # -- state -----------------------------------------------------------------------------
    def _optim_state(self) -> dict:
        if self.cfg.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(
                self.wrapped, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return self.optimizer.state_dict()

    def _load_optim_state(self, state: dict) -> None:
        if self.cfg.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                self.wrapped, self.optimizer, optim_state_dict=state,
                options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
            )
        else:
            self.optimizer.load_state_dict(state)

    def _load_state(self, folder: Path) -> None:
        try:
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as err:  # several error types for a damaged file
            raise CheckpointError(f"{folder / STATE_FILE} cannot be read ({type(err).__name__}: {err})") from err
        if state.get("version") != STATE_VERSION:
            raise CheckpointError(f"{folder / STATE_FILE}: unknown train_state version {state.get('version')}")
        head = self.loss_module.region_loss
        if (head is None) != ("region_head" not in state):
            said = "has a region_loss" if head is not None else "has no region_loss"
            saved = "with" if "region_head" in state else "without"
            raise CheckpointError(f"{folder} was trained {saved} a region loss but this config {said}; "
                                  "resume with the config the run started with")
        if head is not None:
            head.load_state_dict(state["region_head"])
        self.step = int(state["step"])
        self._load_optim_state(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.mixture.load_state_dict(state["mixture"])
        rngs = state["rng"]
        if self.dist.rank < len(rngs):
            _set_rng_state(rngs[self.dist.rank], self.dist.device)
        else:
            torch.manual_seed(self.cfg.seed + 1000 * self.dist.rank + self.step)
            self._say(f"resumed with more processes than saved ({len(rngs)}); new RNG streams for the others")
        if int(state.get("world", 1)) != self.dist.world:
            self._say(f"resumed on {self.dist.world} process(es), saved from {state.get('world')}")
        self._say(f"resumed from {folder} at step {self.step}")

    def _gather_rng(self) -> list[dict]:
        mine = _rng_state(self.dist.device)
        if not self.dist.active:
            return [mine]
        import torch.distributed as dist

        cpu = {k: v.cpu() for k, v in mine.items()}
        out: list = [None] * self.dist.world
        dist.all_gather_object(out, cpu)
        return out

    def _model_state_for_save(self) -> dict[str, torch.Tensor] | None:
        """FSDP only: the full trainable tensors on rank 0 (a collective call)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(
            self.wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        )
        return {k.removeprefix("model."): v for k, v in sd.items()}

    def save(self, name: str, mixture_state: dict, extra_dir: Path | None = None) -> Path | None:
        """Write ``checkpoints/<name>`` atomically and point ``checkpoints/latest`` at it
        (every process must call this; rank 0 writes).  ``extra_dir`` (final/) gets a copy."""
        from mgv2.checkpoint import save_checkpoint

        rng = self._gather_rng()
        optim = self._optim_state()
        full = self._model_state_for_save() if self.cfg.distributed == "fsdp" else None
        folder = self.out / "checkpoints" / name
        if self.dist.main:
            state = {
                "version": STATE_VERSION,
                "step": self.step,
                "world": self.dist.world,
                "optimizer": optim,
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "scheduler": {"step": self.step, "lr": lr_at(self.step, self.cfg.schedule, self.cfg.steps)},
                "mixture": mixture_state,
                "rng": rng,
            }
            if self.loss_module.region_loss is not None:  # a training device, not part of the model
                state["region_head"] = {k: v.detach().cpu().clone()
                                        for k, v in self.loss_module.region_loss.state_dict().items()}
            staging = folder.parent / f".{name}.staging"
            if staging.exists():
                shutil.rmtree(staging)
            if full is None:
                save_checkpoint(self.model, self.model_cfg, staging, extra={"step": str(self.step)})
            else:
                _save_full_state(self.model, self.model_cfg, staging, full)
            with atomic_path(staging / STATE_FILE) as tmp:
                torch.save(state, tmp)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
            atomic_write_text(folder.parent / "latest", name + "\n")
            self._prune()
            if extra_dir is not None:
                tmp_final = extra_dir.parent / f".{extra_dir.name}.staging"
                if tmp_final.exists():
                    shutil.rmtree(tmp_final)
                shutil.copytree(folder, tmp_final)
                if extra_dir.exists():
                    shutil.rmtree(extra_dir)
                tmp_final.rename(extra_dir)
        _barrier(self.dist)
        return folder if self.dist.main else None

    def _prune(self) -> None:
        ckpts = sorted(p for p in (self.out / "checkpoints").glob("step_*") if p.is_dir())
        for old in ckpts[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    # -- logging ---------------------------------------------------------------------------
    def _open_log(self):
        if not self.dist.main:
            return None
        path = self.out / "log.jsonl"
        if path.is_file():  # drop lines past the resumed step (a run killed after its last save)
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= self.step]
            atomic_write_text(path, "".join(k + "\n" for k in keep))
        return open(path, "a", encoding="utf-8")

    # -- the loop --------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> TrainResult:
        """Run to ``cfg.steps`` (or stop after step ``stop_after`` without a final checkpoint,
        as a killed run would)."""
        from mgv2.data import make_loader

        cfg, info = self.cfg, self.dist
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "train.yaml")
        loader = make_loader(self.dataset, self.sampler, self.collator, cfg.num_workers,
                             pin_memory=info.device.type == "cuda")
        batches = iter(loader)
        log = self._open_log()
        bar = None
        if info.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {cfg.stage}", dynamic_ncols=True)
        history: list[StepRecord] = []
        names = self.mixture.names
        window = {"loss": 0.0, "steps": 0, "samples": 0, "tokens": 0, "region": 0.0, "region_steps": 0,
                  "t0": time.perf_counter()}
        last_state = self.mixture.state_dict()
        try:
            while self.step < cfg.steps:
                draws = [next(batches) for _ in range(cfg.grad_accum)]  # each: its length_chunks batches
                micro = [tb for draw in draws for tb in draw]
                counts = torch.tensor(
                    [sum(m.num_answer_tokens for m in micro), sum(m.num_tokens for m in micro),
                     sum(m.num_samples for m in micro)], dtype=torch.float64,
                )
                _all_reduce(counts, info)
                total_answer = counts[0].item()
                lr = lr_at(self.step, cfg.schedule, cfg.steps)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                parts = self._forward_backward(micro, total_answer)  # [total, answer, region, region samples]
                _all_reduce(parts, info)
                total = parts[0].item() / max(total_answer, 1.0)
                loss = parts[1].item() / max(total_answer, 1.0)  # the answer tokens' loss, with or without a region loss
                region = parts[2].item() / parts[3].item() if parts[3].item() > 0 else None
                drawn = [names[draw[0].dataset] for draw in draws]
                if not math.isfinite(total):
                    self.optimizer.zero_grad(set_to_none=True)
                    where = self.save(f"step_{self.step:07d}", last_state)
                    raise TrainingError(
                        f"loss is {total} at step {self.step + 1} (datasets {drawn}, lr {lr:.3g}); stopped. "
                        f"The last good state is saved in {where or self.out / 'checkpoints'}. Lower schedule.lr, "
                        "set clip_grad, use precision bf16 instead of fp16, or check that dataset's records; "
                        "then continue with --resume"
                    )
                self._optimizer_step()
                self.step += 1
                last_state = self.sampler.state_after(micro[-1].iteration)
                rec = StepRecord(self.step, loss, lr, drawn, int(counts[2].item()), int(counts[1].item()), region)
                history.append(rec)
                window["loss"] += loss
                if region is not None:
                    window["region"] += region
                    window["region_steps"] += 1
                window["steps"] += 1
                window["samples"] += rec.samples
                window["tokens"] += rec.tokens
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(log, rec, window)
                if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save(f"step_{self.step:07d}", last_state)
                if stop_after is not None and self.step >= stop_after:
                    return TrainResult(history, self.out, None)
            final = self.save(f"step_{self.step:07d}", last_state, extra_dir=self.out / "final")
            self._say(f"done: {self.step} steps; final checkpoint {self.out / 'final'}")
            return TrainResult(history, self.out, self.out / "final" if final else None)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
            del batches

    def _forward_backward(self, micro, total_answer: float) -> torch.Tensor:
        """Backward of (sum of losses) * world / total answer tokens: with DDP's gradient
        averaging that is the token-weighted mean over every process and iteration.  Returns this
        process's ``[loss sum, answer loss sum, region loss sum, samples with a region]``."""
        info = self.dist
        scale = info.world / max(total_answer, 1.0)
        parts = torch.zeros(4, dtype=torch.float64)
        for j, tb in enumerate(micro):
            sync = j == len(micro) - 1
            ctx = self.wrapped.no_sync() if (info.active and not sync and hasattr(self.wrapped, "no_sync")) \
                else contextlib.nullcontext()
            if self.cfg.distributed == "fsdp" and hasattr(self.wrapped, "set_requires_gradient_sync"):
                self.wrapped.set_requires_gradient_sync(sync)
            batch = tb.batch.to(info.device)
            rows = None if tb.image_rows is None else tb.image_rows.to(info.device)
            with ctx:
                with self.autocast():
                    ls, _ = self.wrapped(batch, rows)
                scaled = ls * scale
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            parts[0] += float(ls.detach())
            parts[1:] += self.loss_module.parts
        return parts

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _log(self, log, rec: StepRecord, window: dict) -> None:
        now = time.perf_counter()
        dt = max(now - window["t0"], 1e-9)
        line = {
            "step": rec.step,
            "loss": window["loss"] / window["steps"],
            "step_loss": rec.loss,
            "lr": rec.lr,
            "datasets": rec.datasets,
            "samples_per_s": window["samples"] / dt,
            "tokens_per_s": window["tokens"] / dt,
            "time": time.time(),
        }
        if window["region_steps"]:  # mean over the window's steps that had samples with a region
            line["region_loss"] = window["region"] / window["region_steps"]
        if log is not None:
            log.write(json.dumps(line) + "\n")
            log.flush()
        window.update(loss=0.0, steps=0, samples=0, tokens=0, region=0.0, region_steps=0, t0=now)


def _save_full_state(model, cfg, out_dir: Path, full: dict[str, torch.Tensor]) -> Path:
    """The mgv2 checkpoint folder from gathered tensors (FSDP): same layout as save_checkpoint."""
    from safetensors.torch import save_file

    from mgv2.checkpoint import checkpoint_metadata

    out_dir.mkdir(parents=True, exist_ok=True)
    lora = {k: v for k, v in full.items() if ".lora_" in k}
    rest = {k: v.contiguous() for k, v in full.items() if ".lora_" not in k}
    save_file(rest, str(out_dir / "model.safetensors"), metadata=checkpoint_metadata(model))
    if lora:
        peft_sd = {k.removeprefix("llama_model."): v for k, v in lora.items()}
        model.llama_model.save_pretrained(str(out_dir / "adapter"), state_dict=peft_sd)
    save_yaml(cfg.with_absolute_paths(), out_dir / "config.yaml")
    return out_dir


def run_stage(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None,
              **kwargs) -> TrainResult:
    """Train one stage and close the process group. A torchrun process that exits with the gloo
    group still open can abort in interpreter teardown ("terminate called without an active
    exception", SIGABRT), so every distributed entry point goes through here."""
    trainer = Trainer(cfg, resume=resume, **kwargs)
    try:
        return trainer.train(stop_after=stop_after)
    finally:
        if trainer.dist.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
