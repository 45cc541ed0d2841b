"""Tests for magnet.data.hdf5 and magnet.data.splits: round trips, atomic writes and every validation error."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from magnet.data import dataset_files
from magnet.data.hdf5 import HDF5Writer, list_sequences, open_dataset, read_sequence
from magnet.data.splits import read_split_csv, read_split_yaml, write_split_csv, write_split_yaml
from magnet.errors import DataError
from magnet.representation import person_dim


def clip(T: int, P: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(T, P, person_dim(P))).astype(np.float32)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "toy_dataset.hdf5"
    data = {("train", "a"): clip(20, 2, 1), ("train", "b"): clip(7, 1, 2), ("test", "c"): clip(5, 3, 3)}
    with HDF5Writer(path) as w:
        for (split, name), x in data.items():
            w.add(split, name, x, attrs={"scenario": "handshake", "source_fps": 120} if name == "a" else None)
    return path, data


def test_round_trip_and_root_attrs(dataset):
    path, data = dataset
    assert list_sequences(path, "train") == ["a", "b"]
    assert list_sequences(path, "val") == []
    assert list_sequences(path, "test") == ["c"]
    for (split, name), x in data.items():
        y = read_sequence(path, split, name)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, x)
    with open_dataset(path) as f:
        assert f.fps == 30 and f.format == "magnet-1"
        assert f.splits == ["test", "train", "val"]
        assert f.attrs("train", "a") == {"scenario": "handshake", "source_fps": 120}
        assert f.attrs("train", "b") == {}
        assert f.shape("test", "c") == (5, 3, 392)
    with h5py.File(path, "r") as h:  # uncompressed by default
        assert h["train/a"].compression is None and h["train/a"].dtype == np.float32
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy_dataset.hdf5"]  # no temp file left


def test_compression_option_round_trips(tmp_path):
    x = clip(9, 2)
    with HDF5Writer(tmp_path / "z.hdf5", compression="lzf") as w:
        w.add("val", "s", x)
    np.testing.assert_array_equal(read_sequence(tmp_path / "z.hdf5", "val", "s"), x)
    with pytest.raises(DataError, match="compression"):
        HDF5Writer(tmp_path / "q.hdf5", compression="zstd")


def test_exception_inside_writer_leaves_nothing(tmp_path):
    path = tmp_path / "out" / "d_dataset.hdf5"
    with pytest.raises(RuntimeError, match="boom"), HDF5Writer(path) as w:
        w.add("train", "a", clip(4, 1))
        raise RuntimeError("boom")
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
    # a previous good file is kept untouched when a rewrite fails
    with HDF5Writer(path) as w:
        w.add("train", "old", clip(3, 1))
    with pytest.raises(DataError), HDF5Writer(path) as w:
        w.add("train", "new", clip(3, 1))
        w.add("train", "new", clip(3, 1))  # duplicate name
    assert list_sequences(path, "train") == ["old"]
    assert [p.name for p in path.parent.iterdir()] == ["d_dataset.hdf5"]


def test_writer_rejects_bad_input(tmp_path):
    path = tmp_path / "w.hdf5"
    bad = clip(4, 2)
    bad[2, 1, 17] = np.nan
    cases = [
        (("train", "x", np.zeros((4, 2, 380))), r"D=380.*P=2"),
        (("train", "x", np.zeros((4, 383))), "shape"),
        (("train", "x", bad), "frame 2, person 1, feature 17"),
        (("training", "x", clip(2, 1)), "unknown split"),
        (("train", "a/b", clip(2, 1)), "invalid sequence name"),
    ]
    for args, msg in cases:
        with pytest.raises(DataError, match=msg), HDF5Writer(path) as w:
            w.add(*args)
        assert not path.exists()
    w = HDF5Writer(path)
    with pytest.raises(RuntimeError):
        w.add("train", "x", clip(2, 1))


def test_missing_file_and_not_hdf5(tmp_path):
    missing = tmp_path / "nope_dataset.hdf5"
    with pytest.raises(DataError, match=r"dataset file not found: .*nope_dataset.hdf5 \(run magnet-preprocess"):
        open_dataset(missing)
    with pytest.raises(DataError, match="not found"):
        list_sequences(missing, "train")
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(DataError, match=r"not an HDF5 file: .*junk.hdf5"):
        read_sequence(junk, "train", "a")
    with pytest.raises(DataError, match="not an HDF5 file"):
        open_dataset(tmp_path)  # a directory


def test_missing_split_and_sequence(dataset, tmp_path):
    path, _ = dataset
    with pytest.raises(DataError, match=r"toy_dataset.hdf5 has no split 'dev' \(available: test, train, val\)"):
        list_sequences(path, "dev")
    with pytest.raises(DataError, match=r"toy_dataset.hdf5.*split 'train' has no sequence 'zzz'"):
        read_sequence(path, "train", "zzz")
    # reference files may lack a split group altogether
    ref = tmp_path / "ref.hdf5"
    with h5py.File(ref, "w") as h:
        h.create_group("train").create_dataset("s", data=clip(3, 2))
    with open_dataset(ref) as f:
        assert f.has_split("train") and not f.has_split("val")
        with pytest.raises(DataError, match=r"no split 'val' \(available: train\)"):
            f.sequences("val")


def test_reference_style_file_reads_unchanged(tmp_path):
    """No root attrs, float64 data, one extra group: reads as float32 with the default fps."""
    ref = tmp_path / "dd100_dataset.hdf5"
    x = np.random.default_rng(5).normal(size=(11, 2, 383))
    with h5py.File(ref, "w") as h:
        h.create_group("train").create_dataset("Jive_005_001", data=x)
        h.create_group("val")
        h.create_group("test")
    with open_dataset(ref) as f:
        assert f.fps == 30 and f.format is None
        assert f.sequences("train") == ["Jive_005_001"]
        y = f.read("train", "Jive_005_001")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x.astype(np.float32))


def test_reader_reports_nan_and_dimension_errors(tmp_path):
    path = tmp_path / "bad_dataset.hdf5"
    x = clip(6, 2)
    x[4, 0, 300] = np.inf
    with h5py.File(path, "w") as h:
        g = h.create_group("train")
        g.create_dataset("inf_seq", data=x)
        g.create_dataset("wrong_dim", data=np.zeros((3, 2, 374), np.float32))
        g.create_dataset("flat", data=np.zeros((3, 383), np.float32))
    with pytest.raises(DataError, match=r"bad_dataset.hdf5 train/inf_seq: NaN/Inf value at frame 4, person 0, "
                                        r"feature 300"):
        read_sequence(path, "train", "inf_seq")
    with pytest.raises(DataError, match=r"bad_dataset.hdf5 train/wrong_dim: feature dimension D=374 does not "
                                        r"match P=2 persons \(expected 383\)"):
        read_sequence(path, "train", "wrong_dim")
    with pytest.raises(DataError, match="train/flat: shape"):
        read_sequence(path, "train", "flat")
    # validation can be skipped for speed when the file is trusted
    assert np.isinf(read_sequence(path, "train", "inf_seq", validate=False)).any()


def test_dataset_files_names(tmp_path):
    files = dataset_files(tmp_path, "DD100")
    assert files.hdf5 == tmp_path / "dd100_dataset.hdf5"
    assert files.split_yaml == tmp_path / "dd100_dataset_files.txt"
    assert files.stats == tmp_path / "dd100_mean_std.npz"
    assert files.split_csv_dir == tmp_path / "dd100_data_split"


# -------------------------------------------------------------------------------------------------- splits


def test_split_yaml_round_trip_and_missing_keys(tmp_path):
    path = tmp_path / "toy_dataset_files.txt"
    splits = {"train": ["Jive_005_001", "007", "a b"], "test": ["c"]}
    write_split_yaml(path, splits)
    assert read_split_yaml(path) == {"train": ["Jive_005_001", "007", "a b"], "val": [], "test": ["c"]}
    assert [p.name for p in tmp_path.iterdir()] == ["toy_dataset_files.txt"]
    # a hand-written reference file: only train, an empty val
    path.write_text("train:\n  - x\n  - y\nval:\n")
    assert read_split_yaml(path) == {"train": ["x", "y"], "val": [], "test": []}
    path.write_text("")
    assert read_split_yaml(path) == {"train": [], "val": [], "test": []}


def test_split_yaml_errors(tmp_path):
    path = tmp_path / "s_dataset_files.txt"
    with pytest.raises(DataError, match="split file not found: .*s_dataset_files.txt"):
        read_split_yaml(path)
    path.write_text("train: [a, b\nval: [c]\n")
    with pytest.raises(DataError, match=r"s_dataset_files.txt is not valid YAML"):
        read_split_yaml(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(DataError, match="must be a YAML mapping"):
        read_split_yaml(path)
    path.write_text("train: abc\n")
    with pytest.raises(DataError, match="'train' must be a list"):
        read_split_yaml(path)
    path.write_text("tain: [a]\n")
    with pytest.raises(DataError, match=r"unknown split\(s\) \['tain'\]"):
        read_split_yaml(path)
    with pytest.raises(DataError, match="unknown split"):
        write_split_yaml(tmp_path / "w.txt", {"dev": ["a"]})
    assert not (tmp_path / "w.txt").exists()


def test_split_csv_round_trip_and_errors(tmp_path):
    d = tmp_path / "toy_data_split"
    write_split_csv(d, {"train": ["s1", "s2"], "val": [], "test": ["s3"]})
    assert sorted(p.name for p in d.iterdir()) == ["test_data.csv", "train_data.csv", "val_data.csv"]
    assert (d / "train_data.csv").read_text() == "scene_name\ns1\ns2\n"
    assert (d / "val_data.csv").read_text() == "scene_name\n"
    assert read_split_csv(d) == {"train": ["s1", "s2"], "val": [], "test": ["s3"]}
    (d / "val_data.csv").unlink()
    assert read_split_csv(d)["val"] == []
    (d / "test_data.csv").write_text("name\ns3\n")
    with pytest.raises(DataError, match=r"test_data.csv must have the single header column 'scene_name'"):
        read_split_csv(d)
    (d / "test_data.csv").write_text("scene_name\ns3,extra\n")
    with pytest.raises(DataError, match="row 2 has 2 columns"):
        read_split_csv(d)
    with pytest.raises(DataError, match="split directory not found"):
        read_split_csv(tmp_path / "absent")
