"""A real ComfyUI server for integration tests, found through COMFYUI_PATH.

The server runs in its own process with ``--cpu`` on loopback and a throw-away base directory
(models, custom_nodes, input, output, user) so tests never touch a user's installation; this
repository is linked into its ``custom_nodes``. COMFYUI_PYTHON names the interpreter of
ComfyUI's environment (default: ``$COMFYUI_PATH/../venv/bin/python`` if present, else this one).
Without COMFYUI_PATH every test that needs the server is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-Stride"


def comfyui_path() -> Path | None:
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        return None
    path = Path(value)
    return path if (path / "main.py").exists() else None


def require_comfyui() -> Path:
    path = comfyui_path()
    if path is None:
        pytest.skip("COMFYUI_PATH is not set to a ComfyUI checkout (with main.py): ComfyUI integration test skipped")
    return path


def comfyui_python(path: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    candidate = path.parent / "venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfy_dir: Path, base_dir: Path):
        self.comfy_dir = comfy_dir
        self.base_dir = base_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = base_dir / "server.log"

    # ---- lifecycle
    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for sub in ("custom_nodes", "models/diffusion_models", "models/loras", "input", "output", "user", "temp"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        cmd = [comfyui_python(self.comfy_dir), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base_dir), "--disable-auto-launch"]
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.log()[-4000:]}")
            try:
                self.get("/object_info/KSampler", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(1.0)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        try:
            self.get("/object_info/KSampler", timeout=10)
            return True
        except Exception:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- HTTP
    def get(self, route: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post(self, route: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "stride-tests", "prompt_id": str(uuid.uuid4())})
        if status != 200:
            raise AssertionError(f"prompt rejected ({status}): {json.dumps(body)[:3000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Wait for a queued prompt; return its history entry (status + outputs)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(prompt), timeout)


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a history entry, or None if it succeeded."""
    for name, data in entry.get("status", {}).get("messages", []):
        if name == "execution_error":
            return data
    return None
