"""magnet: multi-person motion generation (pose VQ-VAE + Diffusion Forcing Transformer)."""

__version__ = "0.1.0"
