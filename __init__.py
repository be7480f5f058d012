"""ComfyUI-Stride: few-step video generation for ComfyUI.

ComfyUI loads this file as the pack's module. It exports only ``comfy_entrypoint`` (the V3 node
API; a pack that also exported NODE_CLASS_MAPPINGS would be loaded the V1 way and its V3 nodes
ignored). Nothing is imported or computed here until ComfyUI calls the entry point, so importing
the pack outside ComfyUI is free and cannot fail.
"""


async def comfy_entrypoint():
    from .nodes import StrideExtension

    return StrideExtension()
