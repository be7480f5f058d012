"""LoRA adapters for the Wan transformer: which modules they target (``targets``), putting several
named adapters on one frozen diffusers base and switching between them (``inject``), and writing
them as ComfyUI-native LoRA files with Stride metadata that diffusers loads as well (``export``).
"""
