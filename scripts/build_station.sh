#!/usr/bin/env bash
# Build the inspection-station bundle (Linux, one folder + tar.gz) from a torch-free virtual environment.
#   bash scripts/build_station.sh            -> dist/maskbench-station/ and dist/maskbench-station-linux-x86_64.tar.gz
# Windows: packaging/station.spec builds the same folder with PyInstaller on Windows, and
# packaging/station.iss (Inno Setup) wraps it into an installer; see docs/station.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh station
VENV="${VENV:-.venv-station}"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "pyinstaller>=6.5"
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch is installed in $VENV; a station bundle must not contain it" >&2
  exit 1
fi
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath dist --workpath build/station packaging/station.spec
tar -C dist -czf "dist/maskbench-station-linux-$(uname -m).tar.gz" maskbench-station
du -sh dist/maskbench-station "dist/maskbench-station-linux-$(uname -m).tar.gz"
