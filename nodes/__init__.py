"""The pack's V3 nodes. Thin classes: each converts inputs, calls ``trainer``, returns outputs.

This package and ``trainer/backends/comfy.py`` are the only code that imports ComfyUI. Node ids are
stable and prefixed with ``Stride``; once shipped they are never renamed.
"""

from comfy_api.latest import ComfyExtension, io


def register_model_folders() -> None:
    """Add the pack's shipped toy student LoRA folder to ComfyUI's ``loras`` folders, so the stock
    LoRA loaders and ``StrideStudentScheduler.stride_lora`` list it. Idempotent; a folder of its
    own, so the teacher and text table are never offered as LoRAs."""
    import folder_paths

    from ..trainer.toy.student import LORA_DIR

    folder_paths.add_model_folder_path("loras", str(LORA_DIR))


class StrideExtension(ComfyExtension):
    async def on_load(self) -> None:  # newer ComfyUI calls this; 0.3.64 does not, hence get_node_list too
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from . import distill_nodes, frame_nodes, interp_nodes, sampling_nodes, schedule_nodes, toy_nodes

        register_model_folders()

        return [*sampling_nodes.NODES, *schedule_nodes.NODES, *interp_nodes.NODES, *frame_nodes.NODES,
                *distill_nodes.NODES, *toy_nodes.NODES]
