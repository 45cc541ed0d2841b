"""Models: the pose VQ-VAE (stage 1) and its losses; reference weight import in ``reference_import``."""

from magnet.models.vqvae import (
    VQVAE_PRESETS,
    Decoder,
    Encoder,
    PoseVQVAE,
    QuantizeEMAReset,
    Resnet1D,
    VQVAEConfig,
    fold_persons,
    load_vqvae,
    replace_value,
    save_vqvae,
    unfold_persons,
    vqvae_inputs,
)

__all__ = [
    "VQVAE_PRESETS",
    "Decoder",
    "Encoder",
    "PoseVQVAE",
    "QuantizeEMAReset",
    "Resnet1D",
    "VQVAEConfig",
    "fold_persons",
    "load_vqvae",
    "replace_value",
    "save_vqvae",
    "unfold_persons",
    "vqvae_inputs",
]
