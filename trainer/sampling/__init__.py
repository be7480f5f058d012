"""Few-step sampling without ComfyUI: k-diffusion-signature samplers (``samplers``), SIGMAS
schedules (``schedules``) and the temporal-aware schedule search with its presets
(``schedule_search``)."""
