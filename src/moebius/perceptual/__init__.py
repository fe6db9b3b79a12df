"""Perceptual networks, shared by training (losses) and evaluation (metrics).

* :mod:`~moebius.perceptual.lpips`: LPIPS and shift-tolerant LPIPS on RGB images (local weight files);
* :mod:`~moebius.perceptual.elatentlpips`: E-LatentLPIPS on VAE latents, with its augmentations.

Nothing heavy is imported here.
"""
