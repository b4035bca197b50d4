"""gpudl.samplers and the DataLoader options that use them, against torch.utils.data."""

import numpy as np
import pytest
import torch
import torch.utils.data as tdata

import gpudl as gd
from gpudl.data import (BatchSampler, DataLoader, RandomSampler, SequentialSampler,
                        SubsetRandomSampler, TensorDataset, WeightedRandomSampler)


def test_sequential_sampler_matches_torch():
    data = list(range(7))
    assert list(SequentialSampler(data)) == list(tdata.SequentialSampler(data))
    assert len(SequentialSampler(data)) == 7


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (9, 3, True),
                                                      (2, 5, False), (2, 5, True), (0, 2, False)])
def test_batch_sampler_matches_torch(n, batch_size, drop_last):
    order = list(np.random.default_rng(n).permutation(n))
    ours = BatchSampler(order, batch_size, drop_last)
    theirs = tdata.BatchSampler(order, batch_size, drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_random_sampler_is_a_reproducible_permutation():
    data = list(range(20))
    first = list(RandomSampler(data, generator=np.random.default_rng(4)))
    assert sorted(first) == data and first != data
    assert list(RandomSampler(data, generator=np.random.default_rng(4))) == first
    gd.manual_seed(1)
    sampler = RandomSampler(data)
    a, b = list(sampler), list(sampler)                     # a new order each epoch
    gd.manual_seed(1)
    assert list(sampler) == a and list(sampler) == b and a != b


@pytest.mark.parametrize("replacement, num_samples", [(True, 50), (False, 45), (False, 7)])
def test_random_sampler_lengths_and_coverage_as_torch(replacement, num_samples):
    data = list(range(20))
    ours = list(RandomSampler(data, replacement, num_samples, generator=np.random.default_rng(0)))
    theirs = list(tdata.RandomSampler(data, replacement, num_samples))
    assert len(ours) == len(theirs) == num_samples
    assert all(0 <= i < 20 for i in ours)
    if not replacement:                # whole permutations first, as torch draws them
        counts = np.bincount(ours, minlength=20)
        assert counts.max() - counts.min() <= 1


def test_subset_random_sampler_splits_one_dataset_as_torch(rng):
    """The train/validation split of the tutorials: each epoch visits exactly the given
    indices, in a new order, the same orders again after gd.manual_seed."""
    x = rng.standard_normal((12, 2)).astype(np.float32)
    train = list(rng.permutation(12)[:8])
    theirs = tdata.DataLoader(tdata.TensorDataset(torch.tensor(x)), batch_size=3,
                              sampler=tdata.SubsetRandomSampler(train))
    ours = DataLoader(TensorDataset(x), batch_size=3, sampler=SubsetRandomSampler(train))
    assert len(ours) == len(theirs) == 3
    gd.manual_seed(5)
    epochs = [np.concatenate([xb.numpy() for (xb,) in ours]) for _ in range(2)]
    for seen in epochs:                 # the rows of ``train``, each once, in some order
        np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(x[train], axis=0))
    assert not np.array_equal(epochs[0], epochs[1])
    gd.manual_seed(5)
    np.testing.assert_array_equal(np.concatenate([xb.numpy() for (xb,) in ours]), epochs[0])
    sampler = SubsetRandomSampler(gd.tensor(train), generator=np.random.default_rng(0))
    assert sorted(sampler) == sorted(tdata.SubsetRandomSampler(train)) and len(sampler) == 8


def test_weighted_sampler_follows_the_weights():
    weights = [0.0, 1.0, 3.0, 6.0]
    drawn = list(WeightedRandomSampler(weights, 20000, generator=np.random.default_rng(2)))
    frequency = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(frequency, np.array(weights) / 10, atol=0.015)
    no_repeat = list(WeightedRandomSampler(gd.tensor(weights), 3, replacement=False,
                                           generator=np.random.default_rng(3)))
    assert sorted(no_repeat) == [1, 2, 3]
    assert len(WeightedRandomSampler(weights, 5)) == len(tdata.WeightedRandomSampler(weights, 5))


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: WeightedRandomSampler([1, -1], 2), ValueError, "non-negative"),
    (lambda: WeightedRandomSampler([0, 0], 2), ValueError, "not all zero"),
    (lambda: WeightedRandomSampler([1, 1], 3, replacement=False), ValueError, "without"),
    (lambda: WeightedRandomSampler([1, 1], 0), ValueError, "num_samples must be a positive"),
    (lambda: BatchSampler([1], 0, False), ValueError, "batch_size must be a positive"),
    (lambda: BatchSampler([1], 2, 1), TypeError, "drop_last must be a bool"),
    (lambda: RandomSampler([1], replacement=1), TypeError, "replacement must be a bool"),
    (lambda: DataLoader([1, 2], sampler=[0], shuffle=True), ValueError, "mutually exclusive"),
    (lambda: DataLoader([1, 2], batch_sampler=[[0]], batch_size=2), ValueError,
     "mutually exclusive"),
])
def test_bad_sampler_arguments_are_refused(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def _both(x, y, **options):
    ours = DataLoader(TensorDataset(x, y), **options)
    theirs = tdata.DataLoader(tdata.TensorDataset(torch.tensor(x), torch.tensor(y)), **options)
    return list(ours), list(theirs)


def test_loader_with_sampler_batch_sampler_and_no_batching_match_torch(rng):
    x, y = rng.standard_normal((10, 3)).astype(np.float32), rng.integers(0, 4, 10)
    order = [9, 2, 4, 0, 1, 7, 3, 8, 6, 5]
    for options in ({"sampler": order, "batch_size": 3},
                    {"batch_sampler": [[1, 2], [9], [0, 5, 5]]},
                    {"batch_size": None, "sampler": order[:4]},
                    {"sampler": SequentialSampler(range(10)), "batch_size": 4, "drop_last": True}):
        ours, theirs = _both(x, y, **options)
        assert len(ours) == len(theirs)
        for (xb, yb), (txb, tyb) in zip(ours, theirs):
            np.testing.assert_array_equal(xb.numpy(), txb.numpy())
            np.testing.assert_array_equal(yb.numpy(), tyb.numpy())


def test_collate_fn_receives_the_samples(rng):
    x, y = rng.standard_normal((5, 2)).astype(np.float32), np.arange(5)
    loader = DataLoader(TensorDataset(x, y), batch_size=2, collate_fn=lambda s: len(s))
    assert list(loader) == [2, 2, 1]
