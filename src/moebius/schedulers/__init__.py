"""Noise schedulers: how a sampling loop turns model outputs into the next latents."""
