"""Dataset ingest: find image/mask pairs in the three supported layouts and store whole samples only.

Layouts, tried in this order:
  * YOLO segmentation: a folder with data.yaml, images/ and labels/ (what `export-labels --format yolo` writes).
  * labelme: a folder of labelme JSON files next to their images (what `export-labels --format labelme` writes).
  * COCO JSON: DATASET is a .json file, or a folder with annotations/*.json or a single *.json next to the images.
  * images/ + masks/ folders: pairs matched by relative path stem; class from a sub-folder of images/.
  * side by side: X.jpg with X.png (or X_mask.png) in the same folder; class from the folder (MT_Crack -> crack).

An image without a mask (a folder of images only, or an image with no file under masks/) is stored as an
unlabelled sample with no ground-truth mask (a COCO image without annotations is different: it is stored with an
empty ground-truth mask, class "free"): that is how unlabelled crops arrive for distillation (feature and soft
terms; the Dice term only where a verified mask exists). The report counts them per class in `without_mask`.

Each good sample is written with its ground-truth mask (if any) in the same transaction, in batches, so a killed ingest
leaves only whole samples. `strict=True` writes everything in one transaction that is rolled back on any bad file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import rle as rle_mod
from store.db import Database
from store.errors import UserError
from store.images import IMAGE_EXTS, BadFile, decode_image, decode_mask, sha256_bytes
from store.polygons import polygons_to_mask
from store.schema import Mask, MaskSource, Sample
from store.splits import assign_splits

ProgressFn = Callable[[int, int], None]


class IngestError(UserError):
    pass


@dataclass
class Candidate:
    image: Path
    mask: Path | None
    defect_class: str
    coco_mask: dict[str, Any] | None = None  # {"polygons" | "rle": ..., "size": [h, w]}
    # pixel polygons (labelme: pixels; YOLO: fractions of the image size, `normalized`), filled boundary included
    polygons: list[np.ndarray] | None = None
    normalized: bool = False


@dataclass
class IngestReport:
    layout: str
    added: Counter[str] = field(default_factory=Counter)
    without_mask: Counter[str] = field(default_factory=Counter)  # per class: added samples with no mask (unlabelled)
    skipped_existing: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total_candidates: int = 0

    @property
    def added_total(self) -> int:
        return sum(self.added.values())

    @property
    def without_mask_total(self) -> int:
        return sum(self.without_mask.values())


def class_from_folder(name: str) -> str:
    """MT_Crack -> crack, 'Surface Scratch' -> surface_scratch."""
    name = re.sub(r"^MT_", "", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "unknown"


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS


def _discover_side_by_side(root: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    cands: list[Candidate] = []
    bad: list[tuple[str, str]] = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            if p.suffix.lower() in IMAGE_EXTS:
                by_stem.setdefault(p.stem, []).append(p)
        used: set[Path] = set()
        cls = class_from_folder(folder.name) if folder != root else "unknown"
        for stem, group in by_stem.items():
            if stem.endswith("_mask"):
                continue
            images = [p for p in group if p.suffix.lower() != ".png"]
            pngs = [p for p in group if p.suffix.lower() == ".png"]
            mask_alt = folder / f"{stem}_mask.png"
            if images:
                image = images[0]
                mask = pngs[0] if pngs else (mask_alt if mask_alt.exists() else None)
            elif pngs:
                image = pngs[0]
                mask = mask_alt if mask_alt.exists() else None
            else:
                continue
            used.update([image] + ([mask] if mask else []))
            cands.append(Candidate(image, mask, cls))
        for p in files:
            if p.suffix.lower() in IMAGE_EXTS and p not in used and not p.stem.endswith("_mask"):
                bad.append((str(p), "no matching image"))
    return cands, bad


def _discover_images_masks(root: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    img_root, mask_root = root / "images", root / "masks"
    masks: dict[str, Path] = {}
    for p in sorted(mask_root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            rel = p.relative_to(mask_root).with_suffix("")
            key = str(rel)[: -len("_mask")] if str(rel).endswith("_mask") else str(rel)
            masks[key] = p
    cands: list[Candidate] = []
    for p in sorted(img_root.rglob("*")):
        if not (p.is_file() and p.suffix.lower() in IMAGE_EXTS):
            continue
        rel = p.relative_to(img_root)
        key = str(rel.with_suffix(""))
        cls = class_from_folder(rel.parts[0]) if len(rel.parts) > 1 else "unknown"
        cands.append(Candidate(p, masks.pop(key, None), cls))
    bad = [(str(p), "mask without an image") for p in masks.values()]
    return cands, bad


def _find_coco_json(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".json":
        return root
    for pattern in ("annotations/*.json", "*.json"):
        hits = sorted(root.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        for h in hits:
            if "instances" in h.name or "coco" in h.name.lower():
                return h
    return None


def _discover_coco(json_path: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        images = doc["images"]
        anns = doc.get("annotations", [])
        cats = {c["id"]: class_from_folder(c["name"]) for c in doc.get("categories", [])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IngestError(f"{json_path}: not a readable COCO file ({exc.__class__.__name__}: {exc})") from None
    base_dirs = [json_path.parent, json_path.parent / "images", json_path.parent.parent / "images",
                 json_path.parent.parent]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    cands: list[Candidate] = []
    bad: list[tuple[str, str]] = []
    for im in images:
        fname = im["file_name"]
        path = next((d / fname for d in base_dirs if (d / fname).exists()), None)
        if path is None:
            bad.append((fname, "image file listed in COCO JSON not found"))
            continue
        image_anns = by_image.get(im["id"], [])
        cls_counts = Counter(cats.get(a.get("category_id"), "unknown") for a in image_anns)
        cls = cls_counts.most_common(1)[0][0] if cls_counts else "free"
        segs = [a["segmentation"] for a in image_anns if a.get("segmentation")]
        cands.append(Candidate(path, None, cls, {"size": [im["height"], im["width"]], "segs": segs}))
    return cands, bad


def _labelme_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "shapes" in doc and "imagePath" in doc else None


def _is_labelme(root: Path) -> bool:
    return root.is_dir() and any(_labelme_doc(p) is not None for p in sorted(root.glob("*.json"))[:3])


def _majority(labels: list[str]) -> str:
    return Counter(labels).most_common(1)[0][0] if labels else "free"


def _discover_labelme(root: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """One labelme JSON per image: polygon shapes (label = defect class; no shape: a defect-free crop)."""
    cands: list[Candidate] = []
    bad: list[tuple[str, str]] = []
    for jp in sorted(root.glob("*.json")):
        doc = _labelme_doc(jp)
        if doc is None:
            bad.append((str(jp), "not a labelme file (no shapes / imagePath)"))
            continue
        image = (jp.parent / str(doc["imagePath"])).resolve()
        if not image.is_file():
            bad.append((str(jp), f"image {doc['imagePath']} not found"))
            continue
        shapes = [sh for sh in doc["shapes"] if sh.get("shape_type", "polygon") == "polygon"]
        skipped = len(doc["shapes"]) - len(shapes)
        if skipped:
            bad.append((str(jp), f"{skipped} non-polygon shape(s) left out"))
        polys = [np.asarray(sh["points"], np.float64).reshape(-1, 2) for sh in shapes]
        cls = class_from_folder(_majority([str(sh["label"]) for sh in shapes]))
        cands.append(Candidate(image, None, cls, polygons=polys))
    return cands, bad


def _discover_yolo(root: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Ultralytics segmentation layout: data.yaml (names), images/<split>/, labels/<split>/<stem>.txt with lines
    `class x1 y1 ...` in fractions of the image size. An image without a label file is unlabelled; an empty label
    file is a defect-free crop."""
    import yaml

    try:
        names = yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8")).get("names")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise IngestError(f"{root / 'data.yaml'}: not a readable YOLO data file ({exc})") from None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise IngestError(f"{root / 'data.yaml'}: no class names ('names')")
    cands: list[Candidate] = []
    bad: list[tuple[str, str]] = []
    for image in sorted(p for p in (root / "images").rglob("*") if _is_image(p)):
        label = root / "labels" / image.relative_to(root / "images").with_suffix(".txt")
        if not label.is_file():
            cands.append(Candidate(image, None, "unknown"))  # unlabelled; YOLO folders name splits, not classes
            continue
        polys, classes = [], []
        try:
            for line in label.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if not parts:
                    continue
                values = [float(v) for v in parts[1:]]
                if len(values) < 6 or len(values) % 2:
                    raise ValueError(f"a polygon needs >= 3 x,y pairs: {line[:60]}")
                classes.append(str(names[int(parts[0])]))
                polys.append(np.asarray(values, np.float64).reshape(-1, 2))
        except (ValueError, KeyError) as exc:
            bad.append((str(label), f"bad YOLO label: {exc}"))
            continue
        cands.append(Candidate(image, None, class_from_folder(_majority(classes)), polygons=polys, normalized=True))
    return cands, bad


def discover(dataset: Path) -> tuple[str, list[Candidate], list[tuple[str, str]]]:
    dataset = Path(dataset)
    if not dataset.exists():
        raise IngestError(f"{dataset}: no such file or folder")
    if dataset.is_dir() and (dataset / "data.yaml").is_file() and (dataset / "labels").is_dir():
        return ("yolo", *_discover_yolo(dataset))
    if _is_labelme(dataset):
        return ("labelme", *_discover_labelme(dataset))
    coco = _find_coco_json(dataset)
    if coco is not None:
        return ("coco", *_discover_coco(coco))
    if (dataset / "images").is_dir() and (dataset / "masks").is_dir():
        return ("images+masks", *_discover_images_masks(dataset))
    if dataset.is_dir():
        return ("side-by-side", *_discover_side_by_side(dataset))
    raise IngestError(f"{dataset}: expected a folder or a COCO .json file")


def _coco_mask(spec: dict[str, Any]) -> np.ndarray:
    h, w = spec["size"]
    out = np.zeros((h, w), bool)
    for seg in spec["segs"]:
        if isinstance(seg, list):
            out |= rle_mod.from_polygons(seg, h, w)
        elif isinstance(seg, dict):
            out |= rle_mod.decode(seg)
    return out


@dataclass
class Loaded:
    cand: Candidate
    sha: str
    width: int
    height: int
    mask: np.ndarray | None


def _load(c: Candidate) -> Loaded:
    """Decode and check one candidate; raises BadFile naming which file is wrong."""
    try:
        data = c.image.read_bytes()
    except OSError as exc:
        raise BadFile(f"{c.image}: unreadable ({exc.strerror})") from None
    try:
        img = decode_image(data, c.image)
    except BadFile as exc:
        raise BadFile(f"{c.image}: {exc}") from None
    h, w = img.shape[:2]
    mask = None
    if c.mask is not None:
        try:
            mask = decode_mask(c.mask.read_bytes(), c.mask)
        except OSError as exc:
            raise BadFile(f"{c.mask}: mask unreadable ({exc.strerror})") from None
        except BadFile as exc:
            raise BadFile(f"{c.mask}: mask {exc}") from None
    elif c.polygons is not None:
        scale = np.array([w, h], np.float64) if c.normalized else np.ones(2)
        mask = polygons_to_mask([p * scale for p in c.polygons], h, w)
    elif c.coco_mask is not None:
        try:
            mask = _coco_mask(c.coco_mask)
        except Exception as exc:  # noqa: BLE001 - pycocotools raises assorted errors for bad segments
            raise BadFile(f"{c.image}: COCO segmentation unusable ({exc})") from None
    if mask is not None and mask.shape != (h, w):
        where = c.mask if c.mask is not None else c.image
        raise BadFile(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}")
    return Loaded(c, sha256_bytes(data), w, h, mask)


def _load_all(cands: list[Candidate], workers: int) -> Iterator[tuple[Candidate, Loaded | BadFile]]:
    def safe(c: Candidate) -> Loaded | BadFile:
        try:
            return _load(c)
        except BadFile as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # map keeps input order, so reports and row order are deterministic whatever the thread timing.
        yield from zip(cands, pool.map(safe, cands, chunksize=8))


def _write(session: Session, item: Loaded) -> None:
    sample = Sample(
        path=str(item.cand.image.resolve()),
        sha256=item.sha,
        width=item.width,
        height=item.height,
        defect_class=item.cand.defect_class,
        origin=str(item.cand.mask.resolve()) if item.cand.mask else None,
    )
    session.add(sample)
    if item.mask is not None:
        enc = rle_mod.encode(item.mask)
        sample.masks.append(Mask(source=MaskSource.GROUND_TRUTH, rle=enc, area=int(item.mask.sum())))


def ingest(
    db: Database,
    dataset: Path | str,
    strict: bool = False,
    progress: ProgressFn | None = None,
    batch_size: int = 64,
    workers: int = 4,
    split_ratios: Iterable[float] = (0.8, 0.1, 0.1),
    split_seed: int = 1234,
) -> IngestReport:
    layout, cands, discovery_bad = discover(Path(dataset))
    report = IngestReport(layout=layout, bad=list(discovery_bad), total_candidates=len(cands))
    with db.session() as s:
        known = set(s.scalars(select(Sample.sha256)))
    pending: list[Loaded] = []

    def scan() -> Iterator[None]:
        """Yields after each good, new sample is queued in `pending`."""
        for done, (cand, res) in enumerate(_load_all(cands, workers), start=1):
            if isinstance(res, BadFile):
                report.bad.append((str(cand.image), str(res).replace(f"{cand.image}: ", "")))
            elif res.sha in known:
                report.skipped_existing += 1
            else:
                known.add(res.sha)
                pending.append(res)
                report.added[cand.defect_class] += 1
                if res.mask is None:
                    report.without_mask[cand.defect_class] += 1
                yield
            if progress:
                progress(done, len(cands))

    def flush(session: Session) -> None:
        for item in pending:
            _write(session, item)
        pending.clear()

    if strict:
        for _ in scan():
            pass
        if report.bad:
            report.added.clear()
            report.without_mask.clear()
            path, reason = report.bad[0]
            raise IngestError(f"--strict: {len(report.bad)} bad file(s), nothing stored; first: {path}: {reason}")
        with db.session() as s:
            flush(s)
    else:
        for _ in scan():
            if len(pending) >= batch_size:
                with db.session() as s:
                    flush(s)
        if pending:
            with db.session() as s:
                flush(s)
    assign_splits(db, tuple(split_ratios), split_seed)
    return report
