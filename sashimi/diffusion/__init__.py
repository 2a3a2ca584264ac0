"""Diffusion (DDPM): the noise schedule and its closed forms, the samplers (DDPM, DDIM), the denoising loss."""
from sashimi.diffusion.samplers import SeededNoise, ddim_sample, ddim_steps, ddpm_sample
from sashimi.diffusion.schedule import Schedule

__all__ = ["Schedule", "SeededNoise", "ddpm_sample", "ddim_sample", "ddim_steps"]
