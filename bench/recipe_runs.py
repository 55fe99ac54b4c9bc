"""Supervised student rows at chosen batch sizes / learning rates beside the plain U-Net, QAT from the first row,
and the interactive evaluation on the test split: the runs behind docs/benchmarks.md "The batch-64 recipe" and
"The 1/2 head".

    python bench/recipe_runs.py --data ../shared/datasets/magnetic-tile --work /tmp/rr --device cuda \
        --rows s4=64:4e-3:4,s2=64:4e-3:2 --student-budget 360 --unet-budget 270 --qat-epochs 0
    python bench/recipe_runs.py --data /tmp/thin --work /tmp/rr-thin --device cuda --rows s2=64:4e-3 \
        --student-budget 300 --unet-budget 280 --qat-epochs 0
    OMP_NUM_THREADS=1 python bench/recipe_runs.py --data /tmp/thin --work /tmp/ab2 --device cpu --rows s2=16:2e-3 \
        --size 128 --student-budget 1500 --unet-budget 1500 --qat-epochs 0 --max-clicks 5   # a CPU-scale check

`--size` shrinks the canvases (student and teacher; crops keep their pixel scale) for CPU runs, `--unet-budget 0`
drops the U-Net row, `--pos-weight` sets the students' defect-pixel weight. `--teachers` adds SAM 2 teacher rows
(`train --mode finetune-teacher` from random weights, `--teacher-budget` seconds each, beside the other rows), e.g.
`--teachers hiera=sam2.1_hiera_t,r50=sam2.1_resnet50d`: which teacher learns from the crops at all;
`--teachers lo=sam2.1_resnet50d:3e-4,b32=sam2.1_resnet50d:5e-4:32`: teacher recipes side by side (LR, BATCH).

Every step is a `maskbench` command (bench/distillation_table.py's helpers), so it measures what users run. The
students are the project's default student (EfficientNet-B0, 1/2 head, 512 px canvas at native scale) trained on
the ground truth alone (`loss`: feature 0, soft BCE 0, Dice 1): with a SAM 2 teacher from random weights (no SA-1B
download here) the distillation terms pull towards a poor teacher, which the distillation table shows. The teacher
is only there because distill mode computes its features; QAT uses the same supervised loss as the student it
starts from. Results: WORK/reports.json (per-epoch figures, throughput, time split) and WORK/interactive.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distillation_table as dt  # noqa: E402


class Row(NamedTuple):
    batch: int
    lr: float
    stride: int = 2  # student.mask_stride
    crop: int | None = None  # training.crop_size: random windows of this side; None: whole canvases
    refine: int = 0  # student.refine_blocks
    # student.context_blocks, None: the default student's (4 since 2026-12-06; the rows docs/benchmarks.md ran
    # before had none: CONTEXT 0 repeats them)
    context: int | None = None
    one_click: float = 0.0  # training.clicks.one_click_share
    shift: int = 0  # training.augment.shift (1: on)


ROW_FORMAT = "NAME=BATCH:LR[:MASK_STRIDE[:CROP[:REFINE[:CONTEXT[:ONE_CLICK[:SHIFT]]]]]]"
EPOCH_CAP = 100_000


def parse_rows(text: str) -> dict[str, Row]:
    """Comma-separated ROW_FORMAT rows; a field left out takes the default student's value (CROP 0: whole
    canvases)."""
    rows: dict[str, Row] = {}
    for part in filter(None, text.split(",")):
        name, _, spec = part.partition("=")
        fields = spec.split(":")
        if not name or not 2 <= len(fields) <= 8 or not all(fields):
            raise SystemExit(f"row {part!r}: write {ROW_FORMAT}, e.g. b64=64:4e-3, s2=64:4e-3:2, "
                             "w256=64:4e-3:2:256, r256=64:4e-3:2:256:2, c4=64:4e-3:2:0:0:4, o5=64:4e-3:2:0:0:0:0.5 or "
                             "m1=64:4e-3:2:0:0:4:0:1")
        given = {key: kind(v) for key, kind, v in zip(Row._fields, (int, float, int, int, int, int, float, int), fields)}
        if given.get("crop") == 0:
            given["crop"] = None
        rows[name] = Row(**given)
    return rows


class TeacherRow(NamedTuple):
    config: str  # a resolved config of inference.sam2_configs
    lr: float | None = None  # None: --teacher-lr
    batch: int | None = None  # None: --teacher-batch


TEACHER_FORMAT = "NAME=CONFIG[:LR[:BATCH]]"


def parse_teachers(text: str) -> dict[str, TeacherRow]:
    """Comma-separated TEACHER_FORMAT rows; LR and BATCH are per row so that one call can compare teacher recipes
    side by side on one GPU (the rows share it, so compare them with each other, not with a teacher trained alone)."""
    from inference.errors import ModelError
    from inference.sam2_configs import resolve_config

    rows: dict[str, TeacherRow] = {}
    for part in filter(None, text.split(",")):
        name, _, spec = part.partition("=")
        config, *rest = spec.split(":")
        if not name or not config or len(rest) > 2 or not all(rest):
            raise SystemExit(f"teacher row {part!r}: write {TEACHER_FORMAT}, e.g. r50=sam2.1_resnet50d or "
                             "lo=sam2.1_resnet50d:3e-4:32")
        try:
            numbers = [float(rest[0])] + [int(v) for v in rest[1:]] if rest else []
        except ValueError:
            raise SystemExit(f"teacher row {part!r}: LR must be a number and BATCH an integer") from None
        try:
            rows[name] = TeacherRow(resolve_config(config)[0], *numbers)
        except ModelError as exc:
            raise SystemExit(f"teacher row {part!r}: {exc}") from None
    return rows


def summary_line(name: str, best_val: float | None, inter: dict) -> str:
    """One row of the printed table; "-" where a figure does not exist (no validation for the teacher and the
    classical baseline, no test crops in a split too small to have any)."""
    o = inter["overall"]
    clicks = " / ".join(dt.figure(o[k]) for k in ("mIoU@1", "mIoU@3", "mIoU@5"))
    return (f"{name:10s} val {dt.figure(best_val):>6}  test n={o['n']} mIoU@1/3/5 {clicks}  "
            f"NoC@85 {dt.figure(o['NoC@85'], 1)}  "
            + " ".join(f"{c} {dt.figure(g['mIoU@1'])}" for c, g in inter["per_class"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", default="s2=64:4e-3",
                    help=f"{ROW_FORMAT}, comma-separated; \"\" with a --unet-budget: the U-Net alone")
    ap.add_argument("--student-budget", type=float, default=270)
    ap.add_argument("--unet-budget", type=float, default=270, help="seconds; 0: no U-Net row")
    ap.add_argument("--unet-lr", type=float, default=4e-3)
    ap.add_argument("--teachers", default="",
                    help=f"{TEACHER_FORMAT} teacher rows, comma-separated (default: none)")
    ap.add_argument("--teacher-budget", type=float, default=270)
    ap.add_argument("--teacher-batch", type=int, default=64)
    ap.add_argument("--teacher-lr", type=float, default=1e-3)
    ap.add_argument("--qat-epochs", type=int, default=6, help="QAT epochs from the first row (0: none)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--val-every", type=int, default=1,
                    help="the student rows validate every N epochs (a CPU run at 512 px spends most epochs validating)")
    ap.add_argument("--pos-weight", type=float, default=None,
                    help="training.pos_weight of the student rows (defect-pixel weight; default: the project's)")
    ap.add_argument("--size", type=int, default=512,
                    help="the student's canvas and the teacher's (px, crops at native scale); smaller for CPU runs")
    ap.add_argument("--compile", default=None, choices=["default", "max-autotune-no-cudagraphs"],
                    help="training.compile for the student rows (the U-Net stays eager)")
    ap.add_argument("--flips", default="", help="rows also evaluated with four-view flip averaging (ROW+flips)")
    a = ap.parse_args()
    if a.max_clicks < 5:
        raise SystemExit("--max-clicks must be at least 5: the evaluation reports mIoU after 1, 3 and 5 clicks")
    rows = parse_rows(a.rows)
    teachers = parse_teachers(a.teachers)
    if not rows and not teachers and a.unet_budget <= 0:
        raise SystemExit("nothing to train: give --rows, --teachers, a --unet-budget, or several")
    if not rows and a.qat_epochs > 0:
        raise SystemExit("QAT starts from the first --rows student: give one, or --qat-epochs 0")
    flips = [f for f in a.flips.split(",") if f]
    named = [*(teachers or ["teacher"]), *rows, *(["qat"] if a.qat_epochs > 0 else []),
             *(["unet"] if a.unet_budget > 0 else []), "classical"]
    unknown = [f for f in flips if f not in named]
    if unknown:
        raise SystemExit(f"--flips names rows this run has not: {', '.join(unknown)} (rows: {', '.join(named)})")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    project, log = work / "project", work / "commands.log"
    t0 = time.time()

    def say(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    taken = [n for n in [*rows, *teachers, "unet", "qat"] if dt.run_dir(project, n).exists()]
    if taken:  # train would name the new runs NAME-2 and this script would read the old ones
        raise SystemExit(f"{project} already has runs named {', '.join(taken)}: pass a new --work")
    if not (project / "project.yaml").exists():
        dt.sh(["init", str(project)], log)
    dt.sh(["ingest", str(a.data.resolve()), "--project", str(project)], log)
    teacher = dt.random_teacher("sam2.1_hiera_t", a.size, work / "teacher_random.pt")
    tsec = {"config": "sam2.1_hiera_t", "checkpoint": str(teacher), "image_size": a.size, "scale": 1.0}
    # the budgets decide when a row stops: an epoch cap no row reaches (1000 ended the U-Net after 247 s of a 430 s
    # budget on an H200, so the rows did not get the same time; the schedule anneals by the budget either way)
    common = ["--epochs", str(EPOCH_CAP), "--device", a.device, "--no-progress"]
    jobs = []
    for name, row in rows.items():
        cfg = dt.write_yaml(work / f"{name}.yaml", {
            "student": {"input_size": a.size, "scale": 1.0, "mask_stride": row.stride, "refine_blocks": row.refine,
                        "context_blocks": row.context},
            "teacher": tsec,
            "loss": dt.SUPERVISED_ONLY,
            "training": {"batch_size": row.batch, "lr": row.lr, "checkpoint_every": 1000,
                         "time_budget_s": a.student_budget, "compile": a.compile, "crop_size": row.crop,
                         "clicks": {"one_click_share": row.one_click}, "augment": {"shift": bool(row.shift)},
                         "val_every": a.val_every,
                         **({} if a.pos_weight is None else {"pos_weight": a.pos_weight})}})
        jobs.append(["train", "--project", str(project), "--mode", "distill", "--config", str(cfg), "--name", name,
                     *common])
    trained_teachers = {}
    for name, trow in teachers.items():
        init = dt.random_teacher(trow.config, a.size, work / f"{name}_random.pt")
        trained_teachers[name] = {"config": trow.config, "image_size": a.size, "scale": 1.0}
        cfg = dt.write_yaml(work / f"{name}.yaml", {
            "teacher": {**trained_teachers[name], "checkpoint": str(init)},
            "finetune_teacher": {"batch_size": a.teacher_batch if trow.batch is None else trow.batch,
                                 "lr": a.teacher_lr if trow.lr is None else trow.lr},
            "training": {"checkpoint_every": 1000, "time_budget_s": a.teacher_budget}})
        jobs.append(["train", "--project", str(project), "--mode", "finetune-teacher", "--config", str(cfg),
                     "--name", name, *common])
    if a.unet_budget > 0:
        cfg = dt.write_yaml(work / "unet.yaml", {
            "student": {"input_size": a.size, "scale": 1.0}, "unet": {"crop_size": min(256, a.size)},
            "training": {"batch_size": 64, "lr": a.unet_lr, "checkpoint_every": 1000,
                         "time_budget_s": a.unet_budget}})
        jobs.append(["train", "--project", str(project), "--mode", "unet", "--config", str(cfg), "--name", "unet",
                     *common])
    dt.sh_parallel(jobs, log)
    say("trainings done")
    names = [*teachers, *rows, *(["unet"] if a.unet_budget > 0 else [])]
    students = {name: str(dt.best_of(project, name)) for name in rows}
    if a.qat_epochs > 0:
        first = next(iter(rows))
        cfg = dt.write_yaml(work / "qat.yaml", {
            "student": {"input_size": a.size, "scale": 1.0, "mask_stride": rows[first].stride,
                        "refine_blocks": rows[first].refine, "context_blocks": rows[first].context}, "teacher": tsec,
            "loss": dt.SUPERVISED_ONLY,
            "training": {"batch_size": rows[first].batch, "checkpoint_every": 1000,
                         "clicks": {"one_click_share": rows[first].one_click}}})
        dt.sh(["train", "--project", str(project), "--mode", "qat", "--checkpoint", students[first], "--config",
               str(cfg), "--name", "qat", "--epochs", str(a.qat_epochs), "--device", a.device, "--no-progress"], log)
        names.append("qat")
        students["qat"] = str(dt.best_of(project, "qat"))
        say("qat done")
    reports = {name: dt.run_report(project, name) for name in names}
    (work / "reports.json").write_text(json.dumps(reports, indent=1, default=str))
    unet = str(dt.best_of(project, "unet")) if a.unet_budget > 0 else None
    # the trained teacher rows, or the random-weights teacher the students' runs were given (a floor)
    evaluated = ({name: {**t, "checkpoint": str(dt.best_of(project, name))} for name, t in trained_teachers.items()}
                 or {"teacher": tsec})
    (work / "stages.json").write_text(json.dumps({"teachers": evaluated, "students": students, "unet": unet,
                                                  "flips": flips}))
    dt.interactive_stage(work, a.device, a.max_clicks)
    inter = json.loads((work / "interactive.json").read_text())
    for name in [*evaluated, *students, *(["unet"] if unet else []), "classical", *map(dt.flip_label, flips)]:
        print(summary_line(name, reports.get(name, {}).get("best_val_iou"), inter[name]))
    say("done")


if __name__ == "__main__":
    main()
