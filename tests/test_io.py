"""gd.save / gd.load: safetensors round trips, PyTorch interop, atomic writes, refused files."""

import io
import os
import pickle

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as nn
import gpudl.optim as optim

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _nested(rng):
    return {
        "weights": {"w": gd.tensor(rng.standard_normal((3, 4)).astype(np.float32)),
                    "half": rng.standard_normal(5).astype(np.float16),
                    "double": rng.standard_normal((2, 1, 2))},
        "counts": np.array([1, 5, -3], np.int64),
        "mask": gd.tensor([True, False, True]),
        "scalar": gd.tensor(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "state": {0: {"step": 7, "buf": gd.tensor(rng.standard_normal(2))}, 12: {"step": 1}},
        "groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1, 2], "nesterov": False,
                    "name": "conv", "extra": None}],
        "layers": [gd.tensor([1.0, 2.0]), {"inner": gd.tensor([3])}],
        "inf": float("inf"), "epoch": np.int64(4), "ratio": np.float32(0.25),
    }


def _assert_same(a, b):
    if isinstance(a, (gd.Tensor, np.ndarray)):
        assert isinstance(b, gd.Tensor)
        array = a.numpy() if isinstance(a, gd.Tensor) else a
        assert b.dtype == array.dtype and b.shape == array.shape
        np.testing.assert_array_equal(b.numpy(), array)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())         # order and int keys kept
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b and type(b) in (type(a), int, float, bool)


def test_nested_round_trip(rng, tmp_path):
    obj = _nested(rng)
    path = tmp_path / "ckpt.safetensors"
    gd.save(obj, path)                                   # os.PathLike accepted
    _assert_same(obj, gd.load(str(path)))
    assert gd.load(path, device="cpu")["scalar"].device == "cpu"


def test_round_trip_through_file_objects(rng, tmp_path):
    """torch.save(obj, buffer) / torch.load(buffer): a BytesIO, or a file opened in binary."""
    obj = _nested(rng)
    buffer = io.BytesIO()
    gd.save(obj, buffer)
    buffer.seek(0)
    _assert_same(obj, gd.load(buffer))
    in_memory = safetensors_numpy.load(buffer.getvalue())        # the file's tensors, as a file
    on_disk = safetensors_numpy.load(_saved_bytes(obj, tmp_path))
    assert in_memory.keys() == on_disk.keys()
    for name in on_disk:
        np.testing.assert_array_equal(in_memory[name], on_disk[name])
    with open(tmp_path / "f.st", "wb") as f:
        gd.save(obj, f)
    with open(tmp_path / "f.st", "rb") as f:
        _assert_same(obj, gd.load(f, map_location="cpu"))


def _saved_bytes(obj, tmp_path):
    gd.save(obj, tmp_path / "bytes.st")
    return (tmp_path / "bytes.st").read_bytes()


def test_text_mode_file_objects_are_refused_before_anything_is_written(tmp_path):
    gd.save({"w": gd.ones(2)}, tmp_path / "t.st")
    with open(tmp_path / "t.st", "r") as f, pytest.raises(TypeError, match="binary reading"):
        gd.load(f)
    with open(tmp_path / "new.st", "w") as f, pytest.raises(TypeError, match="binary writing"):
        gd.save({"w": gd.ones(2)}, f)
    assert (tmp_path / "new.st").read_bytes() == b""


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"), (b"\x05" + bytes(7) + b"[1,2]", "not a safetensors file"),
    (b"PK\x03\x04" + bytes(60), "damaged zip archive")])
def test_refused_file_objects_raise_value_error(data, message, no_unpickling):
    with pytest.raises(ValueError, match=f"'the file object'.*{message}|{message}"):
        gd.load(io.BytesIO(data))


def test_the_file_is_plain_safetensors_with_dotted_names(rng, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    gd.save(_nested(rng), path)
    names = set(safetensors_numpy.load_file(path))
    assert {"weights.w", "state.0.buf", "layers.0", "layers.1.inner", "scalar"} <= names
    assert "state.0.step" not in names                  # numbers live in the JSON metadata


def test_list_at_top_level(tmp_path):
    gd.save([gd.tensor([1, 2]), 3, (4.5, "a")], tmp_path / "l.safetensors")
    out = gd.load(tmp_path / "l.safetensors")
    assert out[0].tolist() == [1, 2] and out[1:] == [3, (4.5, "a")]


def _models(torch):
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7),
                                 torch.nn.ReLU(), torch.nn.Linear(7, 3))
    tmodel.train()
    tmodel(torch.randn(8, 5))                   # moves BatchNorm's running statistics
    tmodel.eval()
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    model.eval()
    return tmodel, model


def test_torch_safetensors_file_loads_into_the_same_gpudl_model(rng, tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tmodel, model = _models(torch)
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file(tmodel.state_dict(), path)
    model.load_state_dict(gd.load(path))
    x = rng.standard_normal((4, 5)).astype(np.float32)
    expected = tmodel(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model(gd.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_gpudl_state_dict_opens_in_torch_with_torch_keys(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tmodel, model = _models(torch)
    path = tmp_path / "gpudl.safetensors"
    gd.save(model.state_dict(), path)
    loaded = safetensors_torch.load_file(path)
    assert set(loaded) == set(tmodel.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert loaded[key].dtype == tmodel.state_dict()[key].dtype
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy())
    tmodel.load_state_dict(loaded)                      # and PyTorch accepts it


def test_optimizer_checkpoint_resumes_identically(rng, tmp_path):
    init = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (3,)]]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(8)]

    def run(params, opt, steps):
        for g in steps:
            for p, gi in zip(params, g):
                p.grad = gd.tensor(gi)
            opt.step()

    straight = [gd.tensor(a, requires_grad=True) for a in init]
    run(straight, optim.Adam(straight, lr=0.05, amsgrad=True), grads)
    first = [gd.tensor(a, requires_grad=True) for a in init]
    opt = optim.Adam(first, lr=0.05, amsgrad=True)
    run(first, opt, grads[:3])
    gd.save({"params": first, "optimizer": opt.state_dict()}, tmp_path / "c.safetensors")
    ckpt = gd.load(tmp_path / "c.safetensors")
    resumed = [gd.tensor(p, requires_grad=True) for p in ckpt["params"]]
    opt2 = optim.Adam(resumed)
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999) and opt2.defaults["lr"] == 1e-3
    run(resumed, opt2, grads[3:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("gpudl must never unpickle")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


def _write(path, data):
    path.write_bytes(data)
    return path


def _valid_bytes(tmp_path):
    gd.save({"w": gd.tensor(np.arange(64, dtype=np.float32)), "epoch": 2}, tmp_path / "v.st")
    return (tmp_path / "v.st").read_bytes()


@pytest.mark.parametrize("make, message", [
    (lambda d, ok: _write(d / "empty.st", b""), "is empty"),
    (lambda d, ok: _write(d / "half.st", ok[:len(ok) // 2]), "truncated|not a valid"),
    (lambda d, ok: _write(d / "cut.st", ok[:-1]), "not a valid safetensors"),
    (lambda d, ok: _write(d / "head.st", ok[:5]), "not a safetensors file or is truncated"),
    (lambda d, ok: _write(d / "text.st", b"hello, this is text, not tensors"), "not a safetensors"),
    (lambda d, ok: _write(d / "p.pkl", pickle.dumps({"w": [1.0, 2.0]}, protocol=4)),
     "bare pickle"),
    (lambda d, ok: _write(d / "z.pt", b"PK\x03\x04" + bytes(60)), "damaged zip archive"),
    (lambda d, ok: _write(d / "json.st", (10).to_bytes(8, "little") + b"{not json}"),
     "not a valid safetensors"),
])
def test_refused_files_raise_value_error_naming_the_file(tmp_path, make, message, no_unpickling):
    path = make(tmp_path, _valid_bytes(tmp_path))
    with pytest.raises(ValueError, match=message) as info:
        gd.load(path)
    assert str(path) in str(info.value)


def test_damaged_structure_metadata(tmp_path):
    path = tmp_path / "bad.st"
    safetensors_numpy.save_file({"w": np.ones(2, np.float32)}, path,
                                metadata={"gpudl": '{"__dict__": [["w", {"__tensor__": "x"}]]}'})
    with pytest.raises(ValueError, match="damaged gpudl structure"):
        gd.load(path)


def test_save_refuses_what_it_cannot_store_and_leaves_the_file(tmp_path):
    path = tmp_path / "keep.st"
    gd.save({"w": gd.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store a function at model.act"):
        gd.save({"model": {"act": lambda x: x}}, path)
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        gd.save({(1, 2): gd.ones(1)}, path)
    with pytest.raises(ValueError, match="'a.b'"):
        gd.save({"a.b": gd.ones(1), "a": {"b": gd.ones(1)}}, path)
    with pytest.raises(TypeError, match="obj must be a tensor, or a dict.*got Linear"):
        gd.save(gd.nn.Linear(2, 2), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.st"]


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "model.st"
    gd.save({"w": gd.ones(3)}, path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors_numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        gd.save({"w": gd.zeros(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.st"]          # the temporary file is gone
