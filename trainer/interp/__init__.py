"""Temporal interpolation of video latents: training-free methods (``latent``), the learned latent
interpolator of Adaptive Video Distillation (``model``) and its training job (``train``). The
interpolated few-step sampler that uses them lives in ``trainer.sampling.interpolated``."""
