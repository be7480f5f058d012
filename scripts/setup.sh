#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pack's dependencies from pyproject.toml.
# torch: if the venv has none yet, install torch==2.13.0 (on the project's CI machines this is a
# CPU wheel on local disk; elsewhere pip takes the matching wheel from PyPI). An existing torch,
# such as a CUDA build, is never replaced: every other requirement is satisfied by it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${STRIDE_PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q "torch==2.13.0"
fi
extras="${1:-}"
"$VPY" - "$extras" <<'PYEOF' > .venv/stride-requirements.txt
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PYEOF
"$VPY" -m pip install -q -r .venv/stride-requirements.txt
