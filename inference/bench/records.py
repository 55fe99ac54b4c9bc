"""Latency results in the project store: saving a run (one transaction), the history and its CSV export."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select

from inference.bench.core import BenchResult
from inference.bench.machine import short_label
from store.db import Database
from store.schema import Export, LatencyResult, ModelRecord

CSV_COLUMNS = (
    "id", "created_at", "model", "target", "device", "backend", "precision", "batch",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "fps", "peak_mem_mb", "export_id", "model_id",
)


def find_model_refs(db: Database, path: Path | str) -> dict[str, Any]:
    """The export or model record whose file this is, if any: its ids, precision and a readable label."""
    resolved = str(Path(path).expanduser().resolve())
    candidates = {str(path), resolved}
    refs: dict[str, Any] = {}
    with db.session() as s:
        exp = s.scalars(select(Export).where(Export.path.in_(candidates)).order_by(Export.id.desc())).first()
        if exp is not None:
            refs.update(export_id=exp.id, model_id=exp.model_id, precision=exp.precision,
                        label=f"{Path(exp.path).stem} ({exp.fmt} {exp.variant})", card=dict(exp.card or {}))
        model = s.scalars(
            select(ModelRecord).where(ModelRecord.checkpoint_path.in_(candidates)).order_by(ModelRecord.id.desc())
        ).first()
        if model is not None:
            refs.setdefault("model_id", model.id)
            refs.setdefault("label", model.name)
            refs.setdefault("input_size", model.input_size)
    return refs


def save_results(
    db: Database,
    results: Sequence[BenchResult],
    machine: dict[str, Any],
    export_id: int | None = None,
    model_id: int | None = None,
) -> list[int]:
    """Store all results of one run together, or none of them."""
    ids: list[int] = []
    with db.session() as s:
        rows = []
        for r in results:
            device = dict(machine)
            device.update(r.device)
            if r.options:
                device["options"] = r.options
            rows.append(LatencyResult(
                export_id=export_id,
                model_id=model_id,
                model_label=r.model_label,
                target=r.target,
                backend=r.backend[:32],
                precision=r.precision[:16],
                batch=r.batch,
                p50_ms=r.stats.p50_ms,
                p90_ms=r.stats.p90_ms,
                p99_ms=r.stats.p99_ms,
                mean_ms=r.stats.mean_ms,
                throughput=r.stats.throughput,
                peak_mem_mb=r.peak_mem_mb,
                device=device,
                raw=r.raw,
            ))
        s.add_all(rows)
        s.flush()
        ids = [row.id for row in rows]
    return ids


def _fps(row: LatencyResult) -> float | None:
    if row.throughput:
        return float(row.throughput)
    if row.p50_ms:
        return row.batch * 1000.0 / row.p50_ms
    return None


def row_dict(row: LatencyResult) -> dict[str, Any]:
    created = row.created_at
    if isinstance(created, dt.datetime):
        created_s = created.strftime("%Y-%m-%d %H:%M:%S")
    else:
        created_s = str(created or "")
    device = row.device or {}
    return {
        "id": row.id,
        "created_at": created_s,
        "model": row.model_label,
        "target": row.target,
        "device": short_label(device),
        "backend": row.backend,
        "precision": row.precision,
        "batch": row.batch,
        "p50_ms": row.p50_ms,
        "p90_ms": row.p90_ms,
        "p99_ms": row.p99_ms,
        "mean_ms": row.mean_ms,
        "fps": _fps(row),
        "peak_mem_mb": row.peak_mem_mb,
        "export_id": row.export_id,
        "model_id": row.model_id,
    }


def history(db: Database, limit: int = 1000) -> list[dict[str, Any]]:
    """Newest first."""
    with db.session() as s:
        rows = s.scalars(select(LatencyResult).order_by(LatencyResult.id.desc()).limit(limit)).all()
        return [row_dict(r) for r in rows]


def export_csv(rows: Sequence[dict[str, Any]], path: Path | str) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                        for k in CSV_COLUMNS})
    tmp.replace(path)
    return len(rows)
