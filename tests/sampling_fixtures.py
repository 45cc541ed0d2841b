"""Tiny trained DFoT checkpoints for the sampler tests (built once per test session, a few seconds on a CPU).

``build_checkpoints(data_root, out_root, persons=(1, 2, 3))`` trains a tiny VQ-VAE for a few steps on the synthetic
data, then one tiny DFoT per person count for a few steps, and writes for each ``P``:
``out_root/p<P>/dfot.safetensors`` + ``vqvae.safetensors`` (what training exports) and ``out_root/p<P>/last.ckpt``
(a Lightning-format checkpoint dict with the module's state and ``checkpoint["magnet"]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from datamodules import MotionDataModule


def _datamodule(root: Path, person_num: int, batch_size: int) -> MotionDataModule:
    dm = MotionDataModule(datasets=[{"name": "synthetic", "dir": str(root / "synthetic")}], sequence_len=64,
                          person_num=person_num, batch_size=batch_size, num_workers=0, seed=0, epoch_length=4096)
    dm.setup("fit")
    return dm


def _train(module, dm, steps: int, lr: float = 2e-3) -> None:
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    it = iter(dm.train_dataloader())
    module.train()
    for step in range(steps):
        loss = module.training_step(next(it), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


def build_checkpoints(data_root: Path, out_root: Path, persons=(1, 2, 3), steps: int = 15) -> dict[int, Path]:
    with warnings.catch_warnings():
        # the default-skeleton notice and Lightning's "log() without a Trainer": expected in this manual loop
        warnings.simplefilter("ignore")
        return _build(data_root, out_root, persons, steps)


def _build(data_root: Path, out_root: Path, persons, steps: int) -> dict[int, Path]:
    from magnet.training.dfot_module import DFoTModule
    from magnet.training.vqvae_module import VQVAEModule

    torch.manual_seed(0)
    dm1 = _datamodule(data_root, 1, 32)
    vq = VQVAEModule(model="tiny", stats=dm1.stats)
    _train(vq, dm1, steps)
    stage1 = vq.export_weights(out_root / "stage1" / "vqvae.safetensors")
    out = {}
    for P in persons:
        torch.manual_seed(P)
        dm = _datamodule(data_root, P, 8)
        module = DFoTModule(vqvae=str(stage1), model="tiny", num_persons=P, lr=2e-3, warmup_steps=1,
                            total_steps=1000, consistency_warmup_steps=1, stats=dm.stats)
        _train(module, dm, steps)
        d = out_root / f"p{P}"
        module.export_weights(d / "dfot.safetensors")
        ckpt = {"magnet": {"stage": "dfot", **module.checkpoint_info()}, "state_dict": module.state_dict()}
        torch.save(ckpt, d / "last.ckpt")
        out[P] = d
    return out
