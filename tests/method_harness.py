"""The tiny random Wan, toy batches and method builders the distillation-method tests share (no mocks:
a real diffusers Wan with real LoRA adapters, small enough for seconds on a CPU)."""

from __future__ import annotations

import pytest
import torch

from trainer.backends.wan_lora import WanLoraBackend
from trainer.lora.inject import LoraSpec
from trainer.methods import method_registry
from trainer.methods.adv import AdvConfig
from trainer.methods.avdm2 import Avdm2Config
from trainer.methods.base import DistillBatch, MethodContext, StudentSchedule
from trainer.methods.gpd import GpdConfig
from trainer.toy import codec, domain, text
from trainer.toy.teacher import TeacherArch, build_diffusers_wan

SHAPE = (2, 16, 3, 8, 8)  # [B, C, F, H, W]: 3 frames of 4x4 tokens
SCHEDULE = StudentSchedule((1000.0, 757.0, 522.0), 5.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_backend(lora_seed: int = 0, critic: bool = True) -> WanLoraBackend:
    """The same random teacher every time; the LoRA initialisation follows ``lora_seed``."""
    torch.manual_seed(0)
    model = build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=128))
    torch.manual_seed(lora_seed)
    spec = LoraSpec(rank=4, alpha=4.0)
    return WanLoraBackend(model, spec, spec if critic else None)


def toy_batch(seed: int, real: bool = True) -> DistillBatch:
    """Toy-domain prompts and clips, cropped to SHAPE (the codec fixes 32x32 clips)."""
    videos, attrs = domain.make_batch(SHAPE[0], seed=seed)
    context = text.encode_prompts([a.prompt for a in attrs])
    latents = codec.encode(videos)[:, :, :SHAPE[2], :SHAPE[3], :SHAPE[4]].contiguous()
    return DistillBatch(context, text.encode_prompts([""] * SHAPE[0]), SHAPE, latents if real else None,
                        torch.Generator().manual_seed(1000 + seed))


def base_state(backend) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in backend.model.named_parameters() if "lora_" not in n}


def lora_state(backend, role) -> list[torch.Tensor]:
    return [p.detach().clone() for p in backend.trainable_parameters(role)]


CONFIGS = {
    "adv": lambda: AdvConfig(generator_lr=1e-3, critic_lr=1e-3, generator_every=1),
    "gpd": lambda: GpdConfig(lr=1e-3, num_stages=2, stage_steps=2),
    "avdm2": lambda: Avdm2Config(generator_lr=1e-3, discriminator_lr=1e-3, critic_lr=1e-3, warmup_steps=0,
                                 feature_blocks=(0, 1), head_channels=8),
}


def build(name: str, backend=None):
    backend = backend or make_backend()
    return method_registry()[name](MethodContext(backend, SCHEDULE), CONFIGS[name]())
