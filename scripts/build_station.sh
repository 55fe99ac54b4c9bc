#!/usr/bin/env bash
# Build the inspection-station bundle (Linux, one folder + tar.gz) from a torch-free virtual environment.
#   bash scripts/build_station.sh            -> dist/maskbench-station/ and dist/maskbench-station-linux-<arch>.tar.gz
# Then: dist/maskbench-station/maskbench-station --selftest   (QT_QPA_PLATFORM=offscreen on a headless machine)
# Windows: packaging/station.spec builds the same folder with PyInstaller on Windows, and packaging/station.iss
# (Inno Setup 6) wraps it into an installer; see docs/station.md. Neither can be built on Linux.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export VENV="${VENV:-.venv-station}"
bash scripts/setup.sh station
py="$VENV/bin/python"
# pyproject pins PySide6 below 6.12 (6.12 leaks None references and crashes long sessions); an older venv may
# still hold 6.12
"$py" -m pip install --disable-pip-version-check -q "PySide6-Essentials>=6.6,<6.12" "pyinstaller>=6.5"
if "$py" -c "import torch" 2>/dev/null; then
  echo "error: torch is installed in $VENV; a station bundle must not contain it" >&2
  exit 1
fi
if [ ! -f assets/demo_models/manifest.json ]; then
  echo "error: assets/demo_models/manifest.json missing: the bundle would have no demo models" >&2
  echo "       (make them with: .venv/bin/python scripts/make_demo_models.py)" >&2
  exit 1
fi
rm -rf dist/maskbench-station
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath dist --workpath build/station packaging/station.spec
# Drop debug information (DWARF only; symbols stay): about 50 MB of the bundle, most of it in libpython and the
# extension modules. Libraries that auditwheel grafted into *.libs folders are left exactly as their wheels ship
# them. The bundle's --selftest (tests/test_station_bundle.py) loads the stripped libraries.
if command -v strip >/dev/null 2>&1; then
  before=$(du -sb dist/maskbench-station | cut -f1)
  find dist/maskbench-station -type f -name '*.so*' -not -path '*.libs/*' -print0 | xargs -0 -r strip --strip-debug
  after=$(du -sb dist/maskbench-station | cut -f1)
  echo "strip --strip-debug: $(( (before - after) / 1000000 )) MB less"
else
  echo "warning: no strip on PATH (binutils): the bundle keeps its debug information (about 50 MB)" >&2
fi
tar -C dist -czf "dist/maskbench-station-linux-$(uname -m).tar.gz" maskbench-station
du -sh dist/maskbench-station "dist/maskbench-station-linux-$(uname -m).tar.gz"
