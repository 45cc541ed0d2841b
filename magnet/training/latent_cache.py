"""Latent cache for DFoT training: encode every training window of the split once instead of on every step.

The reference encodes each batch with the frozen VQ-VAE on every training step (spec 3.4 step 2, spec 8). Windows
are random, but only in two ways: the window start (at most ``T + L + 1`` distinct starts per clip in the padded
coordinates of :class:`datamodules.windows.HDF5WindowDataset`, whatever the slicing mode) and the persons kept. The
VQ-VAE is per person and reads only a person's own fields (body 6D, canonical root, betas, delta, tpose mask), which
person selection and partner reordering never change. So a window's latents are a function of
``(dataset, clip, clip person, start)`` alone, and :class:`LatentCache` stores the code indices of EVERY such window:
``int16 [P_clip, T + L + 1, L / 4]`` per clip (``-1`` = invalid latent, decoded as the zero vector as
``PoseVQVAE.encode`` does). That is 2 bytes per latent, ``8 L`` bytes per clip frame and person (512 B for
``L = 64``), e.g. about 100 MB for 100 k frames x 2 persons.

Exactness: a cached window is encoded from exactly the frames the on-the-fly path sees (same 64-frame window, same
zero padding at the window borders, same float32 values), so cached latents EQUAL on-the-fly ones for every window,
edges included. The only possible differences are float rounding of batched convolutions of different batch sizes,
which could flip a code that sits on a tie between two nearest codes; the tests check that all codes agree.

Why not the cheaper per-clip cache (encode each whole clip once at its 4 phase offsets and slice windows out of
it)? Its latents differ from window encodings wherever the encoder's receptive field crosses the window border:
there the window encoding sees zero padding, the clip encoding real neighbouring frames. The receptive field is
+-8 latent frames (+-32 frames) for the tiny VQ-VAE and +-22 (+-86 frames) for the paper one, wider than the whole
16-latent window, so with the paper VQ-VAE EVERY latent of a window would differ, and the DFoT would train on latents
the sampler never produces (it encodes 64-frame windows). Measured with the demo's trained tiny VQ-VAE on the
synthetic data (``bench/bench_dfot.py --phase-check``): 27.4 % of the codes differ (mean relative L2 difference of
the latents 3.0 %); 84.7 % (11.5 %) for the first and last 2 latents of a window, 0.3 % (0.0 %) for the 4 central
ones.

Cost: building encodes ``sum_c P_c (T_c + L + 1)`` windows once; a step then saves its ``B x P`` window encodes
(measured on 2 CPU cores by ``bench/bench_dfot.py``: 1.24x steps/s for the paper sizes at batch 32, 1.3x for tiny;
the share is larger where the transformer is relatively cheaper). The cache pays off once
``total_steps x B x P`` is much larger than ``sum_c P_c (T_c + L + 1)``: the paper recipe encodes 300 k x 256 x 2
= 154 M windows, so any dataset of up to a few million person-frames gains (memory 512 B per person-frame is the
other limit); the synthetic demo (64 k windows, break-even after about 530 of its 600 steps) does not.
Each process (DDP rank) builds its own copy; DataLoader workers share it through fork (copy-on-write).

Use: :meth:`LatentCache.build(vqvae, train_set)` then wrap the split with :class:`CachedLatentDataset`, whose
batches gain ``latent_idx`` long ``[B, L/4, P]``; :meth:`LatentCache.dequantize` turns them into latents
``[B, L/4, P, Dz]``. :class:`magnet.training.dfot_module.DFoTModule` does this when ``latent_cache=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from magnet.errors import ConfigError
from magnet.models.vqvae import PoseVQVAE
from magnet.representation import PackedLayout, person_dim

__all__ = ["CachedLatentDataset", "LatentCache", "encode_clip_windows", "person_frames"]


def person_frames(clip: np.ndarray, num_persons: int, person: int) -> tuple[Tensor, Tensor, Tensor]:
    """One person's VQ-VAE inputs from a padded clip array (``HDF5WindowDataset.clip_array``).

    ``clip`` float32 ``[F, P * D(P) + 1]`` (persons flattened, then a zero column) -> ``value[F, 135]`` (body 6D ++
    canonical root), ``enc_cond[F, 19]`` (betas ++ delta) and ``mask[F]`` bool (tpose_mask > 0.5).
    """
    lay = PackedLayout(num_persons)
    d = person_dim(num_persons)
    if clip.ndim != 2 or clip.shape[1] < num_persons * d:
        raise ValueError(f"person_frames: clip array {clip.shape} does not hold {num_persons} persons of {d} dims")
    x = torch.from_numpy(np.ascontiguousarray(clip[:, person * d:(person + 1) * d]))
    value = torch.cat([x[:, lay.body_rot], x[:, lay.canon_root]], dim=-1)
    enc_cond = torch.cat([x[:, lay.betas], x[:, lay.delta]], dim=-1)
    return value, enc_cond, x[:, lay.mask][:, 0] > 0.5


@torch.no_grad()
def encode_clip_windows(vqvae: PoseVQVAE, clip: np.ndarray, num_persons: int, sequence_len: int,
                        batch_size: int = 512, device: torch.device | str | None = None) -> np.ndarray:
    """Code indices of every window of a padded clip array: ``[P, F - L + 1, L / f]`` (int16/int32, ``-1`` invalid).

    Window ``s`` covers padded frames ``s .. s + L - 1`` and is encoded exactly as ``vqvae.encode`` would encode
    it in a batch: encoder on the window alone, nearest code, latent k valid iff frame ``f k`` is valid.
    """
    L, f = int(sequence_len), vqvae.factor
    if L % f:
        raise ConfigError(f"sequence_len {L} is not a multiple of the VQ-VAE time factor {f}")
    device = torch.device(device) if device is not None else next(vqvae.parameters()).device
    dtype = next(vqvae.parameters()).dtype
    n_frames = clip.shape[0]
    n_starts = n_frames - L + 1
    if n_starts < 1:
        raise ValueError(f"encode_clip_windows: padded clip of {n_frames} frames is shorter than a window of {L}")
    codes = np.empty((num_persons, n_starts, L // f), dtype=_code_dtype(vqvae.config.codebook_size))
    offsets = torch.arange(L, device=device)
    for p in range(num_persons):
        value, enc_cond, mask = (t.to(device) for t in person_frames(clip, num_persons, p))
        value, enc_cond = value.to(dtype), enc_cond.to(dtype)
        for lo in range(0, n_starts, batch_size):
            starts = torch.arange(lo, min(lo + batch_size, n_starts), device=device)
            idx = starts[:, None] + offsets                                   # [n, L]
            z = vqvae.encode_continuous(value[idx], enc_cond[idx])            # [n, L/f, Dz]
            _, code = vqvae.quantizer.quantize(z)                             # [n, L/f]
            valid = mask[idx][:, ::f]
            code = torch.where(valid, code, torch.full_like(code, -1))
            codes[p, lo:lo + len(starts)] = code.cpu().numpy()
    return codes


def _code_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.int16) if codebook_size <= np.iinfo(np.int16).max else np.dtype(np.int32)


class LatentCache:
    """Code indices of every window of every clip-person of a training split (see the module docstring).

    ``codes[k][c]``: dataset ``k``, clip ``c`` -> ``[P_clip, T_c + L + 1, L / f]`` (``-1`` = invalid latent).
    ``codebook``: ``[K, Dz]`` (a copy of the frozen VQ-VAE's, to turn indices into latents).
    """

    def __init__(self, codes: Sequence[Sequence[np.ndarray]], codebook: Tensor, sequence_len: int,
                 frames_per_latent: int):
        self.codes = [list(c) for c in codes]
        self.codebook = codebook.detach().clone()
        self.sequence_len = int(sequence_len)
        self.frames_per_latent = int(frames_per_latent)
        self.build_seconds = float("nan")

    @property
    def num_latents(self) -> int:
        return self.sequence_len // self.frames_per_latent

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for per_ds in self.codes for a in per_ds)

    @property
    def num_windows(self) -> int:
        """Windows encoded: ``sum_c P_c (T_c + L + 1)``."""
        return sum(a.shape[0] * a.shape[1] for per_ds in self.codes for a in per_ds)

    @classmethod
    @torch.no_grad()
    def build(cls, vqvae: PoseVQVAE, windows: Any, batch_size: int = 512, device: torch.device | str | None = None,
              progress: Callable[[int, int], None] | None = None) -> LatentCache:
        """Encode every window start of every clip of ``windows`` (a ``datamodules.MixedDataset``: ``.datasets``,
        each with ``.clips``, ``.sequence_len`` and ``clip_array(c)``). ``progress(done, total)`` after each clip.
        The VQ-VAE is used as it is (put it in eval mode first)."""
        datasets = list(windows.datasets)
        lens = {int(d.sequence_len) for d in datasets}
        if len(lens) != 1:
            raise ConfigError(f"latent cache: datasets of a mix need one sequence_len, got {sorted(lens)}")
        L = lens.pop()
        t0 = time.perf_counter()
        total = sum(len(d.clips) for d in datasets)
        done = 0
        codes: list[list[np.ndarray]] = []
        for d in datasets:
            per_ds = []
            for c, info in enumerate(d.clips):
                arr = d.clip_array(c)
                if arr.shape[0] != info.num_frames + 2 * L:
                    raise ValueError(f"latent cache: clip {info.name} array has {arr.shape[0]} frames, expected "
                                     f"T + 2L = {info.num_frames + 2 * L}")
                per_ds.append(encode_clip_windows(vqvae, arr, info.num_persons, L, batch_size, device))
                done += 1
                if progress is not None:
                    progress(done, total)
            codes.append(per_ds)
        cache = cls(codes, vqvae.quantizer.codebook.cpu(), L, vqvae.factor)
        cache.build_seconds = time.perf_counter() - t0
        return cache

    def lookup(self, specs: Sequence[tuple], person_num: int) -> Tensor:
        """Code indices of window specs ``(dataset, clip, start, persons)`` -> long ``[B, L/f, person_num]``.

        Persons beyond ``len(persons)`` (void persons) get ``-1``.
        """
        out = np.full((len(specs), self.num_latents, int(person_num)), -1, dtype=np.int64)
        for row, (ds, clip, start, persons) in enumerate(specs):
            if persons:
                codes = self.codes[ds][clip]
                if not 0 <= start < codes.shape[1]:
                    raise IndexError(f"latent cache: window start {start} out of range for clip {clip} of "
                                     f"dataset {ds} ({codes.shape[1]} starts cached)")
                out[row, :, :len(persons)] = codes[list(persons), start].T
        return torch.from_numpy(out)

    def dequantize(self, idx: Tensor) -> Tensor:
        """``idx[...]`` long (``-1`` = invalid) -> latents ``[..., Dz]`` (zero vectors where invalid)."""
        codebook = self.codebook.to(idx.device)
        z = F.embedding(idx.clamp_min(0), codebook)
        return torch.where((idx >= 0)[..., None], z, torch.zeros_like(z))


class CachedLatentDataset(torch.utils.data.Dataset):
    """A ``datamodules.MixedDataset`` whose batches also carry the cached code indices ``latent_idx`` long
    ``[B, L/f, P]``. Indices must be window specs ``(dataset, clip, start, persons)`` as
    ``datamodules.WindowSampler`` yields them; ``.datasets``, ``.offsets`` and ``.lengths`` are the base's so the
    sampler works unchanged."""

    def __init__(self, base: Any, cache: LatentCache):
        self.base = base
        self.cache = cache
        self.person_num = int(base.datasets[0].person_num)

    @property
    def datasets(self) -> list:
        return self.base.datasets

    @property
    def offsets(self) -> np.ndarray:
        return self.base.offsets

    @property
    def lengths(self) -> np.ndarray:
        return self.base.lengths

    def __len__(self) -> int:
        return len(self.base)

    def __getitems__(self, indices: Sequence[Any]) -> dict[str, Tensor]:
        if not all(isinstance(i, tuple) for i in indices):
            raise TypeError("CachedLatentDataset needs window specs (dataset, clip, start, persons) from "
                            "datamodules.WindowSampler, not integer indices")
        batch = self.base.__getitems__(list(indices))
        batch["latent_idx"] = self.cache.lookup(indices, self.person_num)
        return batch

    def __getitem__(self, index: Any) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in batch.items()}
