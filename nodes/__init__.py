"""The pack's V3 nodes. Thin classes: each converts inputs, calls ``trainer``, returns outputs.

This package and ``trainer/backends/comfy.py`` are the only code that imports ComfyUI. Node ids are
stable and prefixed with ``Stride``; once shipped they are never renamed.
"""

from comfy_api.latest import ComfyExtension, io


class StrideExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from . import distill_nodes, frame_nodes, interp_nodes, sampling_nodes, schedule_nodes, toy_nodes

        return [*sampling_nodes.NODES, *schedule_nodes.NODES, *interp_nodes.NODES, *frame_nodes.NODES,
                *distill_nodes.NODES, *toy_nodes.NODES]
