"""The dataset mixture: ratios, batch sizes, epochs, determinism, resumable position, rank slices."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mgv2.data import MixtureBatchSampler
from mgv2.mixture import Mixture, MixtureError, rank_slice


def _mix(seed=0):
    return Mixture(["a", "b", "c"], [5, 40, 7], [10, 30, 60], [2, 6, 1], seed=seed)


def test_each_iteration_takes_one_dataset_and_its_batch_size():
    m = _mix()
    for _ in range(50):
        d = m.next()
        assert len(d.keys) == m.batch_sizes[d.dataset]
        assert {k.dataset for k in d.keys} == {d.dataset}


def test_draws_follow_the_ratios():
    m = _mix()
    n = 6000
    counts = Counter(m.pick(i) for i in range(n))
    for d, p in enumerate(m.probabilities):
        assert abs(counts[d] / n - p) < 0.02, (d, counts[d] / n, p)


def test_same_seed_same_draws_other_seed_other_draws():
    a, b, c = _mix(1), _mix(1), _mix(2)
    da = [a.next() for _ in range(30)]
    assert da == [b.next() for _ in range(30)]
    assert da != [c.next() for _ in range(30)]


def test_every_record_once_per_epoch_and_new_order_each_epoch():
    m = Mixture(["only"], [7], [1.0], [3], seed=5)
    seen = [k for _ in range(7) for k in m.next().keys]  # 21 samples = 3 epochs
    epochs = [[k.index for k in seen[i : i + 7]] for i in (0, 7, 14)]
    for e in epochs:
        assert sorted(e) == list(range(7))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert len({k.seed for k in seen}) == 21  # each draw gets its own sample seed


def test_state_restores_the_exact_position():
    m = _mix(3)
    for _ in range(17):
        m.next()
    state = m.state_dict()
    rest = [m.next() for _ in range(40)]
    again = _mix(3)
    again.load_state_dict(state)
    assert [again.next() for _ in range(40)] == rest


def test_state_survives_torch_save_weights_only(tmp_path):
    m = _mix()
    for _ in range(5):
        m.next()
    torch.save({"mixture": m.state_dict()}, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)["mixture"]
    assert back == m.state_dict()


def test_adding_a_dataset_keeps_the_others_orders():
    one = Mixture(["a"], [9], [1.0], [9], seed=0)
    two = Mixture(["a", "z"], [9, 4], [1.0, 1.0], [9, 1], seed=0)
    assert one.order(0, 0) == two.order(0, 0)


@pytest.mark.parametrize("n, world", [(6, 2), (7, 2), (5, 3), (2, 2), (24, 4)])
def test_rank_slices_cover_the_batch_once(n, world):
    parts = [list(range(n))[rank_slice(n, r, world)] for r in range(world)]
    assert [x for p in parts for x in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _mix2(seed=0):
    return Mixture(["a", "b", "c"], [5, 40, 7], [10, 30, 60], [2, 6, 3], seed=seed)


def test_sampler_ranks_together_see_the_single_process_batches():
    single = MixtureBatchSampler(_mix2(4), 0, 1)
    ranks = [MixtureBatchSampler(_mix2(4), r, 2) for r in range(2)]
    its = [iter(s) for s in ranks]
    for batch in _take(iter(single), 25):
        joined = next(its[0]) + next(its[1])
        assert joined == batch
        assert single.state_after(batch[0][0]) == ranks[0].state_after(batch[0][0])


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_sampler_refuses_batches_smaller_than_the_world():
    with pytest.raises(MixtureError, match="batch_size or batch_scale"):
        MixtureBatchSampler(_mix(), 0, 2)  # dataset c has a batch of 1


def test_sampler_reports_the_state_after_each_consumed_iteration():
    s = MixtureBatchSampler(_mix(6), 0, 1)
    it = iter(s)
    batches = _take(it, 10)  # the loader prefetched 10 iterations
    state = s.state_after(batches[3][0][0])  # the loop consumed 4
    fresh = _mix(6)
    fresh.load_state_dict(state)
    assert [[(i, k) for k in fresh.next().keys] for i in range(4, 10)] == batches[4:]


def test_bad_mixtures_are_refused():
    with pytest.raises(MixtureError, match="empty"):
        Mixture(["a"], [0], [1.0], [1])
    with pytest.raises(MixtureError, match="ratio"):
        Mixture(["a"], [3], [0.0], [1])
    with pytest.raises(MixtureError, match="unique"):
        Mixture(["a", "a"], [3, 3], [1.0, 1.0], [1, 1])
    m = _mix(1)
    with pytest.raises(MixtureError, match="seed"):
        m.load_state_dict(_mix(2).state_dict())
