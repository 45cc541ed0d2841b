"""Tests of the windowed HDF5 datasets, the mixing sampler and MotionDataModule (datamodules/)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from datamodules import HDF5WindowDataset, MixedDataset, MotionDataModule, WindowSampler, gather_index
from magnet.errors import ConfigError, DataError
from magnet.geometry import tf9_compose, tf9_from_rt, tf9_inverse, yaw_matrix
from magnet.representation import NUM_NORMALISED, MotionStats, PackedLayout, person_dim, select_persons

L = 64


# ------------------------------------------------------------------------------------------------ fixtures


def make_clip(T: int, P: int, seed: int) -> np.ndarray:
    """Raw packed clip [T, P, D(P)] float32: random features, planar canonical frames with matching partner
    slots C_a^-1 C_b, 0/1 contacts, tpose_mask 1."""
    rng = np.random.default_rng(seed)
    lay = PackedLayout(P)
    x = rng.normal(size=(T, P, lay.dim)).astype(np.float32)
    yaw = torch.as_tensor(rng.uniform(-np.pi, np.pi, size=(T, P)))
    t = torch.as_tensor(rng.normal(size=(T, P, 3)))
    t[..., 1] = 0.0
    C = tf9_from_rt(yaw_matrix(yaw), t)  # [T, P, 9] float64
    x[..., lay.world_canon] = C.numpy()
    for a in range(P):
        for slot, b in enumerate(j for j in range(P) if j != a):
            x[:, a, lay.partner(slot)] = tf9_compose(tf9_inverse(C[:, a]), C[:, b]).numpy()
    x[..., lay.contacts] = rng.integers(0, 2, size=(T, P, 21))
    x[..., lay.mask] = 1.0
    return x


def make_stats(seed: int = 0) -> MotionStats:
    rng = np.random.default_rng(seed)
    return MotionStats(rng.normal(scale=0.3, size=361), rng.uniform(0.5, 2.0, size=361))


def write_dataset(
    root: Path,
    name: str,
    splits: dict[str, dict[str, np.ndarray]],
    stats: MotionStats | None = None,
    split_yaml: dict[str, list[str]] | None | bool = True,
    groups: tuple[str, ...] = ("train", "val", "test"),
) -> Path:
    """Reference layout: <root>/<name>_dataset.hdf5 (groups with [T, P, D] float32), YAML split file, npz."""
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / f"{name}_dataset.hdf5", "w") as f:
        for g in groups:
            f.create_group(g)
        for split, seqs in splits.items():
            for seq, arr in seqs.items():
                f[split].create_dataset(seq, data=np.asarray(arr, dtype=np.float32))
    if split_yaml is True:
        split_yaml = {s: list(splits.get(s, {})) for s in ("train", "val", "test")}
    if split_yaml:
        (root / f"{name}_dataset_files.txt").write_text(yaml.safe_dump(split_yaml))
    (stats or make_stats()).save(root / f"{name}_mean_std.npz")
    return root


@pytest.fixture
def duo(tmp_path: Path) -> Path:
    """Train: T = 150, 40, 64 (P = 2); val: one clip T = 100; test: one clip."""
    return write_dataset(
        tmp_path / "duo", "duo",
        {"train": {"a": make_clip(150, 2, 1), "b": make_clip(40, 2, 2), "c": make_clip(64, 2, 3)},
         "val": {"v": make_clip(100, 2, 4)}, "test": {"t": make_clip(70, 2, 5)}},
    )


@pytest.fixture
def mixed_persons(tmp_path: Path) -> Path:
    """Train clips with 1, 2 and 3 persons."""
    return write_dataset(
        tmp_path / "mix", "mix",
        {"train": {"solo": make_clip(80, 1, 11), "pair": make_clip(90, 2, 12), "trio": make_clip(100, 3, 13)},
         "val": {}},
    )


def window_ds(root: Path, name: str, **kw) -> HDF5WindowDataset:
    return HDF5WindowDataset(root / f"{name}_dataset.hdf5", kw.pop("split", "train"), **kw)


# --------------------------------------------------------------------------------------------------- tests


def test_batch_shapes_and_types(duo):
    dm = MotionDataModule([{"name": "duo", "dir": str(duo)}], batch_size=4, person_num=2, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, L, 2, 383) and batch["x"].dtype == torch.float32
    assert batch["valid"].shape == (4, L, 2) and batch["valid"].dtype == torch.bool
    assert batch["num_persons"].tolist() == [2, 2, 2, 2] and batch["num_persons"].dtype == torch.long
    assert batch["dataset"].tolist() == [0, 0, 0, 0]
    assert torch.equal(batch["valid"], batch["x"][..., -1] > 0.5)
    assert dm.layout == PackedLayout(2) and dm.layout.dim == 383
    assert np.allclose(dm.stats.mean, MotionStats.load(duo / "duo_mean_std.npz").mean)


def test_deterministic_slicing_positions(duo):
    ds = window_ds(duo, "duo", slicing="deterministic")
    assert len(ds) == 150 // L + 1 + 40 // L + 1 + 64 // L + 1 == 6
    specs = ds.window_specs(np.arange(6), None)
    # clip a (T=150): (s*64) mod 87 + 64 -> 64, 64+64=128, 128 mod 87 + 64 = 105
    # clip b (T=40): mod max(-23, 1) -> 64; clip c (T=64): mod 1 -> 64, 64
    assert [(c, s) for c, s, _ in specs] == [(0, 64), (0, 128), (0, 105), (1, 64), (2, 64), (2, 64)]
    raw = make_clip(150, 2, 1)
    norm = ds.stats.normalise(raw)
    item = ds[2]  # clip frames 41 .. 104
    np.testing.assert_allclose(item["x"].numpy(), norm[41:105], rtol=1e-5, atol=1e-5)
    short = ds[3]  # T = 40: 40 real frames, then 24 padding frames of zeros
    assert short["valid"].sum(0).tolist() == [40, 40]
    assert torch.count_nonzero(short["x"][40:]) == 0


def test_first_slicing(duo):
    ds = window_ds(duo, "duo", slicing="first")
    assert {s for _, s, _ in ds.window_specs(np.arange(len(ds)), None)} == {L}
    np.testing.assert_allclose(ds[0]["x"].numpy(), ds.stats.normalise(make_clip(150, 2, 1))[:L], atol=1e-5)


def test_random_uniform_len_range_and_padding_mask(duo):
    ds = window_ds(duo, "duo", slicing="random_uniform_len")
    rng = np.random.default_rng(0)
    specs = ds.window_specs(np.zeros(3000, dtype=np.int64), rng)  # clip a, T = 150
    starts = np.array([s for _, s, _ in specs]) - L  # clip coordinates
    assert starts.min() == -L // 2 and starts.max() == 150 - L // 2 - 1
    mix = MixedDataset([ds])
    batch = mix.__getitems__([(0, c, s, p) for c, s, p in specs[:200]])
    for row, (_, s, _) in enumerate(specs[:200]):
        f0 = s - L
        expected = min(f0 + L, 150) - max(f0, 0)
        assert batch["valid"][row, :, 0].sum().item() == expected
    clean = ds.window_specs(np.zeros(2000, dtype=np.int64), rng, is_first_clean=True)
    assert min(s for _, s, _ in clean) == L and max(s for _, s, _ in clean) == 150 + L // 2 - 1


def test_normalisation_applied(tmp_path):
    stats = make_stats(3)
    clip = make_clip(70, 2, 7)
    mean, _ = stats.vectors(2)
    clip[5, :, : NUM_NORMALISED(2)] = mean  # frame 5 is the raw mean for both persons
    root = write_dataset(tmp_path / "n", "n", {"train": {"a": clip}}, stats=stats)
    item = window_ds(root, "n", slicing="first")[0]
    x = item["x"].numpy()
    np.testing.assert_allclose(x[5, :, : NUM_NORMALISED(2)], 0.0, atol=1e-5)
    np.testing.assert_array_equal(x[:, :, NUM_NORMALISED(2):], clip[:L, :, NUM_NORMALISED(2):])  # contacts, mask
    std = stats.vectors(2)[1]
    np.testing.assert_allclose(x[7, 1, :10], (clip[7, 1, :10] - mean[:10]) / std[:10], rtol=1e-5, atol=1e-5)


def test_void_persons_are_zero_and_masked(tmp_path):
    root = write_dataset(tmp_path / "s", "s", {"train": {"solo": make_clip(70, 1, 1)}})
    ds = window_ds(root, "s", slicing="first", person_num=3, shuffle_persons=True)
    item = ds[0]
    x = item["x"]
    assert x.shape == (L, 3, person_dim(3)) and item["num_persons"] == 1
    assert torch.count_nonzero(x[:, 1:]) == 0  # void persons: all zeros, tpose_mask 0
    assert item["valid"][:, 0].all() and not item["valid"][:, 1:].any()
    assert torch.count_nonzero(x[:, 0, PackedLayout(3).partners]) == 0  # partner slots toward void persons
    solo = ds.stats.normalise(make_clip(70, 1, 1))[:L, 0]
    np.testing.assert_allclose(x[:, 0, :352].numpy(), solo[:, :352], atol=1e-5)
    np.testing.assert_array_equal(x[:, 0, -22:].numpy(), solo[:, -22:])


def test_random_subset_when_clip_has_more_persons(tmp_path):
    root = write_dataset(tmp_path / "t", "t", {"train": {"trio": make_clip(70, 3, 5)}})
    ds = window_ds(root, "t", slicing="first", person_num=2)
    rng = np.random.default_rng(1)
    subsets = [p for _, _, p in ds.window_specs(np.zeros(300, dtype=np.int64), rng, shuffle_persons=False)]
    assert set(subsets) == {(0, 1), (0, 2), (1, 2)}  # random subsets, ascending without shuffle
    assert [p for _, _, p in ds.window_specs(np.zeros(3, dtype=np.int64), None)] == [(0, 1)] * 3  # val: first k
    item = ds.__getitems__([(0, L, (2, 0))])
    norm = ds.stats.normalise(make_clip(70, 3, 5))[:L]
    np.testing.assert_allclose(item["x"][0].numpy(), select_persons(norm, [2, 0]), atol=1e-6)
    assert item["num_persons"].tolist() == [2]
    solo = window_ds(root, "t", slicing="first", person_num=1, shuffle_persons=True)  # the VQ-VAE setting
    specs = solo.window_specs(np.zeros(200, dtype=np.int64), rng)
    assert {p for _, _, p in specs} == {(0,), (1,), (2,)}
    one = solo.__getitems__([specs[0]])["x"][0]
    assert one.shape == (L, 1, 374)
    np.testing.assert_allclose(one[:, 0].numpy(), np.delete(norm[:, specs[0][2][0]], np.s_[352:370], axis=-1), atol=1e-6)


def test_batch_mixes_one_two_and_three_person_clips(mixed_persons):
    dm = MotionDataModule([{"name": "mix", "dir": mixed_persons}], batch_size=64, person_num=2, seed=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    n = batch["num_persons"]
    assert set(n.tolist()) == {1, 2}
    assert batch["x"].shape == (len(n), L, 2, 383)
    solo = n == 1
    assert not batch["valid"][solo][:, :, 1].any()
    assert torch.count_nonzero(batch["x"][solo][:, :, 1]) == 0
    assert torch.count_nonzero(batch["x"][solo][:, :, 0, PackedLayout(2).partners]) == 0
    assert dm.val_dataloader() == []  # empty val split: validation is skipped, training is not blocked


def test_person_shuffle_keeps_partner_blocks_consistent(tmp_path):
    stats = make_stats(4)
    root = write_dataset(tmp_path / "p", "p", {"train": {"trio": make_clip(120, 3, 9)}}, stats=stats)
    ds = window_ds(root, "p", slicing="random_uniform_len", person_num=3, shuffle_persons=True)
    specs = ds.window_specs(np.zeros(64, dtype=np.int64), np.random.default_rng(2))
    assert len({p for _, _, p in specs}) > 3  # several orders were drawn
    batch = MixedDataset([ds]).__getitems__([(0, *s) for s in specs])
    x = torch.as_tensor(stats.denormalise(batch["x"].double().numpy()))
    lay = PackedLayout(3)
    valid = batch["valid"]
    C = x[..., lay.world_canon]
    for a in range(3):
        for slot, b in enumerate(j for j in range(3) if j != a):
            want = tf9_compose(tf9_inverse(C[:, :, a]), C[:, :, b])
            got = x[:, :, a, lay.partner(slot)]
            m = valid[:, :, a]
            torch.testing.assert_close(got[m], want[m], atol=1e-4, rtol=1e-4)
    raw = make_clip(120, 3, 9)
    for row, (_, start, persons) in enumerate(specs[:5]):
        f = np.arange(start - L, start)
        inside = (f >= 0) & (f < 120)
        for k, p in enumerate(persons):  # betas follow the chosen person
            np.testing.assert_allclose(x[row, inside, k, :10].numpy(), raw[f[inside], p, :10], atol=1e-4)


def test_gather_index_matches_select_persons():
    x = np.random.default_rng(0).normal(size=(5, 3, person_dim(3))).astype(np.float32)
    flat = np.concatenate([x.reshape(5, -1), np.zeros((5, 1), np.float32)], axis=1)
    for order in ([1, 2, 0], [2, -1], [0, -1, -1, 1]):
        got = flat[:, gather_index(3, order)].reshape(5, len(order), -1)
        np.testing.assert_array_equal(got, select_persons(x, order))


def test_epoch_length_and_mixing_weights(tmp_path):
    a = write_dataset(tmp_path / "a", "a", {"train": {f"s{i}": make_clip(130, 2, i) for i in range(3)}})
    b = write_dataset(tmp_path / "b", "b", {"train": {"x": make_clip(64, 2, 9)}})
    datasets = [{"name": "a", "dir": a}, {"name": "b", "dir": b}]
    dm = MotionDataModule(datasets, batch_size=16, seed=5)
    dm.setup("fit")
    assert len(dm.train_set) == 3 * 3 + 2 == 11
    counts = np.bincount(torch.cat([bt["dataset"] for bt in dm.train_dataloader()]).numpy(), minlength=2)
    assert counts.tolist() == [9, 2]  # concatenation: every window once
    weighted = WindowSampler(dm.train_set, weights=[0.2, 0.8], epoch_length=5000, seed=5)
    ds_idx = np.array([s[0] for s in weighted])
    assert len(ds_idx) == len(weighted) == 5000
    assert abs((ds_idx == 1).mean() - 0.8) < 0.03
    again = WindowSampler(dm.train_set, weights=[0.2, 0.8], epoch_length=50, seed=5)
    first, second = list(again), list(again)
    again.set_epoch(0)
    assert list(again) == first and first != second  # seeded by (seed, epoch)
    dm_w = MotionDataModule([{**datasets[0], "weight": 1}, {**datasets[1], "weight": 3}], epoch_length=40, seed=0)
    dm_w.setup("fit")
    assert dm_w.weights == [1.0, 3.0] and len(dm_w.train_dataloader().sampler) == 40


def test_cache_is_bounded(tmp_path):
    clips = {f"c{i}": make_clip(100, 2, i) for i in range(5)}
    root = write_dataset(tmp_path / "c", "c", {"train": clips})
    one = (100 + 2 * L) * (2 * 383 + 1) * 4  # bytes of one padded clip
    ds = window_ds(root, "c", slicing="first", cache_size_gb=2.5 * one / 1e9)
    for i in range(5):
        ds[ds.locate(np.arange(len(ds)))[0].tolist().index(i)]
        assert ds.cache.nbytes <= ds.cache.max_bytes
    assert len(ds.cache) == 2 and set(ds.cache._items) == {3, 4}
    no_cache = window_ds(root, "c", slicing="first", cache_size_gb=0)
    no_cache[0]
    assert len(no_cache.cache) == 0


def test_workers_give_the_same_batches(mixed_persons):
    def batches(workers):
        dm = MotionDataModule([{"name": "mix", "dir": mixed_persons}], batch_size=3, person_num=2,
                              num_workers=workers, seed=11)
        dm.setup("fit")
        return list(dm.train_dataloader())

    ref, par = batches(0), batches(2)
    assert len(ref) == len(par) == 2  # 2 + 2 + 2 windows in batches of 3
    for a, b in zip(ref, par):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_val_and_test_loaders_are_deterministic(duo):
    dm = MotionDataModule([{"name": "duo", "dir": duo}], batch_size=2, val_batch_size=8, seed=0)
    dm.setup("fit")
    v1, v2 = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(v1) == 1 and v1[0]["x"].shape == (2, L, 2, 383)  # val T = 100 -> 2 windows
    assert torch.equal(v1[0]["x"], v2[0]["x"])
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["x"].shape == (2, L, 2, 383)


def test_errors(tmp_path, duo):
    with pytest.raises(DataError, match="magnet-preprocess"):
        MotionDataModule([{"name": "nope", "dir": tmp_path / "missing"}]).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nope_dataset.hdf5.*magnet-preprocess.*synthetic"):
        MotionDataModule([{"name": "nope", "dir": tmp_path / "empty", "stats": duo / "duo_mean_std.npz"}]).setup()
    with pytest.raises(ConfigError, match="unknown key"):
        MotionDataModule([{"name": "duo", "dir": duo, "weigth": 1}])
    with pytest.raises(ConfigError, match="slice"):
        MotionDataModule([{"name": "duo", "dir": duo}], train_slice="random_variable_len")

    no_test = write_dataset(tmp_path / "nt", "nt", {"train": {"a": make_clip(70, 2, 0)}}, groups=("train", "val"))
    dm = MotionDataModule([{"name": "nt", "dir": no_test}], seed=0)
    dm.setup("fit")  # no test group does not matter for fitting
    with pytest.raises(DataError, match="no split 'test'"):
        dm.setup("test")

    bad = write_dataset(tmp_path / "bad", "bad", {"train": {"a": make_clip(70, 2, 0)[..., :-9]}}, split_yaml=None)
    with pytest.raises(DataError, match=r"bad_dataset.hdf5 train/a: feature dimension D=374 does not match P=2"):
        MotionDataModule([{"name": "bad", "dir": bad}]).setup("fit")

    with pytest.raises(DataError, match="split 'train' has no sequences"):
        write_dataset(tmp_path / "e", "e", {"val": {"a": make_clip(70, 2, 0)}})
        MotionDataModule([{"name": "e", "dir": tmp_path / "e"}]).setup("fit")

    other = write_dataset(tmp_path / "o", "o", {"train": {"a": make_clip(70, 2, 0)}}, stats=make_stats(9))
    dm = MotionDataModule([{"name": "duo", "dir": duo}, {"name": "o", "dir": other, "stats": other / "o_mean_std.npz"}])
    with pytest.raises(ConfigError, match="one file"):
        dm.setup("fit")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_nan_in_a_clip_is_one_line_naming_file_sequence_and_frame(tmp_path, num_workers):
    clip = make_clip(70, 2, 0)
    clip[33, 1, 12] = np.inf
    root = write_dataset(tmp_path / "n", "n", {"train": {"ok": make_clip(70, 2, 1), "bad": clip}})
    dm = MotionDataModule([{"name": "n", "dir": root}], sequence_len=16, batch_size=4, num_workers=num_workers,
                          seed=0)
    with pytest.raises(DataError) as err:
        for _ in dm.train_dataloader():
            pass
    # a worker's error arrives with the worker's traceback in its message; the loader restores the one line
    assert str(err.value) == (f"{root / 'n_dataset.hdf5'} train/bad: NaN/Inf value at frame 33, person 1, "
                              "feature 12; fix the raw data and rebuild the dataset")


def test_split_yaml_missing_uses_all_sequences(tmp_path):
    root = write_dataset(tmp_path / "y", "y", {"train": {"b": make_clip(70, 2, 0), "a": make_clip(20, 2, 1)}},
                         split_yaml=None)
    ds = window_ds(root, "y")
    assert [c.name for c in ds.clips] == ["a", "b"] and len(ds) == 1 + 2
    listed = write_dataset(tmp_path / "z", "z", {"train": {"b": make_clip(70, 2, 0), "a": make_clip(20, 2, 1)}},
                           split_yaml={"train": ["b"]})
    assert [c.name for c in window_ds(listed, "z").clips] == ["b"]
    with pytest.raises(DataError, match="no sequence 'ghost'"):
        (listed / "z_dataset_files.txt").write_text(yaml.safe_dump({"train": ["b", "ghost"]}))
        window_ds(listed, "z")
