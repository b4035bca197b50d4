"""gd.save's file hygiene: reserved names, modes, symlinks, temporary files, long names, memory
and nesting limits (each case failed before the fix)."""

import json
import os

import numpy as np
import pytest

import gpudl as gd
import gpudl.io as gio

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def test_a_key_named_metadata_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        gd.save({"__metadata__": gd.ones(2), "w": gd.ones(1)}, tmp_path / "m.st")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def test_new_files_get_the_umask_mode_and_overwrites_keep_theirs(tmp_path, umask):
    path = tmp_path / "w.st"
    gd.save({"w": gd.ones(2)}, path)
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    gd.save({"w": gd.zeros(2)}, path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    umask(0o077)
    gd.save({"w": gd.ones(2)}, tmp_path / "private.st")
    assert os.stat(tmp_path / "private.st").st_mode & 0o777 == 0o600


def test_saving_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.st"
    gd.save({"w": gd.ones(2)}, target)
    link = tmp_path / "latest.st"
    link.symlink_to(target)
    gd.save({"w": gd.full((2,), 7.0)}, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert gd.load(target)["w"].tolist() == [7.0, 7.0]
    assert sorted(os.listdir(tmp_path / "real")) == ["model.st"]


def test_the_temporary_file_is_removed_when_the_final_rename_fails(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk went away")
    monkeypatch.setattr(gio.os, "replace", refuse)
    with pytest.raises(OSError, match="disk went away"):
        gd.save({"w": gd.ones(2)}, tmp_path / "m.st")
    assert os.listdir(tmp_path) == []


def test_stale_temporary_files_of_killed_saves_are_cleaned_by_the_next_save(tmp_path):
    old = os.path.getmtime(tmp_path) - 3600
    stale = [tmp_path / ".m.st.k3j_9x2a.tmp", tmp_path / ".m.st.0123abcd.tmp"]
    fresh = tmp_path / ".m.st.feedbeef.tmp"            # a save of the same path in progress
    other = tmp_path / ".other.st.0123abcd.tmp"         # another file's
    for path in stale + [fresh, other]:
        path.write_bytes(b"partial")
    for path in stale + [other]:
        os.utime(path, (old, old))
    gd.save({"w": gd.ones(2)}, tmp_path / "m.st")
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, other.name, "m.st"])


def test_names_up_to_255_bytes_work(tmp_path):
    name = "é" * 100 + "w" * 51 + ".st"                   # 200 + 51 + 3 = 254 bytes
    assert len(name.encode()) == 254
    gd.save({"w": gd.ones(3)}, tmp_path / name)
    assert gd.load(tmp_path / name)["w"].tolist() == [1.0, 1.0, 1.0]
    assert os.listdir(tmp_path) == [name]


def test_a_file_larger_than_free_memory_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "big.st"
    gd.save({"w": gd.ones(1000)}, path)
    monkeypatch.setattr(gio, "_available_memory", lambda: 1000)
    with pytest.raises(ValueError, match="more than the .* of memory free"):
        gd.load(path)


def test_a_header_claiming_huge_tensors_is_refused_before_the_parser_runs(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 40],
                               "data_offsets": [0, 1 << 42]}}).encode()
    path = tmp_path / "liar.st"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(ValueError, match="memory free|not a valid"):
        gd.load(path)


def test_a_parser_panic_becomes_a_value_error(tmp_path, monkeypatch):
    import safetensors

    class PanicException(BaseException):     # what pyo3 raises: not an Exception subclass
        pass

    def panic(*args, **kwargs):
        raise PanicException("capacity overflow")
    gd.save({"w": gd.ones(2)}, tmp_path / "m.st")
    monkeypatch.setattr(safetensors, "safe_open", panic)
    with pytest.raises(ValueError, match="capacity overflow"):
        gd.load(tmp_path / "m.st")


def test_self_reference_and_deep_nesting_are_value_errors_at_save(tmp_path):
    loop = {"a": [1]}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match="refers to itself at a.1"):
        gd.save(loop, tmp_path / "x.st")
    deep = gd.ones(1)
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="nesting deeper"):
        gd.save({"d": deep}, tmp_path / "x.st")
    assert os.listdir(tmp_path) == []


def test_deeply_nested_metadata_is_a_value_error_at_load(tmp_path):
    path = tmp_path / "deep.st"
    skeleton = "[" * 50_000 + "]" * 50_000
    safetensors_numpy.save_file({"w": np.ones(2, np.float32)}, path,
                                metadata={"gpudl": skeleton})
    with pytest.raises(ValueError, match="damaged gpudl structure"):
        gd.load(path)
