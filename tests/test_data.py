"""gpudl.data: TensorDataset, DataLoader, collate, random_split and the offline data sets."""

import sys
from collections import namedtuple

import numpy as np
import pytest

import gpudl as gd
from gpudl.data import (
    DataLoader,
    Dataset,
    TensorDataset,
    default_collate,
    load_digits,
    load_sunspots,
    random_split,
    sliding_windows,
)


def _data(rng, n=11):
    return rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 5, n)


def test_tensor_dataset_items_and_length(rng):
    x, y = _data(rng)
    ds = TensorDataset(gd.tensor(x), y)           # Tensors and arrays alike
    assert len(ds) == 11
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi.numpy(), x[4])
    assert yi.item() == y[4]


def test_tensor_dataset_size_mismatch_names_shapes(rng):
    with pytest.raises(ValueError, match=r"same first size.*\(5, 3\).*\(4,\)"):
        TensorDataset(np.zeros((5, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()


@pytest.mark.parametrize("n, batch_size, drop_last", [
    (11, 4, False), (11, 4, True), (12, 4, True), (3, 5, False), (3, 5, True), (7, 1, False),
    (0, 3, False),
])
def test_batches_in_order(rng, n, batch_size, drop_last):
    x, y = _data(rng, n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    full = n // batch_size
    expected = full if drop_last or n % batch_size == 0 else full + 1
    assert len(loader) == len(batches) == expected
    seen = 0
    for xb, yb in batches:
        assert xb.shape[0] == yb.shape[0] and xb.shape[0] <= batch_size
        np.testing.assert_array_equal(xb.numpy(), x[seen:seen + xb.shape[0]])
        np.testing.assert_array_equal(yb.numpy(), y[seen:seen + xb.shape[0]])
        seen += xb.shape[0]
    assert seen == (full * batch_size if drop_last else n)


def _epoch_rows(loader):
    return np.concatenate([xb.numpy()[:, 0] for xb, _ in loader])


def test_shuffle_is_a_permutation_reproducible_with_manual_seed(rng):
    x, y = _data(rng, 50)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    gd.manual_seed(3)
    first, second = _epoch_rows(loader), _epoch_rows(loader)
    assert sorted(first) == sorted(x[:, 0]) and not np.array_equal(first, x[:, 0])
    assert not np.array_equal(first, second)             # a new order every epoch
    gd.manual_seed(3)
    np.testing.assert_array_equal(_epoch_rows(loader), first)
    np.testing.assert_array_equal(_epoch_rows(loader), second)


def test_shuffle_with_own_seed_ignores_the_global_generator(rng):
    x, y = _data(rng, 30)
    runs = []
    for global_seed in (1, 2):
        gd.manual_seed(global_seed)
        loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, seed=5)
        runs.append([_epoch_rows(loader), _epoch_rows(loader)])
    np.testing.assert_array_equal(runs[0], runs[1])
    gen_loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True,
                            generator=np.random.default_rng(5))
    np.testing.assert_array_equal(_epoch_rows(gen_loader), runs[0][0])


def test_drop_last_with_shuffle_covers_distinct_samples(rng):
    x, y = _data(rng, 10)
    rows = _epoch_rows(DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True,
                                  drop_last=True))
    assert len(rows) == 9 and len(set(rows)) == 9


class Pairs(Dataset):
    """A generic data set whose samples mix every collatable type."""

    Point = namedtuple("Point", ["a", "b"])

    def __init__(self, rng, n):
        self.images = rng.standard_normal((n, 2, 2))
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": self.images[i], "label": i % 3, "weight": 0.5 * i, "flag": i % 2 == 0,
                "name": f"s{i}", "point": self.Point(gd.tensor([i, -i]), np.float32(i))}


def test_default_collate_of_dicts_tuples_numbers_arrays(rng):
    ds = Pairs(rng, 5)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 2, 2) and batch["image"].dtype == np.float64
    np.testing.assert_array_equal(batch["image"].numpy(), ds.images[:4])
    assert batch["label"].dtype == np.int64 and batch["label"].tolist() == [0, 1, 2, 0]
    assert batch["weight"].dtype == np.float32
    np.testing.assert_allclose(batch["weight"].numpy(), [0, 0.5, 1, 1.5])
    assert batch["flag"].dtype == np.bool_ and batch["flag"].tolist() == [True, False] * 2
    assert batch["name"] == ["s0", "s1", "s2", "s3"]
    assert isinstance(batch["point"], Pairs.Point)
    assert batch["point"].a.tolist() == [[0, 0], [1, -1], [2, -2], [3, -3]]
    assert batch["point"].b.tolist() == [0, 1, 2, 3]


def test_collate_lists_and_bad_lengths():
    assert [t.tolist() for t in default_collate([[1, 2.0], [3, 4.0]])] == [[1, 3], [2.0, 4.0]]
    with pytest.raises(ValueError, match="different lengths"):
        default_collate([(1, 2), (3,)])
    with pytest.raises(ValueError, match=r"different shapes \[\(2,\), \(3,\)\]"):
        default_collate([np.zeros(2), np.zeros(3)])


def test_fast_tensor_path_equals_sample_by_sample_collate(rng):
    x, y = _data(rng, 13)
    kwargs = dict(batch_size=4, shuffle=True, seed=9)
    fast = list(DataLoader(TensorDataset(x, y), **kwargs))
    slow = list(DataLoader(TensorDataset(x, y), collate_fn=default_collate, **kwargs))
    for (a, b), (c, d) in zip(fast, slow):
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), d.numpy())


def test_custom_collate_fn(rng):
    x, y = _data(rng, 6)
    loader = DataLoader(TensorDataset(x, y), batch_size=4,
                        collate_fn=lambda samples: len(samples))
    assert list(loader) == [4, 2]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(batch_size=True), ValueError, "batch_size"),
    (dict(collate_fn=3), TypeError, "collate_fn must be callable"),
    (dict(generator="seed"), TypeError, "generator must be"),
    (dict(generator=1, seed=2), ValueError, "not both"),
])
def test_loader_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        DataLoader(TensorDataset(np.zeros((3, 1))), **kwargs)
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        DataLoader(iter([1, 2]))


def test_random_split(rng):
    ds = TensorDataset(np.arange(10))
    parts = random_split(ds, [6, 4], seed=0)
    values = [sorted(int(p[i][0].item()) for i in range(len(p))) for p in parts]
    assert [len(p) for p in parts] == [6, 4]
    assert sorted(values[0] + values[1]) == list(range(10))
    assert [len(p) for p in random_split(ds, [0.7, 0.3], seed=0)] == [7, 3]
    assert [len(p) for p in random_split(ds, [1 / 3] * 3, seed=0)] == [4, 3, 3]
    with pytest.raises(ValueError, match="sum to the data set's length 10"):
        random_split(ds, [5, 4])


def test_concat_dataset_as_torch(rng):
    torch = pytest.importorskip("torch")
    torch_data = torch.utils.data
    parts = [np.arange(n) + 100 * i for i, n in enumerate(rng.integers(1, 5, 3))]
    ours = gd.data.ConcatDataset([TensorDataset(p) for p in parts[:2]]) + TensorDataset(parts[2])
    theirs = torch_data.ConcatDataset([torch_data.TensorDataset(torch.from_numpy(p))
                                       for p in parts])
    assert len(ours) == len(theirs)
    assert [int(ours[i][0].item()) for i in range(-len(ours), len(ours))] == \
        [int(theirs[i][0].item()) for i in range(-len(theirs), len(theirs))]
    assert [x.tolist() for (x,) in DataLoader(ours, batch_size=3)] == \
        [x.tolist() for (x,) in torch_data.DataLoader(theirs, batch_size=3)]
    with pytest.raises(IndexError, match=f"index {len(ours)} is out of range"):
        ours[len(ours)]
    with pytest.raises(ValueError, match="empty"):
        gd.data.ConcatDataset([])


def _streamed(data, rng_values, **options):
    class Stream(data.IterableDataset):
        def __init__(self, values):
            self.values = values

        def __iter__(self):
            for i, v in enumerate(self.values):
                yield {"x": v, "label": i % 3}

    stream = Stream(rng_values[:7]) + Stream(rng_values[7:])
    # batch_size=None: Python numbers stay numbers, NumPy rows become tensors
    return [(b["x"].tolist(), b["label"] if isinstance(b["label"], int) else b["label"].tolist())
            for b in data.DataLoader(stream, **options)]


@pytest.mark.parametrize("options", [dict(batch_size=3), dict(batch_size=4, drop_last=True),
                                     dict(batch_size=None), dict(batch_size=2, shuffle=False)])
def test_iterable_dataset_batches_the_stream_as_torch(options, rng):
    torch = pytest.importorskip("torch")
    values = rng.standard_normal((10, 2))
    assert _streamed(gd.data, values, **options) == _streamed(torch.utils.data, values, **options)


def test_iterable_dataset_refuses_order_options():
    class Stream(gd.data.IterableDataset):
        def __iter__(self):
            return iter(range(4))

    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(Stream(), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified sampler option"):
        DataLoader(Stream(), sampler=[0, 1])


def test_a_stream_without_length_lists_and_len_raises_type_error():
    """list(loader) probes len(); a stream has none: TypeError (ignored by list), as torch."""
    class Stream(gd.data.IterableDataset):
        def __iter__(self):
            return iter(range(5))

    loader = DataLoader(Stream(), batch_size=2)
    assert [b.tolist() for b in list(loader)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(TypeError, match="has no len"):
        len(loader)


def test_a_dataset_without_len_or_getitem_is_refused_by_name():
    class NoLength(gd.data.Dataset):
        def __getitem__(self, index):
            return index

    with pytest.raises(TypeError, match="must define __len__ and __getitem__.*got NoLength"):
        DataLoader(NoLength())
    assert [b.tolist() for b in DataLoader(NoLength(), sampler=[3, 1], batch_size=2)] == [[3, 1]]
    with pytest.raises(NotImplementedError, match="Bare: a Dataset subclass must define "
                                                  "__getitem__"):
        type("Bare", (gd.data.Dataset,), {})()[0]


def test_load_digits_is_the_real_data_set():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    ref = sklearn_datasets.load_digits()
    np.testing.assert_allclose(images.numpy()[:, 0] * 16, ref.images)
    assert images.numpy().min() == 0 and images.numpy().max() == 1
    assert np.bincount(labels.numpy()).tolist() == np.bincount(ref.target).tolist()
    arrays = load_digits(as_tensors=False)
    assert isinstance(arrays[0], np.ndarray)


def test_missing_optional_dependency_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)     # makes the import fail
    with pytest.raises(ImportError, match=r"pip install gpudl\[data\]"):
        load_digits()
    monkeypatch.setitem(sys.modules, "statsmodels.datasets.sunspots", None)
    with pytest.raises(ImportError, match="load_sunspots needs the optional package"):
        load_sunspots()


def test_load_sunspots():
    pytest.importorskip("statsmodels")
    years, values = load_sunspots()
    assert years.shape == values.shape == (309,)
    assert years.numpy()[0] == 1700 and years.numpy()[-1] == 2008
    np.testing.assert_array_equal(np.diff(years.numpy()), 1)
    assert values.dtype == np.float32 and values.numpy()[:5].tolist() == [5, 11, 16, 23, 36]
    assert (values.numpy() >= 0).all()


@pytest.mark.parametrize("window, horizon", [(1, 1), (4, 2), (9, 1)])
def test_sliding_windows_against_a_loop(rng, window, horizon):
    series = rng.standard_normal(10).astype(np.float32)
    inputs, targets = sliding_windows(series, window, horizon)
    n = len(series) - window - horizon + 1
    assert inputs.shape == (n, window, 1) and targets.shape == (n, horizon)
    for i in range(n):
        np.testing.assert_array_equal(inputs[i, :, 0], series[i:i + window])
        np.testing.assert_array_equal(targets[i], series[i + window:i + window + horizon])
    t_in, t_out = sliding_windows(gd.tensor(series), window, horizon)
    np.testing.assert_array_equal(t_in.numpy(), inputs)
    np.testing.assert_array_equal(t_out.numpy(), targets)
    with pytest.raises(ValueError, match="window"):
        sliding_windows(series, 10, 1)
