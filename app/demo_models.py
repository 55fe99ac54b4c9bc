"""The shipped demo models (assets/demo_models, made by scripts/make_demo_models.py) in the demo project.

Why predictions ship as data: a station install has no torch, so it cannot run the SAM 2 teacher, yet its demo must
show teacher and student masks. The synthetic crops are deterministic, so the make script stores both models'
predictions (COCO RLE + the prompt that made them) keyed by the crop's sha256 and its file name in the data set;
installing them is a few database rows, instant on any machine. The models are registered too, so point prompts
work live: the student as its ONNX pair (every install), the teacher as its SAM 2 checkpoint where torch and sam2
are installed (full install); a station records the teacher as "precomputed" (its masks, no live prompts).

The demo models are NOT SA-1B-pretrained SAM 2 (see assets/demo_models/MODEL_CARD.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.registry import PRECOMPUTED_BACKEND
from store.errors import UserError

log = logging.getLogger("maskbench.demo")
DEMO_NOTICE = "demo models: trained on the synthetic crops only, NOT SA-1B-pretrained SAM 2"


def demo_models_dir() -> Path:
    env = os.environ.get("MASKBENCH_DEMO_MODELS")
    if env:
        return Path(env)
    import assets

    return Path(assets.__file__).resolve().parent / "demo_models"


def load_manifest(root: Path | None = None) -> dict[str, Any] | None:
    root = root or demo_models_dir()
    path = root / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(root: Path, manifest: dict[str, Any]) -> None:
    for name, meta in manifest.get("files", {}).items():
        p = root / name
        if not p.is_file():
            raise UserError(f"demo model file missing: {p} (reinstall, or rebuild with scripts/make_demo_models.py)")
        if meta.get("sha256") and _sha256(p) != meta["sha256"]:
            raise UserError(f"demo model file {p.name} does not match its manifest checksum (corrupt install?)")


def _torch_teacher_available() -> bool:
    from inference import capabilities

    return not capabilities.missing(("torch", "sam2"))


def _register_teacher(project: Any, root: Path, manifest: dict[str, Any]) -> Any:
    from inference import registry

    t = manifest["teacher"]
    path = root / t["file"]
    name = "demo teacher (sam2.1_hiera_demo, not SA-1B)"
    if _torch_teacher_available():
        try:
            # a manifest with a scale comes from a native-scale build (issue 14); older ones resized to a square
            return registry.add_model(project, "teacher", path, config=t["config"], name=name,
                                      image_size=int(t["image_size"]), scale=t.get("scale"))[0]
        except Exception:  # noqa: BLE001 - a broken torch install still gets the precomputed demo
            log.exception("demo teacher could not be loaded with torch; recording it as precomputed")
    sha = _sha256(path)
    return registry._record(project, "teacher", dict(  # noqa: SLF001 - same transaction rules as add_model
        name=name, architecture=t["config"], backend=PRECOMPUTED_BACKEND, checkpoint_path=str(path), sha256=sha,
        params=t.get("params"), size_bytes=path.stat().st_size, input_size=int(t["image_size"]),
        meta={"config": t["config"], "image_size": int(t["image_size"]), "demo": True,
              "note": "masks precomputed by scripts/make_demo_models.py; live prompts need the full install"},
    ))[0]


def install_demo_models(project: Any, progress: Callable[[int, int], None] | None = None) -> str:
    """Register the shipped demo models, add their precomputed predictions, flag disagreements.

    Returns a summary suffix for app.demo.build_demo_project ("" when no demo models are shipped)."""
    from sqlalchemy import select

    from inference.registry import add_onnx_student
    from review.flagging import flag
    from store import config as config_mod
    from store.schema import Mask, MaskSource, Prediction, Sample

    root = demo_models_dir()
    manifest = load_manifest(root)
    if manifest is None:
        log.info("no demo models under %s", root)
        return ""
    verify(root, manifest)
    st = manifest["student"]
    student = add_onnx_student(project, root / st["encoder"], root / st["decoder"],
                               name="demo student (int8w, not SA-1B)")[0]
    teacher = _register_teacher(project, root, manifest)
    preds = json.loads((root / manifest["predictions"]["file"]).read_text(encoding="utf-8"))
    by_sha = {e["sha256"]: e for e in preds["crops"].values()}
    data_root = (Path(project.root) / "data").resolve()
    models = {"teacher": (teacher.id, MaskSource.TEACHER), "student": (student.id, MaskSource.STUDENT)}
    added = missing = 0
    with project.db.session() as s:
        samples = s.execute(select(Sample.id, Sample.path, Sample.sha256, Sample.width, Sample.height)).all()
        have = {(sid, mid) for sid, mid in s.execute(select(Prediction.sample_id, Prediction.model_id))}
    total = len(samples)
    for i, r in enumerate(samples):
        entry = by_sha.get(r.sha256)
        if entry is None:
            try:
                entry = preds["crops"].get(Path(r.path).resolve().relative_to(data_root).as_posix())
            except ValueError:
                entry = None
        if entry is None:
            missing += 1
            continue
        with project.db.session() as s:  # one crop = one transaction
            for kind, (model_id, source) in models.items():
                p = entry.get(kind)
                if p is None or (r.id, model_id) in have:
                    continue
                h, w = p["rle"]["size"]
                if (h, w) != (r.height, r.width):
                    continue
                from store import rle as rle_mod

                area = int(rle_mod.decode(p["rle"]).sum())
                m = Mask(sample_id=r.id, source=source, model_id=model_id, rle=p["rle"], area=area)
                s.add(m)
                s.flush()
                s.add(Prediction(sample_id=r.id, model_id=model_id, mask_id=m.id, points=p["points"],
                                 labels=p["labels"], prompt_source=preds.get("prompt_source", "ground_truth"),
                                 score=float(p["score"]), device="precomputed", precision=None))
                added += 1
        if progress:
            progress(i + 1, total)
    if missing:
        log.warning("demo predictions: %d crop(s) not in %s", missing, manifest["predictions"]["file"])
    flagged = 0
    if added:
        rep = flag(project.db, config_mod.threshold(project.config))
        flagged = rep.flagged_total
    return f"; {added // 2} crops with teacher and student predictions, {flagged} flagged ({DEMO_NOTICE})"
