"""Shared fixtures. The ComfyUI server is started once per test session, only if a test asks."""

from __future__ import annotations

import pytest

from comfy_harness import ComfyServer, require_comfyui


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    comfy_dir = require_comfyui()
    server = ComfyServer(comfy_dir, tmp_path_factory.mktemp("comfy_base")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _private_reference_cache(tmp_path, monkeypatch):
    """Teacher reference rows recorded by a test stay in that test (not in the user's cache)."""
    from trainer.eval import reference

    monkeypatch.setattr(reference, "CACHE_DIR", tmp_path / "reference_cache")
