# Source this first in a `device` call: installs the carried wheels (scripts/device/wheels.sh) where the machine
# lacks them and puts them and the repository on PYTHONPATH, so any bench/ script or `python -m app.cli` runs:
#   run(command="source scripts/device/env.sh && python bench/bench_train_step.py --model teacher ...", carry=[".whl"])
# the device machine has torch, timm and onnx but none of these (a local .venv has them all: nothing to install);
# PYTHONPATH is set before the check, so a second call on a warm machine finds the first call's /tmp/site
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
python -c 'import sqlalchemy, sam2, pycocotools' 2>/dev/null \
  || pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
