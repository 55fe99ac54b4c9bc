"""The review loop, measured (issue 15): does reviewing the flagged queue make the next student better, and does
reviewing in disagreement or hardness order beat reviewing at random?

    python bench/loop_experiment.py --data ../shared/datasets/magnetic-tile --work /tmp/loop --device cuda
    python bench/loop_experiment.py --toy --work /tmp/loop-toy          # CPU, minutes: what CI runs

What docs/benchmarks.md reports, on one H200 (two seeds in nine minutes): 17 trainings at once, the same fixed
epoch count for every student run (round 0, pool dropped, each arm), no flips/rotations so that many runs' teacher
features fit on the card, two CPU threads per process so seventeen processes share 16 cores:

    OMP_NUM_THREADS=2 python bench/loop_experiment.py --work /tmp/loop --device cuda --teacher-budget 80 \
        --student-size 256 --student-epochs 6 --jobs 17 --no-dihedral --seeds 0,2

Protocol (all through the project's own commands and functions):
  1. One project with every crop's ground truth; the SAM 2 teacher is fine-tuned on ALL training crops' ground truth
     (it stands in for an SA-1B teacher, which cannot be downloaded here), registered, and predicts every crop with
     one ground-truth click (the click an operator would give; predict --prompts ground_truth).
  2. Per seed, a copy of that project where only `--labelled` (15%) of the training crops keep their ground truth;
     the rest become an unlabelled pool (their ground-truth masks are deleted from the copy; the experiment keeps
     them aside for the simulated reviewer and for scoring).
  3. Round 0: `train --mode distill` (labelled crops + the teacher's outputs on the pool), `predict --prompts
     teacher` (the student gets the teacher's clicks), `flag`. Also the same run with the pool dropped.
  4. For each arm (random, disagreement, hardness, vlm) and review budget K: a copy of the round-0 project, the
     first K flagged training crops in the arm's order get a verdict through review.verdicts.record_verdict. The
     simulated reviewer gives the verdict the ground truth supports (teacher better / student better by IoU, both
     bad when both are below 0.5, and then a correction with the ground-truth mask); the vlm arm records VLM
     verdicts only (author kind vlm, confidence 0.8), agreeing with that reviewer with probability 0.84.
  5. Round 1: the same training command and seed on each copy; test IoU with one click and after five clicks
     (inference.interactive) on the test split.
Results: WORK/loop.json (written after every run, so a cut-off run keeps what finished) and WORK/loop.md (mean
and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.distillation_table import (  # noqa: E402
    best_of, random_teacher, run_dir, sh, split_items, trained, write_yaml)
from inference.sam2_configs import SCRATCH_TEACHER  # noqa: E402

ARMS = ("random", "disagreement", "hardness", "vlm")
VLM_AGREEMENT = 0.84


def copy_project(src: Path, dst: Path) -> Path:
    """A project copy for one arm (settings, store and models; not the runs or caches)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for p in [src / "project.yaml", src / "models", *src.glob("maskbench.sqlite*")]:
        if p.is_dir():
            shutil.copytree(p, dst / p.name)
        elif p.exists():
            shutil.copy2(p, dst / p.name)
    return dst


def unlabel_pool(project: Path, share: float, seed: int) -> dict[str, int]:
    """Delete the ground truth of all but `share` of the training crops (seeded, per class); returns counts."""
    from sqlalchemy import delete, select

    from store.project import Project
    from store.schema import Mask, MaskSource, Sample

    rng = random.Random(seed)
    with Project.open(project) as p, p.db.session() as s:
        rows = s.execute(select(Sample.id, Sample.defect_class).where(Sample.split == "train")
                         .order_by(Sample.id)).all()
        by_class: dict[str, list[int]] = {}
        for sid, cls in rows:
            by_class.setdefault(cls, []).append(sid)
        pool: list[int] = []
        for ids in by_class.values():
            rng.shuffle(ids)
            keep = max(1, round(share * len(ids)))
            pool += ids[keep:]
        s.execute(delete(Mask).where(Mask.sample_id.in_(pool), Mask.source == MaskSource.GROUND_TRUTH))
    return {"train": len(rows), "labelled": len(rows) - len(pool), "pool": len(pool)}


def simulated_verdicts(project: Path, order: str, k: int, gt: dict[int, Any], seed: int) -> dict[str, Any]:
    """The first k flagged training crops in `order` get a verdict (human, or VLM for the vlm arm)."""
    from sqlalchemy import select

    from review.metrics import iou
    from review.queue_order import ordered_sample_ids
    from review.verdicts import record_verdict
    from store import rle
    from store.project import Project
    from store.schema import Disagreement, Mask, Prediction, Sample

    rng = random.Random(seed)
    with Project.open(project) as p:
        with p.db.session() as s:
            train = set(s.scalars(select(Sample.id).where(Sample.split == "train")))
            queue_order = "disagreement" if order == "vlm" else order
            ids = [i for i in ordered_sample_ids(s, queue_order, seed=seed) if i in train and i in gt][:k]
            masks = {}
            for sid in ids:
                d = s.scalars(select(Disagreement).where(Disagreement.sample_id == sid)
                              .order_by(Disagreement.id.desc())).first()
                t = s.get(Mask, s.get(Prediction, d.teacher_prediction_id).mask_id)
                st = s.get(Mask, s.get(Prediction, d.student_prediction_id).mask_id)
                masks[sid] = (rle.decode(t.rle), rle.decode(st.rle))
        agree = 0
        kinds: dict[str, int] = {}
        for sid in ids:
            t_mask, s_mask = masks[sid]
            it, ist = iou(t_mask, gt[sid]), iou(s_mask, gt[sid])
            human = "both_bad" if max(it, ist) < 0.5 else ("teacher_better" if it >= ist else "student_better")
            if order == "vlm":
                verdict = human if rng.random() < VLM_AGREEMENT else rng.choice(
                    [v for v in ("teacher_better", "student_better", "both_bad", "both_good") if v != human])
                agree += verdict == human
                record_verdict(p.db, sid, verdict, "simulated-vlm", author_kind="vlm", confidence=0.8)
            elif human == "both_bad":
                verdict = "corrected"
                record_verdict(p.db, sid, "corrected", "simulated-reviewer", corrected_mask=gt[sid])
            else:
                verdict = human
                record_verdict(p.db, sid, human, "simulated-reviewer")
            kinds[verdict] = kinds.get(verdict, 0) + 1
    return {"reviewed": len(ids), "verdicts": kinds,
            "vlm_agreement": (agree / len(ids)) if order == "vlm" and ids else None}


def student_wins(project: Path, gt: dict[int, Any]) -> float | None:
    """Share of flagged crops (with a known mask) where the student's mask is closer to the ground truth."""
    from sqlalchemy import select

    from review.metrics import iou
    from store import rle
    from store.project import Project
    from store.schema import Disagreement, Mask, Prediction

    with Project.open(project) as p, p.db.session() as s:
        rows = s.scalars(select(Disagreement).where(Disagreement.flagged.is_(True))).all()
        wins = []
        for d in rows:
            if d.sample_id not in gt:
                continue
            t = rle.decode(s.get(Mask, s.get(Prediction, d.teacher_prediction_id).mask_id).rle)
            st = rle.decode(s.get(Mask, s.get(Prediction, d.student_prediction_id).mask_id).rle)
            wins.append(iou(st, gt[d.sample_id]) > iou(t, gt[d.sample_id]))
    return (sum(wins) / len(wins)) if wins else None


def evaluate(checkpoint: Path, base: Path, device: str) -> dict[str, float]:
    """Test IoU after one and five clicks (inference.interactive) on the test crops that have a defect."""
    from inference.interactive import evaluate as interactive
    from inference.torch_backend import load_student_segmenter

    items = [it for it in split_items(base, "test") if it.gt_mask.any()]
    rep = interactive(load_student_segmenter(checkpoint, device=device), items, max_clicks=5,
                      report_clicks=(1, 5), thresholds=(0.85,))
    o = rep.to_json(include_crops=False)["overall"]
    return {"iou_1": o["mIoU@1"], "iou_5": o["mIoU@5"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "magnetic-tile")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default="0,25,50,100,200")
    ap.add_argument("--labelled", type=float, default=0.15)
    ap.add_argument("--teacher-config", default=SCRATCH_TEACHER,
                    help="SAM 2 config trained from random weights (default: the ResNet-50-D trunk; Hiera does not "
                         "learn from random weights on a few hundred crops)")
    ap.add_argument("--teacher-size", type=int, default=512)
    ap.add_argument("--student-size", type=int, default=512)
    ap.add_argument("--teacher-epochs", type=int, default=300)
    ap.add_argument("--teacher-budget", type=float, default=0, help="seconds for teacher fine-tuning (0: epochs)")
    ap.add_argument("--teacher-batch-size", type=int, default=32)
    ap.add_argument("--teacher-lr", type=float, default=3e-4)
    ap.add_argument("--student-epochs", type=int, default=150,
                    help="every student run (round 0, pool dropped, each arm) gets this same schedule")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--no-dihedral", action="store_true",
                    help="no flips/rotations (8x less teacher-feature memory per run: more runs fit at once)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once (one GPU holds several)")
    ap.add_argument("--toy", action="store_true")
    ap.add_argument("--stage", choices=["all", "evaluate"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = a.work.resolve()
    if a.stage == "evaluate":
        a.out.write_text(json.dumps(evaluate(a.checkpoint, work / "base", a.device)))
        return
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    augment: dict[str, Any] = {"dihedral": False} if a.no_dihedral else {}
    steps: list[str] = []
    if a.toy:
        from store.synthetic import write_dataset

        a.data = work / "toy-data"
        if not a.data.exists():
            write_dataset(a.data, 40, seed=11)
        a.teacher_config, a.teacher_size, a.student_size = "sam2.1_hiera_demo", 128, 64
        a.teacher_epochs = a.student_epochs = 1
        a.batch_size, a.teacher_batch_size, a.seeds, a.budgets, a.labelled = 4, 2, "0", "0,3", 0.3
        augment = {"dihedral": False}
        steps = ["--max-steps", "2"]
    scale_t = 0.5 if a.toy else 1.0
    scale_s = scale_t * a.student_size / a.teacher_size
    dev = ["--device", a.device]
    seeds = [int(x) for x in a.seeds.split(",")]
    budgets = [int(x) for x in a.budgets.split(",")]
    t_start = time.time()
    stage_s: dict[str, float] = {}

    print("[1/3] project, teacher (fine-tuned on every training crop's ground truth), teacher predictions",
          flush=True)
    base = work / "base"
    if not (base / "project.yaml").exists():
        sh(["init", str(base)], log)
        sh(["ingest", str(a.data), "--project", str(base)], log)
    teacher_section = {"config": a.teacher_config, "image_size": a.teacher_size, "scale": scale_t}
    training = {"batch_size": a.batch_size, "lr": a.lr, "checkpoint_every": 1000,
                **({"augment": augment} if augment else {})}
    common_cfg = {"student": {"input_size": a.student_size, "scale": scale_s}, "training": training}
    if not trained(base, "teacher"):  # a teacher cut off mid-way stops the resume (naming what to remove)
        init = random_teacher(a.teacher_config, a.teacher_size, work / "teacher_init.pt")
        cfg = write_yaml(work / "teacher.yaml", {
            **common_cfg, "teacher": {**teacher_section, "checkpoint": str(init)},
            "finetune_teacher": {"batch_size": a.teacher_batch_size, "lr": a.teacher_lr},
            "training": {**training, "time_budget_s": a.teacher_budget}})
        sh(["train", "--project", str(base), "--mode", "finetune-teacher", "--config", str(cfg), "--epochs",
            str(a.teacher_epochs), "--name", "teacher", "--no-progress", *dev, *steps], log)
    teacher = best_of(base, "teacher")
    sh(["models", "add", "teacher", str(teacher), "--project", str(base), "--config", a.teacher_config,
        "--image-size", str(a.teacher_size), "--scale", str(scale_t)], log)
    sh(["predict", "--project", str(base), "--model", "teacher", "--prompts", "ground_truth", *dev], log)
    distill_cfg = write_yaml(work / "distill.yaml", {**common_cfg, "teacher": {**teacher_section,
                                                                              "checkpoint": str(teacher)}})
    gt = {it.sample_id: it.gt_mask for it in split_items(base, "train")}
    stage_s["teacher"] = time.time() - t_start

    def train_and_score(project: Path, name: str) -> dict[str, Any]:
        """The same command and schedule for every run; the seed is in the copy's project.yaml (_set_seed)."""
        run_log = project / "commands.log"
        sh(["train", "--project", str(project), "--mode", "distill", "--config", str(distill_cfg), "--epochs",
            str(a.student_epochs), "--name", name, "--no-progress", *dev, *steps], run_log)
        out = project / f"{name}.eval.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", "evaluate", "--work", str(work),
                        "--device", a.device, "--checkpoint", str(best_of(project, name)), "--out", str(out)],
                       cwd=REPO, check=True)
        return json.loads(out.read_text())

    results: dict[str, Any] = {"seeds": {s: {} for s in seeds}, "meta": {}}
    lock = threading.Lock()  # chains run in threads; they record results and save under it

    def record(seed: int, key: str, value: Any) -> None:
        with lock:
            results["seeds"][seed][key] = value
            save()

    def save() -> None:
        results["meta"] = {"wall_s": round(time.time() - t_start, 1),
                           "stages_s": {k: round(v, 1) for k, v in stage_s.items()}, "device": a.device,
                           "budgets": budgets, "labelled_share": a.labelled, "jobs": a.jobs,
                           "teacher": "SAM 2 fine-tuned on every training crop's ground truth (stands in for an "
                           "SA-1B teacher)", "teacher_best_val_iou": _best_val(base, "teacher"),
                           "student_epochs": a.student_epochs, "student_size": a.student_size,
                           "student_scale": scale_s, "toy": a.toy}
        (work / "loop.json").write_text(json.dumps(results, indent=2, default=str))

    def round0(seed: int) -> None:
        q = copy_project(base, work / f"seed{seed}" / "round0")
        record(seed, "split", unlabel_pool(q, a.labelled, seed))
        _set_seed(q, seed)
        record(seed, "round0", train_and_score(q, "round0"))
        run_log = q / "commands.log"
        sh(["models", "add", "student", str(best_of(q, "round0")), "--project", str(q)], run_log)
        sh(["predict", "--project", str(q), "--model", "student", "--prompts", "teacher", *dev], run_log)
        sh(["flag", "--project", str(q)], run_log)
        record(seed, "student_wins", student_wins(q, gt))

    def no_pool(seed: int) -> None:
        nopool = copy_project(base, work / f"seed{seed}" / "no_pool")
        unlabel_pool(nopool, a.labelled, seed)
        _drop_unlabelled(nopool)
        _set_seed(nopool, seed)
        record(seed, "no_pool", train_and_score(nopool, "no_pool"))

    def arm_run(seed: int, arm: str, k: int) -> None:
        proj = copy_project(work / f"seed{seed}" / "round0", work / f"seed{seed}" / f"{arm}-{k}")
        review = simulated_verdicts(proj, arm, k, gt, seed)
        record(seed, f"{arm}@{k}", {**train_and_score(proj, "round1"), **review})

    print(f"[2/3] per seed: round 0, the pool-dropped run; then the review arms {ARMS} x K "
          f"{[k for k in budgets if k]} and round 1, {a.jobs} at a time", flush=True)
    t0 = time.time()
    # Each job is a chain of subprocesses, so the threads only wait: one GPU serves many of these small trainings
    # at once better than one at a time (a step is bound by kernel launches on the host, not by the GPU). A
    # seed's arms are queued as soon as its round 0 has flagged, so the pool never idles at a barrier.
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        futures: list[Future[None]] = []

        def round0_then_arms(seed: int) -> None:
            round0(seed)
            with lock:
                futures.extend(ex.submit(arm_run, seed, arm, k) for arm in ARMS for k in budgets if k)

        with lock:
            futures.extend([ex.submit(round0_then_arms, s) for s in seeds] + [ex.submit(no_pool, s) for s in seeds])
        waited = 0
        while True:
            with lock:
                pending = futures[waited:]
            if not pending:
                break
            for f in pending:
                f.result()
            waited += len(pending)
    stage_s["rounds"] = time.time() - t0
    with lock:
        save()
    print("[3/3] report", flush=True)
    (work / "loop.md").write_text(render(results, budgets))
    print(render(results, budgets))


def _best_val(project: Path, name: str) -> float | None:
    """The best validation IoU a run reported in its JSON lines."""
    path = run_dir(project, name) / "metrics.jsonl"
    if not path.exists():
        return None
    vals = [json.loads(line).get("val_iou_gt") for line in path.read_text().splitlines() if line.strip()]
    vals = [v for v in vals if v is not None]
    return round(max(vals), 4) if vals else None


def _set_seed(project: Path, seed: int) -> None:
    import yaml

    path = project / "project.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.setdefault("distillation", {}).setdefault("training", {})["seed"] = seed
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _drop_unlabelled(project: Path) -> None:
    """The 'pool dropped' comparison: training crops without a mask leave the project."""
    from sqlalchemy import delete, select

    from store.project import Project
    from store.schema import Mask, MaskSource, Sample

    with Project.open(project) as p, p.db.session() as s:
        labelled = select(Mask.sample_id).where(Mask.source == MaskSource.GROUND_TRUTH)
        s.execute(delete(Sample).where(Sample.split == "train", Sample.id.not_in(labelled)))


def render(results: dict[str, Any], budgets: list[int]) -> str:
    seeds = list(results["seeds"].values())

    def cell(key: str, metric: str) -> str:
        vals = [s[key][metric] for s in seeds if key in s and s[key].get(metric) is not None]
        if not vals:
            return "-"
        spread = (max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f} ± {spread:.3f}"

    lines = ["| arm | " + " | ".join(f"K={k}" for k in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for metric, name in (("iou_1", "1 click"), ("iou_5", "5 clicks")):
        for arm in ARMS:
            row = [cell("round0" if k == 0 else f"{arm}@{k}", metric) for k in budgets]
            lines.append(f"| {arm} ({name}) | " + " | ".join(row) + " |")
    lines += ["", f"round 0 with the pool dropped: 1 click {cell('no_pool', 'iou_1')}, 5 clicks "
              f"{cell('no_pool', 'iou_5')}",
              "student wins among flagged crops: " + ", ".join(
                  f"{s['student_wins']:.2f}" for s in seeds if s.get("student_wins") is not None)]
    agreement = [s[f"vlm@{k}"]["vlm_agreement"] for s in seeds for k in budgets
                 if f"vlm@{k}" in s and s[f"vlm@{k}"].get("vlm_agreement") is not None]
    if agreement:
        lines.append(f"VLM-reviewer agreement as recorded: {statistics.mean(agreement):.2f} "
                     f"(over {len(agreement)} arm runs; simulated at {VLM_AGREEMENT})")
    meta = results.get("meta") or {}
    if meta:
        lines.append(f"teacher best validation IoU {meta.get('teacher_best_val_iou')}; every student run "
                     f"{meta.get('student_epochs')} epochs at {meta.get('student_size')} px; wall time "
                     f"{meta.get('wall_s')} s; stages {meta.get('stages_s')}")
    lines.append("cells: mean ± half the range over seeds")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
