"""The one-base, three-roles backend: roles see the right weights, also under gradient checkpointing."""

from __future__ import annotations

import torch

from trainer.backends.base import CRITIC, STUDENT, TEACHER
from trainer.backends.wan_lora import WanLoraBackend
from trainer.lora.inject import LoraSpec
from trainer.toy.teacher import TeacherArch, build_diffusers_wan


def make_backend(checkpointing: bool) -> WanLoraBackend:
    torch.manual_seed(0)
    model = build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=128))
    backend = WanLoraBackend(model, LoraSpec(rank=4, alpha=4.0), LoraSpec(rank=4, alpha=4.0),
                             gradient_checkpointing=checkpointing)
    with torch.no_grad():  # non-zero lora_B so each adapter changes the output differently
        for i, p in enumerate(backend.trainable_parameters(STUDENT) + backend.trainable_parameters(CRITIC)):
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(i))
    return backend


def role_gradients(backend: WanLoraBackend, role: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 8, 8, generator=gen)
    context = torch.randn(1, 4, 4096, generator=gen)
    out = backend.predict_velocity(x, torch.tensor([0.6]), context, role)
    # the backward runs after the role's adapter was switched back, as in a DMD step
    backend.predict_velocity(x, torch.tensor([0.3]), context, STUDENT)
    params = backend.trainable_parameters(role)
    return torch.autograd.grad(out.pow(2).mean(), params)


def test_roles_differ_and_teacher_is_the_base():
    backend = make_backend(False)
    gen = torch.Generator().manual_seed(2)
    x, context = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 4, 4096, generator=gen)
    outs = {r: backend.predict_velocity(x, torch.tensor([0.5]), context, r).detach() for r in (TEACHER, STUDENT, CRITIC)}
    assert not torch.allclose(outs[TEACHER], outs[STUDENT]) and not torch.allclose(outs[STUDENT], outs[CRITIC])
    torch.manual_seed(0)
    base = build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=128))
    with torch.no_grad():
        plain = base(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=context, return_dict=False)[0]
    assert torch.allclose(outs[TEACHER], plain, atol=1e-6)


def test_gradient_checkpointing_recomputes_with_the_role_that_ran_the_forward():
    plain, checkpointed = make_backend(False), make_backend(True)
    for a, b in zip(role_gradients(plain, CRITIC), role_gradients(checkpointed, CRITIC)):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
