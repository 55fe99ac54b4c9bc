"""First run: the environment checks shown by the first-run dialog, and where a new crops project goes.

The dialog itself is a view (`widgets.first_run.FirstRunDialog`) and never imports app/: the checks need app's
folders (`app.paths.data_dir`) and the shipped demo models (`app.demo_models`), so they live here and the window
hands their results to the dialog. Each check is one plain line:
* GPU: informative only; the station and the review tools run on CPU (ONNX Runtime).
* models: whether the demo models are shipped, and that real work wants an official SAM 2 checkpoint.
* data folder: must be writable (projects, settings and logs live there, never in the install folder).

The dialog's names are re-exported so callers (and tests) see the first run through one module.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from widgets.first_run import DISMISSED_KEY, ERROR, INFO, OK, Check, FirstRunDialog

__all__ = ["DISMISSED_KEY", "ERROR", "INFO", "OK", "Check", "FirstRunDialog", "check_data_dir", "check_gpu",
           "check_models", "run_checks", "unique_project_dir"]


def check_gpu() -> Check:
    """Informative: CUDA through ONNX Runtime's providers or an NVIDIA driver; never imports torch."""
    providers: list[str] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:  # onnxruntime is a dependency of every profile; without it the check reports no GPU
        pass
    if "CUDAExecutionProvider" in providers or "TensorrtExecutionProvider" in providers:
        return Check("GPU", OK, "CUDA available to ONNX Runtime")
    driver = shutil.which("nvidia-smi") is not None
    extra = " (an NVIDIA driver is installed; onnxruntime-gpu would use it)" if driver else ""
    return Check("GPU", INFO, "no GPU in use: fine, review, annotation and the student run on the CPU" + extra)


def check_models() -> Check:
    from app.demo_models import load_manifest

    try:
        manifest = load_manifest()
    except Exception as exc:  # noqa: BLE001
        return Check("models", ERROR, f"demo models unreadable: {exc}")
    if manifest is None:
        return Check("models", ERROR, "no demo models shipped: the demo opens without predictions; import a "
                                      "teacher (SAM 2 checkpoint) and a student to see masks")
    return Check("models", INFO, "demo models present (trained on synthetic crops, NOT SA-1B-pretrained SAM 2); "
                                 "for real work import an official SAM 2.1 checkpoint")


def check_data_dir(path: Path | None = None) -> Check:
    from app.paths import data_dir

    d = Path(path or data_dir())
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check("data folder", ERROR, f"cannot write to {d} ({exc.strerror or exc}); set MASKBENCH_DATA_DIR "
                                           "to a writable folder")
    return Check("data folder", OK, f"{d}")


def run_checks() -> list[Check]:
    return [check_gpu(), check_models(), check_data_dir()]


def unique_project_dir(base: Path, name: str) -> Path:
    d = base / name
    n = 1
    while d.exists():
        n += 1
        d = base / f"{name}-{n}"
    return d
