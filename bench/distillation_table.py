"""Reproduce seed 001's distillation table on a real defect data set with this project's own commands.

    python bench/distillation_table.py --data ../shared/datasets/magnetic-tile --work /tmp/dt --device cuda
    python bench/distillation_table.py --toy --work /tmp/dt-toy            # CPU, minutes: what CI runs

Steps, each a `maskbench` command run as a subprocess (so the table measures what users run):
  init + ingest (stratified, seeded 80/10/10 split stored on the samples)
  teacher: SAM 2 built from the package config with random weights (official SA-1B weights cannot be downloaded
           here), fine-tuned with `train --mode finetune-teacher`, registered with `models add teacher`
  students, same schedule and budget: `train --mode distill --no-feature-loss` (naive logit distillation) and
           `train --mode distill` (feature-aligned), each registered with `models add student`
  evaluation: `predict --prompts ground_truth` for the teacher and each student on the test split (one positive
           point sampled inside the ground truth, the same points for every model), IoU per class against the
           ground truth and IoU against the teacher, computed from the stored masks
  size and speed: `export` (FP32 merged graph, INT8), `bench` (GPU torch throughput, CPU ONNX Runtime latency)
Results: WORK/table.md and WORK/table.json. Stages already done are skipped, so a long GPU run can be resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sh(args: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    """Run `python main.py ARGS`, tee-ing to the log; raise with the log's tail on failure."""
    cmd = [sys.executable, str(REPO / "main.py"), *args]
    t0 = time.time()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ maskbench {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})})
        fh.write(proc.stdout)
        fh.write(f"[exit {proc.returncode} after {time.time() - t0:.1f} s]\n")
    print(f"  maskbench {' '.join(args)}  ({time.time() - t0:.0f} s, exit {proc.returncode})", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"step failed: maskbench {' '.join(args)}\n{proc.stdout[-3000:]}")
    return proc.stdout


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def random_teacher(config: str, image_size: int, out: Path) -> Path:
    """An official-format {"model": state_dict} SAM 2 checkpoint with random weights (no SA-1B download here)."""
    if out.exists():
        return out
    import torch

    from inference.teacher import build_model

    torch.manual_seed(0)
    model = build_model(config, image_size=image_size)
    torch.save({"model": model.state_dict()}, out)
    return out


def teacher_params(path: Path) -> int:
    from inference.teacher import read_state_dict

    return int(sum(v.numel() for v in read_state_dict(path).values() if hasattr(v, "numel")))


def last_run_checkpoint(project: Path, name: str, filename: str) -> Path:
    path = project / "runs" / name / "checkpoints" / filename
    if not path.is_file():
        raise SystemExit(f"run {name}: {path} missing")
    return path


def run_metrics(project: Path, name: str) -> list[dict[str, Any]]:
    path = project / "runs" / name / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [r for r in rows if r.get("event") == "epoch" or "val_iou_gt" in r]


def evaluate(project: Path, teacher_model: int, student_models: dict[str, int]) -> dict[str, Any]:
    """Test-split IoU per class vs ground truth, and vs the teacher, from the stored ground-truth-prompted masks."""
    from sqlalchemy import select

    from review.metrics import iou
    from store import rle
    from store.project import Project
    from store.schema import Mask, MaskSource, Prediction, Sample

    with Project.open(project) as p, p.db.session() as s:
        samples = {x.id: x for x in s.scalars(select(Sample).where(Sample.split == "test"))}
        gt = {m.sample_id: rle.decode(m.rle) for m in s.scalars(
            select(Mask).where(Mask.source == MaskSource.GROUND_TRUTH, Mask.sample_id.in_(list(samples))))}

        def masks_of(model_id: int) -> dict[int, Any]:
            rows = s.execute(select(Prediction.sample_id, Mask.rle).join(Mask, Mask.id == Prediction.mask_id).where(
                Prediction.model_id == model_id, Prediction.prompt_source == "ground_truth",
                Prediction.sample_id.in_(list(samples))).order_by(Prediction.id)).all()
            return {sid: rle.decode(r) for sid, r in rows}

        teacher = masks_of(teacher_model)
        out: dict[str, Any] = {}
        for label, model_id in {"teacher": teacher_model, **student_models}.items():
            pred = masks_of(model_id)
            per_class: dict[str, list[float]] = defaultdict(list)
            vs_teacher: list[float] = []
            free_fp: list[float] = []
            for sid, smp in samples.items():
                if sid not in pred or sid not in gt:
                    continue
                if not gt[sid].any():  # defect-free crop: report the false-positive area instead of IoU
                    free_fp.append(float(pred[sid].mean()))
                    continue
                per_class[smp.defect_class].append(iou(pred[sid], gt[sid]))
                if label != "teacher" and sid in teacher:
                    vs_teacher.append(iou(pred[sid], teacher[sid]))
            all_ious = [v for vs in per_class.values() for v in vs]
            out[label] = {
                "test_iou": sum(all_ious) / max(len(all_ious), 1),
                "n": len(all_ious),
                "per_class": {c: sum(v) / len(v) for c, v in sorted(per_class.items())},
                "iou_vs_teacher": (sum(vs_teacher) / len(vs_teacher)) if vs_teacher else None,
                "free_false_positive_area": (sum(free_fp) / len(free_fp)) if free_fp else None,
            }
    return out


def model_id_of(project: Path, path: Path) -> int:
    from sqlalchemy import select

    from store.images import sha256_file
    from store.project import Project
    from store.schema import ModelRecord

    sha = sha256_file(path)
    with Project.open(project) as p, p.db.session() as s:
        mid = s.scalar(select(ModelRecord.id).where(ModelRecord.sha256 == sha))
    if mid is None:
        raise SystemExit(f"{path} is not registered in {project}")
    return int(mid)


def exports_of(project: Path, checkpoint: Path) -> dict[str, dict[str, Any]]:
    from sqlalchemy import select

    from store.project import Project
    from store.schema import Export

    with Project.open(project) as p, p.db.session() as s:
        rows = s.scalars(select(Export).where(Export.variant == "single").order_by(Export.id)).all()
        out = {}
        for e in rows:
            model = (e.card or {}).get("model", {})
            if model.get("checkpoint") == str(checkpoint):
                out[e.precision] = {"size_mb": e.size_bytes / 1e6, "val_iou": e.val_iou, "status": e.status,
                                    "parity_iou": e.parity_iou, "path": e.path, "params": model.get("params")}
    return out


def latency_of(project: Path, label: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from store.project import Project
    from store.schema import LatencyResult

    with Project.open(project) as p, p.db.session() as s:
        return [{"backend": r.backend, "precision": r.precision, "batch": r.batch, "p50_ms": r.p50_ms,
                 "throughput": r.throughput, "device": (r.device or {}).get("gpu") or (r.device or {}).get("cpu")}
                for r in s.scalars(select(LatencyResult).where(LatencyResult.model_label == label))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "magnetic-tile")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--teacher-config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    ap.add_argument("--teacher-size", type=int, default=512)
    ap.add_argument("--student-size", type=int, default=512)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--student-epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--teacher-batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps per run (toy runs)")
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--toy", action="store_true", help="synthetic data, tiny sizes, CPU: the CI smoke run")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--stage", choices=["all", "train", "report"], default="all")
    a = ap.parse_args()

    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    project = work / "project"
    log = work / "commands.log"
    if a.toy:
        from store.synthetic import write_dataset

        a.data = work / "toy-data"
        if not a.data.exists():
            write_dataset(a.data, 40, seed=11)
        a.teacher_size, a.student_size = 256, 128
        a.teacher_epochs = a.student_epochs = 1
        a.batch_size, a.teacher_batch_size, a.num_workers = 8, 4, 0
        a.max_steps = a.max_steps or 3
    dev = ["--device", a.device]
    steps = ["--max-steps", str(a.max_steps)] if a.max_steps else []
    common = [*dev, *steps, "--num-workers", str(a.num_workers), "--no-progress"]
    t_start = time.time()

    print(f"[1/6] project and data ({a.data})", flush=True)
    if not (project / "project.yaml").exists():
        sh(["init", str(project)], log)
    sh(["ingest", str(a.data), "--project", str(project)], log)

    cfg_student = {"student": {"input_size": a.student_size}, "training": {"batch_size": a.batch_size}}
    print("[2/6] teacher: SAM 2 from random initialisation, fine-tuned on the training split", flush=True)
    teacher_run = "teacher-finetune"
    if not (project / "runs" / teacher_run / "checkpoints" / "best.pt").exists():
        init_ckpt = random_teacher(a.teacher_config, a.teacher_size, work / "teacher_random_init.pt")
        cfg = write_yaml(work / "teacher.yaml", {
            **cfg_student,
            "teacher": {"config": a.teacher_config, "checkpoint": str(init_ckpt), "image_size": a.teacher_size},
            "finetune_teacher": {"batch_size": a.teacher_batch_size, "lr": 1e-4},
        })
        sh(["train", "--project", str(project), "--mode", "finetune-teacher", "--config", str(cfg),
            "--epochs", str(a.teacher_epochs), "--name", teacher_run, *common], log)
    teacher_ckpt = last_run_checkpoint(project, teacher_run, "best.pt")  # official {"model": ...} format
    sh(["models", "add", "teacher", str(teacher_ckpt), "--project", str(project), "--config", a.teacher_config,
        "--image-size", str(a.teacher_size), "--name", "teacher-finetuned"], log)

    distill_cfg = write_yaml(work / "distill.yaml", {
        **cfg_student,
        "teacher": {"config": a.teacher_config, "checkpoint": str(teacher_ckpt), "image_size": a.teacher_size},
    })
    students = {"naive": ["--no-feature-loss"], "feature_aligned": []}
    for label, extra in students.items():
        print(f"[3/6] student '{label}': distillation, {a.student_epochs} epochs", flush=True)
        if not (project / "runs" / label / "checkpoints" / "best.pt").exists():
            sh(["train", "--project", str(project), "--mode", "distill", *extra, "--config", str(distill_cfg),
                "--epochs", str(a.student_epochs), "--name", label, *common], log)

    print("[4/6] evaluation on the test split (ground-truth point prompts)", flush=True)
    sh(["predict", "--project", str(project), "--model", "teacher", "--prompts", "ground_truth", *dev], log)
    student_ids: dict[str, int] = {}
    for label in students:
        best = last_run_checkpoint(project, label, "best.pt")
        sh(["models", "add", "student", str(best), "--project", str(project), "--name", label], log)
        sh(["predict", "--project", str(project), "--model", "student", "--prompts", "ground_truth", *dev], log)
        student_ids[label] = model_id_of(project, best)
    results = evaluate(project, model_id_of(project, teacher_ckpt), student_ids)
    results["teacher"]["params"] = teacher_params(teacher_ckpt)
    results["teacher"]["size_mb"] = teacher_ckpt.stat().st_size / 1e6

    print("[5/6] export FP32 / INT8 and measure", flush=True)
    for label in students:
        best = last_run_checkpoint(project, label, "best.pt")
        if not exports_of(project, best):
            precisions = "fp32,int8" if a.toy else "fp32,fp16,int8,int8-weight"
            sh(["export", "--project", str(project), "--checkpoint", str(best), "--precision", precisions,
                "--no-split-pair"], log)
        results[label]["exports"] = exports_of(project, best)
        results[label]["epochs"] = run_metrics(project, label)
    results["teacher"]["epochs"] = run_metrics(project, teacher_run)

    if not a.skip_bench:
        print("[6/6] latency: torch on the training device, ONNX Runtime on CPU", flush=True)
        for label in students:
            best = last_run_checkpoint(project, label, "best.pt")
            prec = "fp16" if a.device == "cuda" else "fp32"
            modes = "eager,cudagraph" if a.device == "cuda" else "eager"
            sh(["bench", str(best), "--project", str(project), "--provider", "torch", "--device", a.device,
                "--precision", prec, "--mode", modes, "--batch", "1,32" if not a.toy else "1",
                "--label", f"{label}-torch", "--iters", "50" if not a.toy else "5",
                "--warmup", "5" if not a.toy else "1"], log)
            fp32 = results[label]["exports"].get("fp32", {}).get("path")
            if fp32:
                s_ = a.student_size
                sh(["bench", fp32, "--project", str(project), "--provider", "cpu", "--batch", "1",
                    "--shapes", f"image:1x3x{s_}x{s_},point_coords:1x1x2,point_labels:1x1",
                    "--label", f"{label}-onnx-cpu", "--iters", "30" if not a.toy else "3", "--warmup", "3"], log)
            results[label]["latency"] = latency_of(project, f"{label}-torch") + latency_of(project, f"{label}-onnx-cpu")

    results["_meta"] = {
        "data": str(a.data), "device": a.device, "teacher_config": a.teacher_config,
        "teacher_size": a.teacher_size, "student_size": a.student_size, "teacher_epochs": a.teacher_epochs,
        "student_epochs": a.student_epochs, "batch_size": a.batch_size, "toy": a.toy,
        "wall_s": round(time.time() - t_start, 1),
        "teacher_init": "random (no SA-1B weights available offline)",
    }
    (work / "table.json").write_text(json.dumps(results, indent=2, default=str))
    (work / "table.md").write_text(render(results))
    print(render(results))


def render(r: dict[str, Any]) -> str:
    classes = sorted({c for k, v in r.items() if not k.startswith("_") for c in v.get("per_class", {})})
    head = "| model | params | FP32 MB | INT8 MB | test IoU vs GT | IoU vs teacher | " + " | ".join(classes) + " |"
    lines = [head, "|" + "---|" * (6 + len(classes))]
    for label in ("teacher", "naive", "feature_aligned"):
        v = r.get(label)
        if not v:
            continue
        ex = v.get("exports", {})
        params = ex.get("fp32", {}).get("params") or v.get("params")
        fp32 = ex.get("fp32", {}).get("size_mb") or v.get("size_mb")
        int8 = ex.get("int8", {}).get("size_mb")
        vt = v.get("iou_vs_teacher")
        cells = [label, f"{params / 1e6:.2f}M" if params else "-", f"{fp32:.1f}" if fp32 else "-",
                 f"{int8:.2f}" if int8 else "-", f"{v['test_iou']:.3f} (n={v['n']})",
                 f"{vt:.3f}" if vt is not None else "-"]
        cells += [f"{v['per_class'].get(c, float('nan')):.3f}" for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
