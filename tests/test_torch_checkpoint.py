"""gd.load reads PyTorch's zip checkpoints without importing torch and without running anything
from them; crafted files are refused."""

import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as nn
import gpudl.optim as optim

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 conv on cuda

torch = pytest.importorskip("torch")


def _torch_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    model.train()
    model(torch.randn(3, 1, 8, 8))                       # moves the running statistics
    return model.eval()


def _gpudl_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)).eval()


def test_a_pth_state_dict_loads_into_the_same_gpudl_model(tmp_path, rng):
    tmodel = _torch_model()
    path = tmp_path / "model.pth"
    torch.save(tmodel.state_dict(), path)
    model = _gpudl_model()
    model.load_state_dict(gd.load(path, map_location="cpu", weights_only=True))
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    expected = tmodel(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model(gd.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_state_dict_torch_saved_into_a_buffer_loads(rng):
    tmodel = _torch_model()
    buffer = io.BytesIO()
    torch.save({"model": tmodel.state_dict(), "epoch": 4}, buffer)
    buffer.seek(0)
    saved = gd.load(buffer)
    assert saved["epoch"] == 4
    model = _gpudl_model()
    model.load_state_dict(saved["model"])
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    expected = tmodel(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model(gd.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_loading_imports_no_torch(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(_torch_model().state_dict(), path)
    code = ("import sys, gpudl as gd; sd = gd.load(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(len(sd))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env={**os.environ, "GPUDL_DEVICE": "cpu"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(_torch_model().state_dict()))


def test_optimizer_state_views_tied_weights_and_dtypes(tmp_path):
    linear = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(linear.parameters(), lr=0.01)
    linear(torch.randn(4, 3)).sum().backward()
    opt.step()
    base = torch.arange(12.0)
    obj = {"opt": opt.state_dict(), "view": base[2:11:3], "transposed": linear.weight.t(),
           "tied": [linear.weight, linear.weight], "empty": torch.zeros(0, 3),
           "bf16": torch.tensor([1.5, -2.25, 3.0e38], dtype=torch.bfloat16),
           "ints": torch.tensor([-3, 2**40]), "flags": torch.tensor([True, False]),
           "half": torch.tensor([0.5, 65504.0], dtype=torch.float16), "step": 3, "name": "x"}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    out = gd.load(path)
    assert out["step"] == 3 and out["name"] == "x"
    np.testing.assert_array_equal(out["view"].numpy(), base[2:11:3].numpy())
    np.testing.assert_array_equal(out["transposed"].numpy(), linear.weight.detach().t().numpy())
    np.testing.assert_array_equal(out["tied"][1].numpy(), linear.weight.detach().numpy())
    assert out["empty"].shape == (0, 3)
    assert out["bf16"].dtype == gd.bfloat16          # kept, bit for bit
    np.testing.assert_array_equal(out["bf16"].numpy().view(np.int16),
                                  obj["bf16"].view(torch.int16).numpy())
    assert out["ints"].tolist() == [-3, 2**40] and out["flags"].tolist() == [True, False]
    assert out["half"].dtype == gd.float16
    groups = out["opt"]["param_groups"]
    assert groups[0]["betas"] == (0.9, 0.999) and groups[0]["params"] == [0, 1]
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(out["opt"]["state"][0][key].numpy(),
                                      opt.state_dict()["state"][0][key].numpy())
    mine = [gd.tensor(p.detach().numpy(), requires_grad=True) for p in linear.parameters()]
    gd_opt = optim.Adam(mine)
    gd_opt.load_state_dict(out["opt"])                  # an optimizer resumes from it
    assert gd_opt.param_groups[0]["lr"] == 0.01


def test_load_arguments(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert gd.load(path, weights_only=False)["w"].tolist() == [1.0, 1.0]   # always weights-only
    with pytest.raises(TypeError, match="map_location must be a device"):
        gd.load(path, map_location={"cuda:0": "cpu"})
    with pytest.raises(TypeError, match="not both"):
        gd.load(path, "cpu", map_location="cpu")
    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda'"):
        gd.load(path, map_location="tpu")


# --- crafted files -------------------------------------------------------------------------------

class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())


class _CraftPickler(pickle.Pickler):
    """Writes the records torch.save writes, with whatever sizes and offsets a test wants."""

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            return torch._utils._rebuild_tensor_v2, obj.args
        return NotImplemented


def _craft(path, obj, storages, compress=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    _CraftPickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", compress) as archive:
        archive.writestr("ckpt/data.pkl", buffer.getvalue())
        archive.writestr("ckpt/byteorder", "little")
        for key, data in storages.items():
            archive.writestr(f"ckpt/data/{key}", data)
    return path


_SIX = np.arange(6, dtype=np.float32).tobytes()


def test_a_crafted_file_in_torchs_format_loads(tmp_path):
    """The positive control for the crafted cases below: the craft is the real format."""
    path = _craft(tmp_path / "ok.pth", {"w": _Tensor(_Storage("0", 6), 1, (2, 2), (1, 2))},
                  {"0": _SIX})
    np.testing.assert_array_equal(gd.load(path)["w"].numpy(),       # w[i, j] = s[1 + i + 2j]
                                  np.array([[1, 3], [2, 4]], np.float32))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalPayload(_Payload):
    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


@pytest.mark.parametrize("payload, name", [(_Payload, "system"), (_EvalPayload, "eval")])
def test_a_payload_never_runs(tmp_path, payload, name):
    marker = tmp_path / "pwned"
    path = _craft(tmp_path / "evil.pth", {"w": _Tensor(_Storage("0", 6), 0, (6,), (1,)),
                                          "x": payload(marker)}, {"0": _SIX})
    with pytest.raises(ValueError, match=f"names .*{name}.*which a state dict does not need"):
        gd.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj, storages, message", [
    ({"w": _Tensor(_Storage("0", 6), 4, (3,), (1,))}, {"0": _SIX}, "reaches element 6"),
    ({"w": _Tensor(_Storage("0", 6), 0, (2, 4), (3, 1))}, {"0": _SIX}, "reaches element"),
    ({"w": _Tensor(_Storage("0", 8), 0, (6,), (1,))}, {"0": _SIX}, "holds 24 bytes, not the 8"),
    ({"w": _Tensor(_Storage("1", 6), 0, (6,), (1,))}, {"0": _SIX}, "not in the archive"),
    ({"w": _Tensor(_Storage("../0", 6), 0, (6,), (1,))}, {"0": _SIX}, "not in the archive"),
    ({"w": _Tensor(_Storage("0", 6), -1, (6,), (1,))}, {"0": _SIX}, "malformed"),
    ({"w": _Tensor(_Storage("0", 6), 0, (1 << 40, 1 << 40), (0, 0))}, {"0": _SIX},
     "more memory than"),
    ({"w": {1, 2}}, {}, "set, which a state dict does not need"),
])
def test_bad_records_are_refused(tmp_path, obj, storages, message):
    with pytest.raises(ValueError, match=message):
        gd.load(_craft(tmp_path / "bad.pth", obj, storages))


def test_values_no_state_dict_holds_are_refused(tmp_path):
    path = tmp_path / "bytes.pth"
    with zipfile.ZipFile(path, "w") as archive:           # protocol 4: bytes and sets by opcode
        archive.writestr("ckpt/data.pkl", pickle.dumps({"w": b"raw", "s": {1}}, protocol=4))
    with pytest.raises(ValueError, match="holds a (bytes|set)"):
        gd.load(path)


def test_compressed_members_are_refused_before_decompression(tmp_path):
    bomb = bytes(50 << 20)                                # 50 MB of zeros deflate to ~50 KB
    path = _craft(tmp_path / "bomb.pth", {"w": _Tensor(_Storage("0", len(bomb) // 4), 0,
                                                       (len(bomb) // 4,), (1,))},
                  {"0": bomb}, compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(ValueError, match="is compressed"):
        gd.load(path)


def test_deep_nesting_and_truncation(tmp_path):
    depth = 100_000              # written by opcodes: pickling it in Python would overflow
    nested = b"\x80\x02" + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + pickle.STOP
    path = tmp_path / "deep.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ckpt/data.pkl", nested)
    with pytest.raises(ValueError, match="nested too deeply"):
        gd.load(path)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(4)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ValueError, match=str(cut)):
        gd.load(cut)


def test_a_legacy_torch_pickle_is_refused_clearly(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="bare pickle .*before PyTorch 1.6"):
        gd.load(path)
