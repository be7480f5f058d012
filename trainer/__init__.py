"""ComfyUI-Stride's library: few-step samplers and schedules, the toy domain, distillation.

Importable without ComfyUI; nothing heavy happens at import time.
"""

__version__ = "0.1.0"
