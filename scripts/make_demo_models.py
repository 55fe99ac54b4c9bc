#!/usr/bin/env python
"""Make the demo models shipped under assets/demo_models, with the project's own commands, on the demo data.

  1. the demo data set: store.synthetic, the same seed and count as the demo project (app.demo)
  2. a project with a REDUCED SAM 2.1 teacher ("sam2.1_hiera_demo", inference/sam2_configs.py) trained from scratch:
       maskbench train --mode finetune-teacher
  3. the student distilled from it:  maskbench train --mode distill
  4. the student exported:           maskbench export (the split encoder/decoder pair, then INT8 weight-only)
  5. the demo's predictions (teacher and student, one ground-truth point per crop) stored as data, keyed by the
     crop's file name in the synthetic data set (and its sha256), so a station without torch shows both masks
  6. MODEL_CARD.md (how the models were made and how good they are), manifest.json (files, sha256, sizes) and
     training_epochs.json (the per-epoch losses and validation IoU)

Full scale (GPU; the shipped build, about 9 minutes on one H200):
    python scripts/make_demo_models.py --device cuda --epochs-teacher 300 --epochs-student 250 \
        --time-limit-teacher 210 --time-limit-student 160
Toy scale (CPU):   .venv/bin/python scripts/make_demo_models.py --epochs-teacher 1 --epochs-student 1 \
                       --teacher-size 128 --student-size 128 --out /tmp/demo_models
The demo models are NOT SA-1B-pretrained SAM 2: they learned from 48 synthetic crops only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEACHER_CONFIG = "sam2.1_hiera_demo"
DEMO_COUNT = 60  # app.demo.build_demo_project's defaults
DEMO_SEED = 7
BUDGET_BYTES = 25 * 1024 * 1024
TEACHER_FILE = "teacher_sam2.1_hiera_demo_fp16.pt"
ENCODER_FILE = "student_encoder_int8w.onnx"
DECODER_FILE = "student_decoder_int8w.onnx"
PREDICTIONS_FILE = "demo_predictions.json"
EPOCHS_FILE = "training_epochs.json"


BACKSTOP_S = 90.0  # past a run's time budget: the last validation and checkpoint writes


def backstop(limit: float | None) -> float | None:
    return None if limit is None else limit + BACKSTOP_S


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], log: list[str], jsonl: Path | None = None, time_limit: float | None = None) -> dict:
    """Runs one maskbench command; its JSON lines go to `jsonl` and every tenth epoch is echoed. With a time limit
    the command gets SIGTERM at the deadline (train then stops after the step, keeping best.pt), so a build on a
    leased GPU ends in time with the best model so far. Returns the last JSON event it printed."""
    shown = "maskbench " + " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {shown}", flush=True)
    log.append(shown)
    t0 = time.time()
    last: dict = {}
    epochs = 1
    out = open(jsonl, "w", encoding="utf-8") if jsonl else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", *cmd], cwd=REPO, stdout=subprocess.PIPE, text=True)
    timer = None
    if time_limit:
        timer = threading.Timer(time_limit, lambda: proc.poll() is None and proc.send_signal(signal.SIGTERM))
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if out:
                out.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            last = event
            if event.get("event") == "start":
                epochs = max(1, int(event.get("epochs") or 1))
            if event.get("event") == "epoch":
                if event["epoch"] % max(1, epochs // 10) == 0 or event["epoch"] == epochs:
                    iou = event.get("val_iou_gt")
                    print(f"  epoch {event['epoch']}/{epochs}  loss {event.get('loss', float('nan')):.4f}  "
                          f"val IoU vs GT {iou if iou is None else round(iou, 4)}  "
                          f"{event.get('images_per_s', 0):.0f} img/s  ({time.time() - t0:.0f} s)", flush=True)
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if out:
            out.close()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, shown)
    if last.get("status") == "stopped":
        why = f"after {time_limit:.0f} s" if time_limit else "by a signal"
        print(f"  stopped {why} (step {last.get('step')})", flush=True)
        log[-1] += f"   # stopped {why} at step {last.get('step')}"
    print(f"  ({time.time() - t0:.0f} s)", flush=True)
    return last


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def fp16_checkpoint(src: Path, dst: Path) -> int:
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)["model"]
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    torch.save({"model": half, "meta": {"config": TEACHER_CONFIG, "note": "demo teacher, not SA-1B-pretrained"}}, dst)
    return sum(v.numel() for v in state.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "demo_models")
    ap.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one, removed).")
    ap.add_argument("--epochs-teacher", type=int, default=60)
    ap.add_argument("--epochs-student", type=int, default=80)
    ap.add_argument("--teacher-size", type=int, default=512, help="Teacher input size.")
    ap.add_argument("--student-size", type=int, default=256, help="Student input size.")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--count", type=int, default=DEMO_COUNT, help="Demo crops (the demo project uses 60).")
    ap.add_argument("--seed", type=int, default=DEMO_SEED)
    ap.add_argument("--max-steps", type=int, default=None, help="Cap optimiser steps per run (toy runs).")
    ap.add_argument("--checkpoint-every", type=int, default=25, help="Epochs between epoch checkpoints.")
    ap.add_argument("--time-limit-teacher", type=float, default=None,
                    help="Seconds after which teacher training stops (keeping its best checkpoint).")
    ap.add_argument("--time-limit-student", type=float, default=None,
                    help="Seconds after which student training stops (keeping its best checkpoint).")
    args = ap.parse_args(argv)

    from store.ingest import ingest
    from store.project import Project
    from store.synthetic import write_dataset

    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="maskbench-demo-models-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    try:
        data, proj = work / "data", work / "project"
        if not data.exists():
            write_dataset(data, args.count, args.seed)
        with Project.create(proj, name="demo models") as p:
            ingest(p.db, data)
            dist = p.config["distillation"]
            # native pixel scale (issue 14): the teacher sees the crops 1:1 on its canvases, the student at its
            # canvas' share of that, so both canvases cover the same region of a crop
            dist["teacher"].update({"model": TEACHER_CONFIG, "image_size": args.teacher_size, "checkpoint": None,
                                    "scale": 1.0})
            dist["student"].update({"input_size": args.student_size, "scale": args.student_size / args.teacher_size})
            # a time limit is the run's time budget: its one-cycle schedule spans the limit (and ends) instead of
            # being cut at the deadline; the deadline (limit + BACKSTOP_S) only stops a run that overruns it
            dist["training"].update({"batch_size": args.batch_size, "log_every": 50,
                                     "amp": args.device != "cpu", "checkpoint_every": args.checkpoint_every,
                                     "time_budget_s": args.time_limit_teacher or 0.0})
            dist.setdefault("finetune_teacher", {}).update({"lr": 3e-4, "batch_size": args.batch_size})
            p.config["hardware"]["calibration_samples"] = min(64, args.count)
            p.save_config()
        steps = ["--max-steps", str(args.max_steps)] if args.max_steps else []
        common = ["--project", str(proj), "--device", args.device, "--no-progress", *steps]

        # 2. teacher: SAM 2.1 architecture at a reduced size, trained from random weights on the demo crops
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        teacher_end = run(["train", *common, "--mode", "finetune-teacher", "--epochs", str(args.epochs_teacher),
                           "--name", "demo-teacher"], commands, logs / "teacher.jsonl",
                          backstop(args.time_limit_teacher))
        teacher_pt = proj / "runs" / "demo-teacher" / "teacher.pt"
        if not teacher_pt.is_file():
            teacher_pt = proj / "runs" / "demo-teacher" / "checkpoints" / "best.pt"
        with Project.open(proj) as p:
            p.config["distillation"]["teacher"]["checkpoint"] = str(teacher_pt)
            p.config["distillation"]["training"]["time_budget_s"] = args.time_limit_student or 0.0
            p.save_config()

        # 3. student distilled from it
        student_end = run(["train", *common, "--mode", "distill", "--epochs", str(args.epochs_student),
                           "--name", "demo-student"], commands, logs / "student.jsonl",
                          backstop(args.time_limit_student))
        ckpt_dir = proj / "runs" / "demo-student" / "checkpoints"
        student_ckpt = ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").is_file() else ckpt_dir / "last.pt"

        # 4. export: the split pair (what ort_backend runs), then INT8 weight-only to fit the budget
        run(["export", "--project", str(proj), "--checkpoint", str(student_ckpt), "--precision", "int8-weight",
             "--split-pair"], commands)
        export_dir = sorted((proj / "exports").iterdir(), key=lambda d: d.stat().st_mtime)[-1]
        enc32 = next(export_dir.glob("*encoder*.onnx"))
        dec32 = next(export_dir.glob("*decoder*.onnx"))
        from inference.export.quantize import to_int8_weight

        to_int8_weight(enc32, out / ENCODER_FILE)
        to_int8_weight(dec32, out / DECODER_FILE)
        params = fp16_checkpoint(teacher_pt, out / TEACHER_FILE)
        from inference.export.student_api import load_checkpoint

        student_cfg = load_checkpoint(student_ckpt)[0].config  # what the card says the student is

        # 5. predictions of the shipped files on the demo crops (what app.demo_models installs)
        preds, parity, quality_figures = make_predictions(proj, data, out, args.teacher_size, enc32, dec32)
        (out / PREDICTIONS_FILE).write_text(json.dumps(preds, separators=(",", ":")), encoding="utf-8")

        # 6. training log, manifest + model card
        write_epoch_log(logs, out / EPOCHS_FILE)
        files = [TEACHER_FILE, ENCODER_FILE, DECODER_FILE, PREDICTIONS_FILE]
        manifest = {
            "format": "maskbench.demo_models/1",
            "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "pretrained": False,
            "note": "demo models trained only on the synthetic demo crops; NOT SA-1B-pretrained SAM 2",
            "data": {"generator": "store.synthetic.write_dataset", "count": args.count, "seed": args.seed},
            "teacher": {"file": TEACHER_FILE, "config": TEACHER_CONFIG, "image_size": args.teacher_size, "scale": 1.0,
                        "params": params, "epochs": args.epochs_teacher, "precision": "fp16 weights",
                        "steps": teacher_end.get("step"), "status": teacher_end.get("status"),
                        "best_val_iou": _round(teacher_end.get("best_val_iou"))},
            "student": {"encoder": ENCODER_FILE, "decoder": DECODER_FILE, "input_size": args.student_size,
                        "backbone": student_cfg.backbone, "mask_stride": student_cfg.mask_stride,
                        "context_blocks": student_cfg.context_blocks, "refine_blocks": student_cfg.refine_blocks,
                        "epochs": args.epochs_student, "precision": "int8 weight-only",
                        "steps": student_end.get("step"), "status": student_end.get("status"),
                        "best_val_iou": _round(student_end.get("best_val_iou")),
                        "int8_vs_fp32_pair_iou": parity},
            "quality": quality_figures,
            "predictions": {"file": PREDICTIONS_FILE, "prompt_source": "ground_truth", "points": 1,
                            "crops": len(preds["crops"])},
            "python": platform.python_version(),
            "device": args.device, "device_name": _device_name(args.device), "max_steps": args.max_steps,
            "commands": commands,
            "files": {f: {"sha256": sha256(out / f), "bytes": (out / f).stat().st_size} for f in files},
        }
        manifest["total_bytes"] = sum(v["bytes"] for v in manifest["files"].values())
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (out / "MODEL_CARD.md").write_text(model_card(manifest, argv if argv is not None else sys.argv[1:]),
                                           encoding="utf-8")
        total = manifest["total_bytes"]
        print(f"demo models in {out}: {total / 1e6:.2f} MB in all ({time.time() - started:.0f} s)")
        if total > BUDGET_BYTES:
            print(f"error: {total / 1e6:.1f} MB is over the 25 MB budget", file=sys.stderr)
            return 1
        return 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def make_predictions(proj: Path, data: Path, out: Path, teacher_size: int, enc32: Path,
                     dec32: Path) -> tuple[dict, float, dict]:
    """Teacher (torch) and student (the shipped INT8 pair) predictions, keyed by data-set-relative file name;
    the INT8-vs-FP32 pair IoU; and how good the shipped predictions are (quality())."""
    import numpy as np
    from sqlalchemy import select

    from inference.batch import predict_project
    from inference.ort_backend import OrtStudentSegmenter
    from inference.registry import add_model, add_onnx_student
    from store.project import Project
    from store.schema import Mask, Prediction, Sample

    with Project.open(proj) as p:
        add_model(p, "teacher", out / TEACHER_FILE, config=TEACHER_CONFIG, image_size=teacher_size,
                  name="demo teacher (sam2.1_hiera_demo)", scale=1.0)
        add_onnx_student(p, out / ENCODER_FILE, out / DECODER_FILE, name="demo student (int8w)")
        for kind in ("teacher", "student"):
            predict_project(p, kind, prompt_source="ground_truth", batch_size=8)
        result: dict = {"prompt_source": "ground_truth", "crops": {}}
        with p.db.session() as s:
            rows = s.execute(
                select(Sample.path, Sample.sha256, Prediction.points, Prediction.labels, Prediction.score,
                       Mask.rle, Mask.source).join(Prediction, Prediction.sample_id == Sample.id)
                .join(Mask, Mask.id == Prediction.mask_id).order_by(Prediction.id)).all()
        for path, sha, points, labels, score, rle, source in rows:
            key = Path(path).resolve().relative_to(data.resolve()).as_posix()
            entry = result["crops"].setdefault(key, {"sha256": sha})
            entry[source.value if hasattr(source, "value") else str(source)] = {
                "rle": rle, "points": points, "labels": labels, "score": round(float(score), 4)}
        # how far the shipped INT8 pair is from the FP32 pair the exporter checked
        from store.images import load_image
        from inference.segmenter import Prompt

        s8 = OrtStudentSegmenter(out / ENCODER_FILE, out / DECODER_FILE, providers=["CPUExecutionProvider"])
        s32 = OrtStudentSegmenter(enc32, dec32, providers=["CPUExecutionProvider"])
        ious = []
        for key, entry in list(result["crops"].items())[:16]:
            st = entry.get("student")
            if not st:
                continue
            img = load_image(data / key)
            pr = Prompt(points=np.asarray(st["points"], np.float32), labels=np.asarray(st["labels"], np.int32))
            a, b = s8.predict([img], [pr])[0].mask, s32.predict([img], [pr])[0].mask
            union = np.logical_or(a, b).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
        quality_figures = quality(p, result)
    return result, round(float(np.mean(ious)) if ious else 1.0, 4), quality_figures


def write_epoch_log(logs: Path, dst: Path) -> None:
    """The epoch events of both training runs (losses, validation IoU, throughput), rounded: the evidence behind
    the model card's table, small enough to ship beside it."""
    runs = {}
    for name in ("teacher", "student"):
        src = logs / f"{name}.jsonl"
        events = []
        for line in src.read_text(encoding="utf-8").splitlines() if src.is_file() else []:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("event") == "epoch":
                events.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in e.items()
                               if k != "event"})
        runs[name] = events
    dst.write_text(json.dumps(runs, separators=(",", ":")) + "\n", encoding="utf-8")


def quality(project, preds: dict) -> dict:  # noqa: ANN001 - store.project.Project
    """Mean IoU vs ground truth of the shipped teacher and student masks per split, and how many crops the demo
    flags (teacher/student IoU below 1 - disagreement threshold): the model card states them, so nobody takes the
    demo models for more than they are."""
    import numpy as np
    from sqlalchemy import select

    from review.metrics import iou, is_flagged
    from store import rle as rle_mod
    from store.schema import Mask, MaskSource, Sample

    threshold = float(project.config["distillation"].get("disagreement_threshold", 0.15))
    with project.db.session() as s:
        gt = {sha: (split, rle) for sha, split, rle in s.execute(
            select(Sample.sha256, Sample.split, Mask.rle).join(Mask, Mask.sample_id == Sample.id)
            .where(Mask.source == MaskSource.GROUND_TRUTH))}
    per_split: dict[str, dict[str, list[float]]] = {}
    flagged = 0
    for entry in preds["crops"].values():
        split, gt_rle = gt[entry["sha256"]]
        g = rle_mod.decode(gt_rle).astype(bool)
        t = rle_mod.decode(entry["teacher"]["rle"]).astype(bool)
        st = rle_mod.decode(entry["student"]["rle"]).astype(bool)
        row = per_split.setdefault(split, {"teacher": [], "student": []})
        row["teacher"].append(iou(t, g))
        row["student"].append(iou(st, g))
        flagged += is_flagged(iou(t, st), threshold)
    out = {split: {"crops": len(v["teacher"]), "teacher_iou_gt": round(float(np.mean(v["teacher"])), 4),
                   "student_iou_gt": round(float(np.mean(v["student"])), 4)} for split, v in sorted(per_split.items())}
    return {"per_split": out, "flagged": flagged, "crops": len(preds["crops"]), "threshold": threshold}


def model_card(m: dict, argv: list[str]) -> str:
    f = m["files"]
    rows = "\n".join(f"| `{k}` | {v['bytes'] / 1e6:.2f} MB | `{v['sha256'][:16]}…` |" for k, v in f.items())
    cmds = "\n".join(m["commands"])
    q = m["quality"]
    quality_rows = "\n".join(f"| {k} | {v['crops']} | {v['teacher_iou_gt']:.3f} | {v['student_iou_gt']:.3f} |"
                             for k, v in q["per_split"].items())
    return f"""# maskbench demo models

**These are NOT SA-1B-pretrained SAM 2 models.** They were trained from random weights on the 60 synthetic crops
of the demo project only, so that a fresh install (and a torch-free inspection station) shows real teacher and
student predictions offline. They are good for trying the workbench and nothing else. For real work import an
official checkpoint: `maskbench models download sam2.1_hiera_small --project P` (or `maskbench models add teacher
sam2.1_hiera_small.pt --project P`).

## How they were made

`python scripts/make_demo_models.py {' '.join(shlex.quote(a) for a in argv)}` on {m['device']}
({m.get('device_name') or '?'}, Python {m.get('python') or platform.python_version()}, {m['made']}), which ran:

1. data: `store.synthetic.write_dataset(data, {m['data']['count']}, seed={m['data']['seed']})` (the demo project's
   generator; ingested with the default 80/10/10 split)
2. teacher: SAM 2.1 architecture through the `sam2` package, config `{m['teacher']['config']}`
   (`inference/sam2_configs.py`: sam2.1_hiera_t with a 32-channel, 5-block Hiera trunk and one memory-attention
   layer), input {m['teacher']['image_size']} px, {m['teacher']['params']:,} parameters, random initialisation,
   up to {m['teacher']['epochs']} epochs of `train --mode finetune-teacher` on the ground-truth masks; weights stored in
   FP16 (loaded into FP32)
3. student: `train --mode distill` from that teacher, input {m['student']['input_size']} px,
   up to {m['student']['epochs']} epochs (loss weights of the project template: 0.4 feature / 0.3 soft BCE / 0.3 Dice)
   Both runs use the project's training recipe (issue 14): crops at native pixel scale on square canvases,
   interactive clicks (1-3 positive, 0-2 negative, one follow-up click in the largest error), class-balanced
   sampling, positive-pixel weighting, an EMA of the weights, a one-cycle schedule spanning the run's time budget
   (`training.time_budget_s`, set from `--time-limit-*`), and the best validation epoch kept. The student has the
   1/{m['student']['mask_stride']} mask head (`mask_stride: {m['student']['mask_stride']}`),
   {m['student']['context_blocks']} context blocks and {m['student']['refine_blocks']} refine blocks on its decoder,
   and a `{m['student']['backbone']}` encoder.
4. export: `export --precision int8-weight --split-pair`; the FP32 encoder/decoder pair then quantised to INT8
   weight-only (`inference.export.quantize.to_int8_weight`); mean IoU of the INT8 pair vs the FP32 pair on 16
   demo crops: {m['student']['int8_vs_fp32_pair_iou']}
5. predictions: `{m['predictions']['file']}` holds the teacher's and the student's masks (COCO RLE) for the
   {m['predictions']['crops']} demo crops, one positive point from the ground truth each, keyed by the crop's file
   name in the synthetic data set (and its sha256). `app.demo_models` installs them into the demo project, so a
   station without torch shows both without running the teacher.

Commands (`maskbench` = `python -m app.cli`):

```
{cmds}
```
{f"(capped at --max-steps {m['max_steps']}: a toy-scale build)" if m['max_steps'] else ""}

## How good they are

Mean IoU of the shipped masks against the ground truth, one ground-truth point per crop (train crops were seen in
training; val/test were not):

| split | crops | teacher | student (INT8) |
|---|---|---|---|
{quality_rows}

{q['flagged']} of {q['crops']} crops are flagged (teacher/student IoU below {1 - q['threshold']:.2f}), so the
demo queue has real disagreements to review.

| run | optimiser steps | ended | best validation IoU vs GT (checkpoint shipped) |
|---|---|---|---|
| teacher | {m['teacher'].get('steps')} | {m['teacher'].get('status')} | {m['teacher'].get('best_val_iou')} |
| student | {m['student'].get('steps')} | {m['student'].get('status')} | {m['student'].get('best_val_iou')} |

A run that "stopped" was cut at its deadline (time limit + 90 s) before its schedule ended;
the shipped checkpoint is its best validation epoch. `{EPOCHS_FILE}` beside this card has the build's
per-epoch losses and validation IoU.

## Files ({m['total_bytes'] / 1e6:.2f} MB in all; budget 25 MB)

| file | size | sha256 |
|---|---|---|
{rows}

`manifest.json` lists the full checksums; `app.demo_models` refuses files that do not match it.
"""


if __name__ == "__main__":
    sys.exit(main())
