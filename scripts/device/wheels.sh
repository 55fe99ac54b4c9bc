#!/usr/bin/env bash
# Python 3.12 wheels of what maskbench needs beyond what a device machine has (torch, timm, onnx, onnxruntime,
# opencv, typer, rich), into ./.whl (ignored): the `device` tool's machines reach no package index, so a run
# carries these (carry [".whl", ...]) and installs them with scripts/device/table.sh. About 10 MiB; the carry
# limit is 64 MiB for the working tree and everything carried together.
#   bash scripts/device/wheels.sh          # needs .venv (scripts/setup.sh) for the sam2 build
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
py="${PYTHON:-.venv/bin/python}"
mkdir -p .whl
dl=("$py" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
    --platform any --implementation cp --no-deps -d .whl)
"${dl[@]}" Mako MarkupSafe PyYAML SQLAlchemy alembic annotated-types hydra-core "omegaconf<2.4" platformdirs \
  portalocker pycocotools "pydantic==2.14.4" "pydantic-core==2.50.5" typing-inspection tqdm typing_extensions
# sdists only: built here as pure-Python wheels
"$py" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl antlr4-python3-runtime==4.9.3 iopath
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w .whl sam2==1.1.0
du -sh .whl
