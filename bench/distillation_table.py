"""The distillation table on a real defect data set, with this project's own commands (issue 14's recipe).

    python bench/distillation_table.py --data ../shared/datasets/magnetic-tile --work /tmp/dt --device cuda
    python bench/distillation_table.py --toy --work /tmp/dt-toy            # CPU, minutes: what CI runs

Steps, each a `maskbench` command run as a subprocess (so the table measures what users run):
  init + ingest (stratified, seeded 80/10/10 split stored on the samples)
  teacher: SAM 2 built from the package config with random weights (official SA-1B weights cannot be downloaded
           here; by default with the ResNet-50-D trunk and click maps, sam2.1_resnet50d_clicks: Hiera does not learn
           from random weights on a few hundred crops), fine-tuned at native pixel scale with
           `train --mode finetune-teacher`, registered with `models add teacher --scale`; it trains alone (the
           slowest model, and every student learns from it)
  students (same schedule): `train --mode distill --no-feature-loss` (naive), `train --mode distill`
           (feature-aligned) with the default 1/2 mask head, and the feature-aligned student with seed 001's 1/8 head
  baselines on the same split: `train --mode unet` (a plain supervised U-Net with click maps, beside the students)
           and a classical blur-subtract-threshold tuned on the training crops (inference.baselines.classical)
  evaluation on the test split: `predict --prompts ground_truth` (one positive click inside the ground truth, the
           same click for every model) -> IoU per class from the stored masks; interactive metrics (mIoU after 1, 3
           and 5 clicks, NoC@85/90, inference.interactive) for every row
  training throughput and the per-epoch time split from the runs' JSON lines; export and CPU latency (optional)
Results: WORK/table.md and WORK/table.json. Stages already done are skipped, so a long run can be resumed;
`--until teacher` / `--until students` stops after that stage (one stage per sitting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.sam2_configs import SCRATCH_TEACHER  # noqa: E402  (no torch: the table's CLI stays light)

SUPERVISED_ONLY = {"feature_weight": 0.0, "soft_bce_weight": 0.0, "dice_weight": 1.0}
STUDENTS = {  # kind -> (train flags, student overrides, loss overrides, training overrides)
    "naive": (["--no-feature-loss"], {"mask_stride": 2}, {}, {}),
    "feature_aligned": ([], {"mask_stride": 2}, {}, {}),
    "feature_aligned_1/8": ([], {"mask_stride": 8}, {}, {}),
    # the soft term (and unlabelled crops' follow-ups) against the teacher averaged over four mirror views
    "feature_aligned_tflips": ([], {"mask_stride": 2}, {}, {"teacher_flip_views": 4}),
    # the same student on the ground truth alone (no teacher terms): what distillation adds is the difference
    "supervised": ([], {"mask_stride": 2}, SUPERVISED_ONLY, {}),
}


def student_row(label: str, backbone: str | None) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A row is KIND or KIND@BACKBONE (a timm backbone of inference.student.BACKBONES); plain KIND uses --backbone."""
    kind, _, bb = label.partition("@")
    if kind not in STUDENTS:
        raise SystemExit(f"unknown student row {label!r}; kinds: {', '.join(STUDENTS)}")
    flags, overrides, loss, training = STUDENTS[kind]
    bb = bb or backbone
    return flags, {**overrides, **({"backbone": bb} if bb else {})}, loss, training


def run_name(label: str) -> str:
    return label.replace("/", "_").replace("@", "_")


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


def sh_parallel(jobs: list[list[str]], log: Path) -> None:
    """Run several `python main.py ARGS` at once (one GPU serves several small trainings better than one: each
    step of these models is bound by the host, not the GPU); logs go to LOG.<i>; fail if any fails."""
    procs = []
    t0 = time.time()
    for i, args in enumerate(jobs):
        fh = open(f"{log}.{i}", "a", encoding="utf-8")
        fh.write(f"\n$ maskbench {' '.join(args)}\n")
        fh.flush()
        procs.append((args, fh, subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO,
                                                 stdout=fh, stderr=subprocess.STDOUT, text=True)))
    failed = []
    for args, fh, proc in procs:
        rc = proc.wait()
        fh.write(f"[exit {rc} after {time.time() - t0:.1f} s]\n")
        fh.close()
        print(f"  maskbench {' '.join(args)}  ({time.time() - t0:.0f} s, exit {rc})", flush=True)
        if rc != 0:
            failed.append(" ".join(args))
    if failed:
        raise SystemExit("step failed: " + "; ".join(failed))


def run_budget(work: Path, config: str) -> float | None:
    """The time budget (s) a run was given, from the WORK/CONFIG.yaml the table wrote for it: a run from an earlier
    sitting keeps its own, whatever this sitting's flags say; None for a run the table has not written."""
    import yaml

    path = work / f"{config}.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))["training"]["time_budget_s"]  # every run's, as written


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def random_teacher(config: str, image_size: int, out: Path) -> Path:
    """An official-format {"model": state_dict} SAM 2 checkpoint with random weights (no SA-1B download here)."""
    if out.exists():
        return out
    import torch

    from inference.sam2_net import build_model

    torch.manual_seed(0)
    model = build_model(config, image_size=image_size)
    torch.save({"model": model.state_dict()}, out)
    return out


def teacher_params(path: Path) -> int:
    from inference.sam2_net import read_state_dict

    return int(sum(v.numel() for v in read_state_dict(path).values() if hasattr(v, "numel")))


def run_dir(project: Path, name: str) -> Path:
    return project / "runs" / run_name(name)


def trained(project: Path, name: str) -> bool:
    """Whether run NAME of an earlier sitting ran to its end (resume skips it). A run cut off mid-way (a device call
    that ran out of time) may have a best.pt from its early epochs: resuming must not take that for a result, and
    training again would go to NAME-2 beside it, so stop and say what to remove."""
    path = run_dir(project, name) / "metrics.jsonl"
    if not run_dir(project, name).exists():
        return False
    lines = path.read_text().splitlines() if path.is_file() else []
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    ends = [r for r in rows if r.get("event") == "end"]
    if ends and ends[-1].get("status") == "finished" and (run_dir(project, name) / "checkpoints" / "best.pt").is_file():
        return True
    raise SystemExit(f"run {name} in {project} did not finish (cut off?): remove {run_dir(project, name)} "
                     "to train it again")


def best_of(project: Path, name: str) -> Path:
    path = run_dir(project, name) / "checkpoints" / "best.pt"
    if not path.is_file():
        raise SystemExit(f"run {name}: {path} missing")
    return path


def figure(x: float | None, digits: int = 3) -> str:
    """A table cell: the number to `digits` places, "-" where the figure does not exist (no validation for the
    classical baseline, no test crops in a split too small to hold any)."""
    return "-" if x is None else f"{x:.{digits}f}"


def run_report(project: Path, name: str) -> dict[str, Any]:
    """Epoch curve, throughput and the per-epoch time split of one run, from its JSON lines."""
    path = run_dir(project, name) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    epochs = [r for r in rows if r.get("event") == "epoch"]
    steady = epochs[1:] or epochs  # the first epoch pays for warm-up (allocator, autotuning)
    split: dict[str, float] = defaultdict(float)
    for e in steady:
        for k, v in (e.get("time") or {}).items():
            split[k] += v / len(steady)
    epoch_s = statistics.mean(e["epoch_s"] for e in steady) if steady else None
    start = next((r for r in rows if r.get("event") == "start"), {})
    cache = next((r for r in rows if r.get("event") == "cache_ready"), None)
    return {
        "epochs": [{k: e.get(k) for k in ("epoch", "loss", "val_iou_gt", "val_iou_teacher", "images_per_s")}
                   for e in epochs],
        "images_per_s": statistics.median(e["images_per_s"] for e in steady) if steady else None,
        "time_split_s": dict(split), "epoch_s": epoch_s,
        "val_and_checkpoint_share": ((split.get("validation_s", 0) + split.get("checkpoint_s", 0)) / epoch_s)
        if epoch_s else None,
        "best_val_iou": max((e["val_iou_gt"] for e in epochs if e.get("val_iou_gt") is not None), default=None),
        "batch_size": start.get("batch_size"), "train_samples": start.get("train_samples"),
        "teacher_cache_s": cache.get("seconds") if cache else None,
        "wall_s": sum(e["epoch_s"] for e in epochs),
    }


def stored_one_click(project: Path, models: dict[str, int]) -> dict[str, Any]:
    """Test-split IoU per class vs ground truth (and vs the teacher) from the stored ground-truth-prompted masks."""
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

        teacher = masks_of(models["teacher"])
        out: dict[str, Any] = {}
        for label, model_id in models.items():
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
                "test_iou": sum(all_ious) / max(len(all_ious), 1), "n": len(all_ious),
                "per_class": {c: sum(v) / len(v) for c, v in sorted(per_class.items())},
                "iou_vs_teacher": (sum(vs_teacher) / len(vs_teacher)) if vs_teacher else None,
                "free_false_positive_area": (sum(free_fp) / len(free_fp)) if free_fp else None,
            }
    return out


def split_items(project: Path, split: str) -> list[Any]:
    """(sample_id, class, image, gt) of a split's crops, for the baselines and the interactive metrics."""
    from sqlalchemy import select

    from inference.interactive import InteractiveItem
    from store import rle
    from store.images import load_image
    from store.project import Project
    from store.schema import Mask, MaskSource, Sample

    with Project.open(project) as p, p.db.session() as s:
        rows = s.execute(select(Sample.id, Sample.defect_class, Sample.path, Mask.rle)
                         .join(Mask, Mask.sample_id == Sample.id)
                         .where(Sample.split == split, Mask.source == MaskSource.GROUND_TRUTH)
                         .order_by(Sample.id)).all()
    return [InteractiveItem(sid, cls, load_image(path), rle.decode(r).astype(bool)) for sid, cls, path, r in rows]


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


def flip_label(label: str) -> str:
    """The row of `label` evaluated with four-view flip averaging (inference.flip_ensemble)."""
    return f"{label}+flips"


def interactive_stage(work: Path, device: str, max_clicks: int) -> None:
    """mIoU@k and NoC for every row, from the checkpoints directly (no registry), so it runs beside the predict
    chain; writes WORK/interactive.json."""
    from inference.baselines.classical import ClassicalSegmenter, tune
    from inference.baselines.unet import UNetSegmenter
    from inference.baselines.unet import load_checkpoint as load_unet
    from inference.flip_ensemble import FlipEnsemble
    from inference.interactive import evaluate
    from inference.teacher import load_teacher_segmenter
    from inference.torch_backend import load_student_segmenter

    spec = json.loads((work / "stages.json").read_text())
    project = work / "project"
    items = split_items(project, "test")
    rows: dict[str, Any] = {label: load_teacher_segmenter(t["checkpoint"], t["config"], t["image_size"],
                                                          device=device, scale=t["scale"])
                            for label, t in spec["teachers"].items()}
    for label, ck in spec["students"].items():
        rows[label] = load_student_segmenter(ck, device=device)
    if spec["unet"] is not None:  # bench/recipe_runs.py --unet-budget 0: no U-Net row
        rows["unet"] = UNetSegmenter(load_unet(spec["unet"]), device=device)
    params, train_iou = tune([(it.image, it.gt_mask) for it in split_items(project, "train") if it.gt_mask.any()])
    rows["classical"] = ClassicalSegmenter(params)
    rows.update({flip_label(label): FlipEnsemble(rows[label]) for label in spec["flips"]})
    out: dict[str, Any] = {"classical_params": params.to_json(), "classical_train_iou": train_iou}
    for label, seg in rows.items():
        t0 = time.time()
        out[label] = evaluate(seg, items, max_clicks=max_clicks).to_json(include_crops=False)
        out[label]["seconds"] = round(time.time() - t0, 1)
    (work / "interactive.json").write_text(json.dumps(out, indent=2, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "magnetic-tile")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--teacher-config", default=SCRATCH_TEACHER,
                    help="SAM 2 config trained from random weights (default: the ResNet-50-D trunk; Hiera does not "
                         "learn from random weights on a few hundred crops)")
    ap.add_argument("--teacher-size", type=int, default=512)
    ap.add_argument("--teacher-scale", type=float, default=1.0, help="the teacher looks at crops this much closer")
    ap.add_argument("--student-size", type=int, default=512)
    ap.add_argument("--teacher-epochs", type=int, default=300)
    ap.add_argument("--student-epochs", type=int, default=150)
    ap.add_argument("--unet-epochs", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--teacher-batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3, help="batch 64 with lr 4e-3: docs/benchmarks.md, the batch-64 recipe")
    ap.add_argument("--teacher-lr", type=float, default=1e-3)
    ap.add_argument("--students", default="naive,feature_aligned,feature_aligned_1/8,supervised",
                    help="rows KIND or KIND@BACKBONE; kinds: " + ", ".join(STUDENTS))
    ap.add_argument("--backbone", default=None, help="student backbone of rows without @ (default: the project's)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps per run (toy runs)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--toy", action="store_true", help="synthetic data, tiny sizes, CPU: the CI smoke run")
    ap.add_argument("--sequential", action="store_true", help="one training at a time (default: in parallel)")
    ap.add_argument("--teacher-budget", type=float, default=0,
                    help="seconds for teacher fine-tuning (0: none); the run stops at its budget or its "
                         "--teacher-epochs, whichever comes first")
    ap.add_argument("--student-budget", type=float, default=0,
                    help="seconds per student run (0: none); stops at the budget or --student-epochs, "
                         "whichever comes first")
    ap.add_argument("--unet-budget", type=float, default=0,
                    help="seconds for the U-Net run (0: none); stops at the budget or --unet-epochs, "
                         "whichever comes first")
    ap.add_argument("--compile", default=None, choices=["default", "max-autotune-no-cudagraphs"],
                    help="training.compile for the student rows (1.56x images/s on one H200: docs/benchmarks.md)")
    ap.add_argument("--student-crop", type=int, default=None,
                    help="training.crop_size of the student rows: random training windows of this side (px)")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--flips", default="",
                    help="rows (e.g. teacher,feature_aligned,unet) also evaluated with four-view flip averaging, as "
                         "ROW+flips rows of the table (each costs four times that row's evaluation)")
    ap.add_argument("--until", choices=["teacher", "students", "all"], default="all",
                    help="stop after this stage; a rerun with the same --work resumes after it (a whole table "
                         "longer than one sitting, e.g. one 10-minute device call per stage)")
    ap.add_argument("--stage", choices=["all", "interactive"], default="all", help=argparse.SUPPRESS)
    a = ap.parse_args()

    work = a.work.resolve()
    if a.stage == "interactive":
        interactive_stage(work, a.device, a.max_clicks)
        return
    work.mkdir(parents=True, exist_ok=True)
    project = work / "project"
    log = work / "commands.log"
    augment: dict[str, Any] = {}
    if a.toy:
        from store.synthetic import write_dataset

        a.data = work / "toy-data"
        if not a.data.exists():
            write_dataset(a.data, 40, seed=11)
        a.teacher_size, a.teacher_scale, a.student_size = 128, 0.5, 64
        a.teacher_epochs = a.student_epochs = a.unet_epochs = 1
        a.batch_size, a.teacher_batch_size = 4, 2
        a.max_steps = a.max_steps or 2
        a.max_clicks = 5
        a.teacher_config = "sam2.1_hiera_demo"
        augment = {"dihedral": False}
    student_scale = a.teacher_scale * a.student_size / a.teacher_size  # both canvases cover the same region
    dev = ["--device", a.device]
    steps = ["--max-steps", str(a.max_steps)] if a.max_steps else []
    common = [*dev, *steps, "--no-progress"]
    students = [s for s in a.students.split(",") if s]
    flips = [s for s in a.flips.split(",") if s]
    unknown = [label for label in flips if label not in ("teacher", *students, "unet", "classical")]
    if unknown:
        raise SystemExit(f"--flips names rows the table has not: {', '.join(unknown)} "
                         f"(rows: teacher, {', '.join(students)}, unet, classical)")
    t_start = time.time()
    stage_s: dict[str, float] = {}

    def run_all(jobs: list[list[str]]) -> None:
        if a.sequential:
            for j in jobs:
                sh(j, log)
        else:
            sh_parallel(jobs, log)

    print(f"[1/5] project and data ({a.data})", flush=True)
    if not (project / "project.yaml").exists():
        sh(["init", str(project)], log)
    sh(["ingest", str(a.data), "--project", str(project)], log)
    training = {"batch_size": a.batch_size, "lr": a.lr, **({"augment": augment} if augment else {}),
                "checkpoint_every": 1000}
    base = {"student": {"input_size": a.student_size, "scale": student_scale}, "training": training}

    # runs a resumed table takes from an earlier sitting (their budgets: run_budget, from their own WORK/NAME.yaml)
    earlier = [name for name in ["teacher-finetune", "unet", *map(run_name, students)] if trained(project, name)]
    # the teacher trains alone: every student learns from it and it is the slowest model here (about 380 images/s
    # alone on an H100, 232 beside the U-Net: docs/benchmarks.md); the U-Net needs no teacher and trains beside the
    # students
    print("[2/5] teacher (SAM 2 from random initialisation, fine-tuned at native scale)", flush=True)
    t0 = time.time()
    teacher_run = "teacher-finetune"
    if not trained(project, teacher_run):
        init_ckpt = random_teacher(a.teacher_config, a.teacher_size, work / "teacher_random_init.pt")
        cfg = write_yaml(work / "teacher.yaml", {
            **base,
            "teacher": {"config": a.teacher_config, "checkpoint": str(init_ckpt), "image_size": a.teacher_size,
                        "scale": a.teacher_scale},
            "finetune_teacher": {"batch_size": a.teacher_batch_size, "lr": a.teacher_lr},
            "training": {**training, "time_budget_s": a.teacher_budget},
        })
        sh(["train", "--project", str(project), "--mode", "finetune-teacher", "--config", str(cfg),
            "--epochs", str(a.teacher_epochs), "--name", teacher_run, *common], log)
    teacher_ckpt = best_of(project, teacher_run)  # official {"model": ...} format
    sh(["models", "add", "teacher", str(teacher_ckpt), "--project", str(project), "--config", a.teacher_config,
        "--image-size", str(a.teacher_size), "--scale", str(a.teacher_scale), "--name", "teacher-finetuned"], log)
    stage_s["teacher"] = time.time() - t0
    if a.until == "teacher":
        print(f"stopped after the teacher ({stage_s['teacher']:.0f} s): rerun with the same --work to go on",
              flush=True)
        return

    print(f"[3/5] students {', '.join(students)} (distillation, {a.student_epochs} epochs) and the U-Net baseline",
          flush=True)
    t0 = time.time()
    teacher_section = {"config": a.teacher_config, "checkpoint": str(teacher_ckpt), "image_size": a.teacher_size,
                       "scale": a.teacher_scale}
    jobs = []
    for label in students:
        flags, overrides, loss, row_training = student_row(label, a.backbone)
        if not trained(project, run_name(label)):
            cfg = write_yaml(work / f"{run_name(label)}.yaml", {
                **base, "student": {**base["student"], **overrides}, "teacher": teacher_section,
                **({"loss": loss} if loss else {}),
                "training": {**training, "time_budget_s": a.student_budget, "compile": a.compile,
                             "crop_size": a.student_crop, **row_training}})
            jobs.append(["train", "--project", str(project), "--mode", "distill", *flags, "--config", str(cfg),
                         "--epochs", str(a.student_epochs), "--name", run_name(label), *common])
    if not trained(project, "unet"):
        cfg = write_yaml(work / "unet.yaml", {**base, "student": {"input_size": a.student_size, "scale": 1.0},
                                             "unet": {"crop_size": min(256, a.student_size)},
                                             "training": {**training, "time_budget_s": a.unet_budget}})
        jobs.append(["train", "--project", str(project), "--mode", "unet", "--config", str(cfg),
                     "--epochs", str(a.unet_epochs), "--name", "unet", *common])
    run_all(jobs)
    stage_s["students_and_unet"] = time.time() - t0
    if a.until == "students":
        print(f"stopped after the students and the U-Net ({stage_s['students_and_unet']:.0f} s): rerun with the same "
              "--work to go on", flush=True)
        return

    print("[4/5] evaluation on the test split: one click (predict) and interactive, side by side", flush=True)
    t0 = time.time()
    (work / "stages.json").write_text(json.dumps({
        "teachers": {"teacher": {"checkpoint": str(teacher_ckpt), "config": a.teacher_config,
                                 "image_size": a.teacher_size, "scale": a.teacher_scale}},
        "students": {label: str(best_of(project, label)) for label in students},
        "unet": str(best_of(project, "unet")), "flips": flips}))
    inter_proc = subprocess.Popen([sys.executable, __file__, "--stage", "interactive", "--work", str(work),
                                   "--device", a.device, "--max-clicks", str(a.max_clicks)], cwd=REPO,
                                  stdout=open(work / "interactive.log", "w"), stderr=subprocess.STDOUT)
    sh(["predict", "--project", str(project), "--model", "teacher", "--prompts", "ground_truth", "--split", "test",
        *dev], log)
    model_ids: dict[str, int] = {"teacher": model_id_of(project, teacher_ckpt)}
    for label in students:
        best = best_of(project, label)
        sh(["models", "add", "student", str(best), "--project", str(project), "--name", run_name(label)], log)
        sh(["predict", "--project", str(project), "--model", "student", "--prompts", "ground_truth", "--split", "test",
            *dev], log)
        model_ids[label] = model_id_of(project, best)
    results: dict[str, Any] = stored_one_click(project, model_ids)
    if inter_proc.wait() != 0:
        raise SystemExit(f"interactive evaluation failed: {(work / 'interactive.log').read_text()[-3000:]}")
    inter = json.loads((work / "interactive.json").read_text())
    for label in ["teacher", *students, "unet", "classical", *map(flip_label, flips)]:
        results.setdefault(label, {})["interactive"] = inter[label]
    for label in ("unet", "classical", *map(flip_label, flips)):  # their one-click figures: the same first click
        rep = inter[label]
        results[label].update({"test_iou": rep["overall"]["mIoU@1"], "n": rep["overall"]["n"],
                               "per_class": {c: g["mIoU@1"] for c, g in rep["per_class"].items()}})
    results["classical"]["params"] = inter["classical_params"]
    results["classical"]["train_iou"] = inter["classical_train_iou"]
    results["teacher"]["params"] = teacher_params(teacher_ckpt)
    results["teacher"]["size_mb"] = teacher_ckpt.stat().st_size / 1e6
    from inference.baselines.unet import load_checkpoint as load_unet
    from inference.baselines.unet import param_count

    results["unet"]["params"] = param_count(load_unet(best_of(project, "unet")))
    for label in [teacher_run, *students, "unet"]:
        key = "teacher" if label == teacher_run else label
        results[key]["run"] = run_report(project, label)
    stage_s["evaluation"] = time.time() - t0

    if not a.skip_export:
        print("[5/5] export FP32 / INT8", flush=True)
        for label in students:
            best = best_of(project, label)
            if not exports_of(project, best):
                sh(["export", "--project", str(project), "--checkpoint", str(best), "--precision", "fp32,int8",
                    "--no-split-pair"], log)
            results[label]["exports"] = exports_of(project, best)

    results["_meta"] = {
        "data": str(a.data), "device": a.device, "teacher_config": a.teacher_config,
        "teacher_size": a.teacher_size, "teacher_scale": a.teacher_scale, "student_size": a.student_size,
        "student_scale": student_scale, "teacher_epochs": a.teacher_epochs, "student_epochs": a.student_epochs,
        "unet_epochs": a.unet_epochs, "batch_size": a.batch_size, "teacher_batch_size": a.teacher_batch_size,
        "lr": a.lr, "teacher_lr": a.teacher_lr, "toy": a.toy, "backbone": a.backbone, "students": students,
        "flips": flips, "parallel": not a.sequential,
        "budgets_s": {"teacher": run_budget(work, "teacher"), "unet": run_budget(work, "unet"),
                      **{label: run_budget(work, run_name(label)) for label in students}},
        "wall_s": round(time.time() - t_start, 1), "stage_s": {k: round(v, 1) for k, v in stage_s.items()},
        "runs_from_earlier_sitting": earlier,
        "teacher_init": "random (no SA-1B weights available offline)", "gpu": _gpu_name(),
    }
    (work / "table.json").write_text(json.dumps(results, indent=2, default=str))
    (work / "table.md").write_text(render(results))
    print(render(results))


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def rows_of(r: dict[str, Any]) -> list[str]:
    meta = r.get("_meta") or {}
    students = meta.get("students") or ["naive", "feature_aligned", "feature_aligned_1/8"]
    rows = ["teacher", *students, "unet", "classical"]
    for label in meta.get("flips") or []:  # each flip row right after its own
        rows.insert(rows.index(label) + 1, flip_label(label))
    return rows


def render(r: dict[str, Any]) -> str:
    classes = sorted({c for k, v in r.items() if not k.startswith("_") for c in v.get("per_class", {})})
    head = ("| model | params | INT8 MB | test IoU, 1 click | IoU vs teacher | mIoU@3 | mIoU@5 | NoC@85 | NoC@90 | "
            + " | ".join(classes) + " |")
    lines = [head, "|" + "---|" * (9 + len(classes))]
    for label in rows_of(r):
        v = r.get(label)
        if not v:
            continue
        ex = v.get("exports", {})
        params = ex.get("fp32", {}).get("params") or v.get("params")
        int8 = ex.get("int8", {}).get("size_mb")
        vt = v.get("iou_vs_teacher")
        o = (v.get("interactive") or {}).get("overall", {})

        cells = [label, f"{params / 1e6:.2f}M" if isinstance(params, (int, float)) else "-", figure(int8, 2),
                 f"{v['test_iou']:.3f} (n={v['n']})", figure(vt), figure(o.get("mIoU@3")),
                 figure(o.get("mIoU@5")), figure(o.get("NoC@85"), 1), figure(o.get("NoC@90"), 1)]
        cells += [figure(v["per_class"].get(c)) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| run | images/s | epoch s | data s | step s | validation s | checkpoint s | val+ckpt share |",
              "|---|---|---|---|---|---|---|---|"]
    for label in rows_of(r):
        run = (r.get(label) or {}).get("run")
        if not run:
            continue
        t = run["time_split_s"]

        cells = [figure(run["images_per_s"], 0), figure(run["epoch_s"]),
                 *(figure(t.get(k)) for k in ("data_s", "step_s", "validation_s", "checkpoint_s")),
                 figure(run["val_and_checkpoint_share"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
