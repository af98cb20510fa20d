"""The dataset mixture (SPEC §5): every iteration draws ONE dataset by ratio and takes that
dataset's batch size.

Deterministic and resumable by construction: every random choice is a pure function of
``(seed, what, counters)`` (a string-seeded :class:`random.Random`, the same in every process
and on every platform), so the whole state is a handful of counters:

* ``iteration``: how many iterations were drawn; the dataset of iteration ``i`` is drawn with
  the generator seeded ``"{seed}:pick:{i}"``;
* per dataset ``epoch`` and ``pos``: each dataset is read in a shuffled order that is new every
  epoch (seeded ``"{seed}:order:{name}:{epoch}"``) and continues where it stopped.

Each drawn sample also carries its own seed (``"{seed}:{name}:{epoch}:{pos}"``) for the task's
random choices (template, sentence, answer), so a sample is the same whichever worker or process
builds it.  :meth:`Mixture.state_dict` holds plain ints and strings only (``torch.load`` with
``weights_only=True`` reads it back).

Under torchrun every process runs the same mixture (same seed, same draws) and keeps its own
contiguous slice of each global batch (:func:`rank_slice`), so N processes see exactly the
samples one process would.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from mgv2.errors import MGV2Error


class MixtureError(MGV2Error, ValueError):
    """The mixture cannot be built (empty dataset, bad ratio, batch smaller than the processes)."""


@dataclass(frozen=True)
class SampleKey:
    """Which sample to build: dataset ``dataset``, record ``index``, with the task's random
    choices seeded by ``seed`` (a string)."""

    dataset: int
    index: int
    seed: str


@dataclass(frozen=True)
class Draw:
    """One iteration: the dataset drawn and the global batch of sample keys."""

    iteration: int
    dataset: int
    keys: tuple[SampleKey, ...]


def rank_slice(n: int, rank: int, world: int) -> slice:
    """Contiguous slice of ``n`` items for process ``rank`` of ``world`` (the first ``n % world``
    processes take one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class Mixture:
    """Ratio sampler over datasets of known sizes.

    ``names`` label the datasets (they seed the per-dataset orders, so adding a dataset does not
    change the others' orders); ``sizes`` are their lengths; ``ratios`` relative weights;
    ``batch_sizes`` the GLOBAL batch of one iteration of each dataset.
    """

    def __init__(
        self,
        names: Sequence[str],
        sizes: Sequence[int],
        ratios: Sequence[float],
        batch_sizes: Sequence[int],
        seed: int = 0,
    ) -> None:
        if not (len(names) == len(sizes) == len(ratios) == len(batch_sizes)) or not names:
            raise MixtureError("names, sizes, ratios and batch_sizes must be non-empty lists of one length")
        if len(set(names)) != len(names):
            raise MixtureError(f"dataset names must be unique: {list(names)}")
        for name, size, ratio, bs in zip(names, sizes, ratios, batch_sizes):
            if size <= 0:
                raise MixtureError(f"dataset {name} is empty (0 records); check its path and split")
            if not ratio > 0:
                raise MixtureError(f"dataset {name}: ratio must be > 0, got {ratio}")
            if bs <= 0:
                raise MixtureError(f"dataset {name}: batch size must be > 0, got {bs}")
        self.names = list(names)
        self.sizes = [int(s) for s in sizes]
        self.ratios = [float(r) for r in ratios]
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.seed = int(seed)
        total = sum(self.ratios)
        self._cum = list(accumulate(r / total for r in self.ratios))
        self._cum[-1] = 1.0
        self.iteration = 0
        self.epochs = [0] * len(names)
        self.positions = [0] * len(names)
        self._orders: dict[int, tuple[int, list[int]]] = {}  # dataset -> (epoch, permutation)

    # -- drawing ---------------------------------------------------------------------------
    @property
    def probabilities(self) -> list[float]:
        total = sum(self.ratios)
        return [r / total for r in self.ratios]

    def pick(self, iteration: int) -> int:
        """The dataset of iteration ``iteration`` (a pure function of seed and iteration)."""
        u = random.Random(f"{self.seed}:pick:{iteration}").random()
        return min(bisect_right(self._cum, u), len(self._cum) - 1)

    def order(self, dataset: int, epoch: int) -> list[int]:
        """The shuffled record order of ``dataset`` in ``epoch``."""
        cached = self._orders.get(dataset)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        perm = list(range(self.sizes[dataset]))
        random.Random(f"{self.seed}:order:{self.names[dataset]}:{epoch}").shuffle(perm)
        self._orders[dataset] = (epoch, perm)
        return perm

    def _take(self, d: int, n: int) -> list[SampleKey]:
        keys = []
        name = self.names[d]
        for _ in range(n):
            epoch, pos = self.epochs[d], self.positions[d]
            keys.append(SampleKey(d, self.order(d, epoch)[pos], f"{self.seed}:{name}:{epoch}:{pos}"))
            pos += 1
            if pos == self.sizes[d]:
                self.epochs[d], self.positions[d] = epoch + 1, 0
            else:
                self.positions[d] = pos
        return keys

    def next(self) -> Draw:
        """Draw the next iteration (advances the state)."""
        it = self.iteration
        d = self.pick(it)
        keys = self._take(d, self.batch_sizes[d])
        self.iteration = it + 1
        return Draw(it, d, tuple(keys))

    def __iter__(self):
        while True:
            yield self.next()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "iteration": self.iteration,
            "names": list(self.names),
            "sizes": list(self.sizes),
            "epochs": list(self.epochs),
            "positions": list(self.positions),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state.  Datasets are matched by name; a dataset that is new to
        the state starts at epoch 0; one whose size changed restarts its current epoch."""
        if int(state["seed"]) != self.seed:
            raise MixtureError(f"the saved mixture used seed {state['seed']}, this one {self.seed}")
        saved = {n: i for i, n in enumerate(state["names"])}
        self.iteration = int(state["iteration"])
        for d, name in enumerate(self.names):
            i = saved.get(name)
            if i is None:
                self.epochs[d], self.positions[d] = 0, 0
            elif int(state["sizes"][i]) != self.sizes[d]:
                self.epochs[d], self.positions[d] = int(state["epochs"][i]) + 1, 0
            else:
                self.epochs[d], self.positions[d] = int(state["epochs"][i]), int(state["positions"][i])
        self._orders.clear()
