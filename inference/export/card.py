"""Model cards: what an exported file is, how it was made, and how good it is; stored on the Export row
(Export.card) and written as JSON next to the file (`<file>.card.json`)."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

from inference.export import trt_compat


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("onnx", "onnxruntime", "torch", "tensorrt"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent on a station, fine
            continue
    return out


def io_signature(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def sig(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
        return out

    return {"inputs": sig(model.graph.input), "outputs": sig(model.graph.output)}


def card_path(path: Path) -> Path:
    return path.with_name(path.name + ".card.json")


def make_card(*, path: Path, model: dict[str, Any], fmt: str, variant: str, precision: str, status: str,
              parity: dict[str, Any] | None, bounds: dict[str, float] | None, accuracy: dict[str, Any] | None,
              calibration: dict[str, Any] | None, command: str, trtexec: str | None = None,
              tensorrt: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    size = path.stat().st_size if path.exists() else 0
    card: dict[str, Any] = {
        "file": path.name,
        "format": fmt,
        "variant": variant,
        "precision": precision,
        "status": status,
        "size_bytes": size,
        "size_mb": round(size / 1e6, 3),
        "model": model,
        "parity_vs_pytorch": parity,
        "parity_bounds": bounds,
        "validation": accuracy,
        "calibration": calibration,
        "command": command,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    if fmt == "onnx" and path.exists():
        card["io"] = io_signature(path)
        card["tensorrt_compat"] = trt_compat.check_file(path).as_dict()
    if trtexec is not None:
        card["trtexec"] = trtexec
    if tensorrt is not None:
        card["tensorrt"] = tensorrt
    card.update(extra or {})
    return card


def write_card(path: Path, card: dict[str, Any]) -> Path:
    target = card_path(path)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False, default=str), encoding="utf-8")
    tmp.replace(target)
    return target
