"""A flip-averaged predict pass after a plain one: every view of a batch in one encoder call with the crop itself
taken from the plain pass's cache (`FlipEnsemble.embed_stored`, what `predict --flip-views` runs), against one
crop at a time with the crop itself re-encoded under its pixel hash (`FlipEnsemble.embed`, what it ran before).
Each side gets a fresh copy of the same project after the same plain pass, then embeds and decodes every crop
(nothing stored); prints encoder images and seconds.

    python bench/bench_flip_pass.py --data ../shared/datasets/magnetic-tile --crops 24 [--views 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def _project(root: Path, data: Path, crops: int):  # noqa: ANN202 - store.project.Project
    from store.ingest import ingest
    from store.project import Project

    src = root / "crops"
    src.mkdir(parents=True)
    pairs = sorted(data.rglob("*.jpg"))[:crops]
    for img in pairs:
        for f in (img, img.with_suffix(".png")):
            if f.exists():
                shutil.copy(f, src / f.name)
    p = Project.create(root / "project")
    ingest(p.db, src, workers=1)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--crops", type=int, default=24)
    ap.add_argument("--views", type=int, default=4, choices=(2, 4))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()

    import torch
    from sqlalchemy import select

    from inference.batch import predict_project
    from inference.flip_ensemble import FlipEnsemble
    from inference.prompts import prompt_from_json
    from inference.registry import add_model, load_segmenter
    from inference.student import StudentConfig, StudentModel, save_checkpoint
    from store.images import load_image
    from store.schema import Prediction, Sample

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(StudentModel(StudentConfig()), Path(tmp) / "student.pt")
        results = {}
        for side in ("per_crop", "batched"):
            p = _project(Path(tmp) / side, a.data, a.crops)
            add_model(p, "student", ckpt)
            predict_project(p, "student", device=a.device, batch_size=a.batch, prompt_source="ground_truth")
            seg = load_segmenter(p, "student", device=a.device)
            flips = FlipEnsemble(seg, a.views)
            with p.db.session() as s:
                rows = s.execute(select(Sample.path, Sample.sha256, Prediction.points, Prediction.labels,
                                        Prediction.prompt_source)
                                 .join(Prediction, Prediction.sample_id == Sample.id)).all()
            before = seg.encoder_images
            t0 = time.perf_counter()
            for i in range(0, len(rows), a.batch):
                chunk = rows[i:i + a.batch]
                images = [load_image(r.path) for r in chunk]
                if side == "batched":
                    embs = flips.embed_stored(seg, images, [r.sha256 for r in chunk])
                else:  # the earlier path: one crop at a time, the crop itself keyed by its pixels
                    embs = [flips.embed(im) for im in images]
                for e, r in zip(embs, chunk):
                    pr = prompt_from_json(r.points, r.labels, r.prompt_source)
                    flips.decode(e, pr.points, pr.labels)
            encoded = seg.encoder_images - before
            results[side] = (encoded, time.perf_counter() - t0)
            p.close()
    (e0, t0), (e1, t1) = results["per_crop"], results["batched"]
    print(f"{a.crops} crops, {a.views} views, {a.device}: per crop {e0} images encoded in {t0:.1f} s; "
          f"batched {e1} in {t1:.1f} s; time ratio {t0 / t1:.2f}x")


if __name__ == "__main__":
    main()
