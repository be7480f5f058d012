"""Write tests/data/object_info.json: the node definitions the pack's workflows are checked against.

The snapshot holds every ``Stride*`` node plus each node type that a workflow in ``workflows/`` uses,
as a real ComfyUI server reports them (``GET /object_info``), sorted by node type. Combo lists of
model files are emptied, so a snapshot taken from a user's server never records their files.

    python scripts/snapshot_object_info.py --url http://127.0.0.1:8188   # a running server
    COMFYUI_PATH=/path/to/ComfyUI python scripts/snapshot_object_info.py # starts a throw-away one

Without ``--url`` it starts ComfyUI with ``--cpu`` in a temporary base directory (through
``tests/comfy_harness.py``, with this repository linked into custom_nodes) and stops it afterwards.
Re-run it whenever a node's inputs change or a workflow starts using a new node type; the
``comfyui`` tests fail while the snapshot disagrees with the live server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "object_info.json"


def fetch_object_info(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as resp:
        return json.loads(resp.read())


def object_info_from_fresh_server() -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_harness import ComfyServer, comfyui_path

    comfy_dir = comfyui_path()
    if comfy_dir is None:
        raise SystemExit("give --url of a running ComfyUI, or set COMFYUI_PATH to a ComfyUI checkout")
    with tempfile.TemporaryDirectory(prefix="stride_snapshot_") as base:
        server = ComfyServer(comfy_dir, Path(base)).start()
        try:
            return server.get("/object_info", timeout=60)
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running ComfyUI server (default: start one via COMFYUI_PATH)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from trainer import workflows

    info = fetch_object_info(args.url) if args.url else object_info_from_fresh_server()
    shipped = [workflows.load_workflow(path) for path in sorted((REPO / "workflows").glob("*.json"))]
    used = workflows.workflow_node_types(shipped)
    missing = sorted(used - set(info))
    if missing:
        raise SystemExit(f"the server does not know node types the workflows use: {', '.join(missing)}")
    wanted = used | {name for name in info if name.startswith("Stride")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(workflows.snapshot(info, wanted), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(wanted)} node types to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
