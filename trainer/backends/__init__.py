"""Denoiser backends: one protocol, adapters for diffusers (here) and ComfyUI (``comfy.py``)."""
