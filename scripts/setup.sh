#!/usr/bin/env bash
# Install maskbench into ./.venv.
#   bash scripts/setup.sh full     workbench with torch, SAM 2, timm, ONNX tooling (GUI + training + export)
#   bash scripts/setup.sh test     full + test tools (+ OpenSSH server for the SSH benchmark tests and PostgreSQL server
#                                  for the shared-store tests, via apt, as root, when missing)
#   bash scripts/setup.sh station  review/annotation with ONNX Runtime only: no torch (inspection stations)
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
profile="${1:-full}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
py="${PYTHON:-python3}"
venv="${VENV:-.venv}"
[ "$profile" = station ] && venv="${VENV:-.venv-station}"

"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "maskbench needs Python 3.11 or newer")'
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
export PIP_PROGRESS_BAR=off

case "$profile" in
  station)
    "${pip[@]}" -e ".[station]"
    ;;
  full|test)
    # torch first and pinned: sam2 is an sdist whose build needs torch, and building it in an isolated
    # environment would download several GB; SAM2_BUILD_CUDA=0 skips its optional CUDA extension.
    "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
    "$venv/bin/python" -c 'import sam2' 2>/dev/null || SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation "sam2==1.1.0"
    if [ "$profile" = test ]; then
      "${pip[@]}" -e ".[full,test,build]"
      if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) \
          || echo "warning: could not install openssh-server; the SSH benchmark tests will fail" >&2
      fi
      # A PostgreSQL server for the shared-store tests (tests/store/test_postgres*.py start their own on loopback).
      if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
          || echo "warning: could not install postgresql; the PostgreSQL store tests will fail" >&2
      fi
    else
      "${pip[@]}" -e ".[full]"
    fi
    ;;
  *)
    echo "usage: bash scripts/setup.sh full|test|station" >&2
    exit 2
    ;;
esac
echo "maskbench installed in $venv ($profile)"
