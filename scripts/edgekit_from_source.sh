#!/usr/bin/env bash
# Make `import edgekit` (with edgekit.converters and edgekit.runtimes) work from this source tree for the
# interpreter $PYTHON (default python3), with no network: used by scripts/gpu_check.sh on the GPU machine.
#
#   PYTHON=/path/to/python bash scripts/edgekit_from_source.sh
#
# pyproject maps edgekit.converters -> converters/ and edgekit.runtimes -> runtimes/, so the raw tree does
# not import. An editable install adds that mapping as a meta-path finder (which also wins over
# tests/conftest.py putting the repository root first on sys.path); it needs setuptools >= 64 and wheel
# in that interpreter (--no-build-isolation: nothing is downloaded). Without them, the same finder is
# written by hand into the interpreter's site-packages, loaded by a .pth file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/tmp/edgekit_from_source.err; then
  echo "edgekit: editable install of $ROOT"
else
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "edgekit: pip install -e . failed ($(grep -m1 "error: " /tmp/edgekit_from_source.err || tail -1 /tmp/edgekit_from_source.err)); a .pth finder in $SP instead"
  cat > "$SP/edgekit_src_finder.py" <<EOF
"""edgekit from the source tree $ROOT, mapped as pyproject's package-dir maps it (scripts/edgekit_from_source.sh)."""
import importlib.machinery
import importlib.util
import sys

ROOT = "$ROOT"
PACKAGES = {"edgekit": "edgekit", "edgekit.converters": "converters", "edgekit.runtimes": "runtimes"}


class EdgekitSourceFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        folder = PACKAGES.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, f"{ROOT}/{folder}/__init__.py",
                                                      submodule_search_locations=[f"{ROOT}/{folder}"])


sys.meta_path.insert(0, EdgekitSourceFinder)
EOF
  echo "import edgekit_src_finder" > "$SP/edgekit_src_finder.pth"
fi
# The check from elsewhere, with the repository root first on sys.path as tests/conftest.py puts it.
# find_spec, not import: the submodules import numpy/torch, which are not this script's concern.
(cd / && "$PY" - "$ROOT" <<'EOF'
import importlib.util, sys
root = sys.argv[1]
sys.path.insert(0, root)
for name in ("edgekit", "edgekit.converters", "edgekit.runtimes", "edgekit.converters.pipeline", "edgekit.runtimes.select"):
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin.startswith(root + "/"), f"{name}: {spec}"
    print("edgekit from source:", name, "->", spec.origin)
EOF
)
