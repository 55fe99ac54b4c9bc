"""The review loop, measured (issue 15): does reviewing the flagged queue make the next student better, and does
reviewing in disagreement or hardness order beat reviewing at random?

    python bench/loop_experiment.py --data ../shared/datasets/magnetic-tile --work /tmp/loop --device cuda
    python bench/loop_experiment.py --toy --work /tmp/loop-toy          # CPU, minutes: what CI runs

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
Results: WORK/loop.json and WORK/loop.md (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.distillation_table import best_of, random_teacher, sh, split_items, write_yaml  # noqa: E402

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


def evaluate(checkpoint: Path, items: list[Any], device: str) -> dict[str, float]:
    from inference.interactive import evaluate as interactive
    from inference.torch_backend import load_student_segmenter

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
    ap.add_argument("--teacher-config", default="sam2.1_hiera_t")
    ap.add_argument("--teacher-size", type=int, default=512)
    ap.add_argument("--student-size", type=int, default=512)
    ap.add_argument("--teacher-epochs", type=int, default=300)
    ap.add_argument("--student-epochs", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--toy", action="store_true")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    extra: dict[str, Any] = {}
    steps: list[str] = []
    if a.toy:
        from store.synthetic import write_dataset

        a.data = work / "toy-data"
        if not a.data.exists():
            write_dataset(a.data, 40, seed=11)
        a.teacher_config, a.teacher_size, a.student_size = "sam2.1_hiera_demo", 128, 64
        a.teacher_epochs = a.student_epochs = 1
        a.batch_size, a.seeds, a.budgets, a.labelled = 4, "0", "0,3", 0.3
        extra = {"augment": {"dihedral": False}}
        steps = ["--max-steps", "2"]
    scale_t = 0.5 if a.toy else 1.0
    scale_s = scale_t * a.student_size / a.teacher_size
    dev = ["--device", a.device]
    seeds = [int(x) for x in a.seeds.split(",")]
    budgets = [int(x) for x in a.budgets.split(",")]
    t_start = time.time()

    base = work / "base"
    if not (base / "project.yaml").exists():
        sh(["init", str(base)], log)
        sh(["ingest", str(a.data), "--project", str(base)], log)
    teacher_section = {"config": a.teacher_config, "image_size": a.teacher_size, "scale": scale_t}
    common_cfg = {"student": {"input_size": a.student_size, "scale": scale_s},
                  "training": {"batch_size": a.batch_size, "checkpoint_every": 1000, **extra}}
    if not (base / "runs" / "teacher" / "checkpoints" / "best.pt").exists():
        init = random_teacher(a.teacher_config, a.teacher_size, work / "teacher_init.pt")
        cfg = write_yaml(work / "teacher.yaml", {**common_cfg, "teacher": {**teacher_section, "checkpoint": str(init)}})
        sh(["train", "--project", str(base), "--mode", "finetune-teacher", "--config", str(cfg), "--epochs",
            str(a.teacher_epochs), "--name", "teacher", "--no-progress", *dev, *steps], log)
    teacher = best_of(base, "teacher")
    sh(["models", "add", "teacher", str(teacher), "--project", str(base), "--config", a.teacher_config,
        "--image-size", str(a.teacher_size), "--scale", str(scale_t)], log)
    sh(["predict", "--project", str(base), "--model", "teacher", "--prompts", "ground_truth", *dev], log)
    distill_cfg = write_yaml(work / "distill.yaml", {**common_cfg, "teacher": {**teacher_section,
                                                                              "checkpoint": str(teacher)}})
    gt = {it.sample_id: it.gt_mask for it in split_items(base, "train")}
    test_items = [it for it in split_items(base, "test") if it.gt_mask.any()]

    def train_and_score(project: Path, name: str) -> dict[str, Any]:
        """The same command for every arm; the seed is in the copy's project.yaml (_set_seed)."""
        sh(["train", "--project", str(project), "--mode", "distill", "--config", str(distill_cfg), "--epochs",
            str(a.student_epochs), "--name", name, "--no-progress", *dev, *steps], log)
        return evaluate(best_of(project, name), test_items, a.device)

    results: dict[str, Any] = {"seeds": {}, "meta": {}}
    for seed in seeds:
        r: dict[str, Any] = {}
        q = copy_project(base, work / f"seed{seed}" / "round0")
        r["split"] = unlabel_pool(q, a.labelled, seed)
        _set_seed(q, seed)
        r["round0"] = train_and_score(q, "round0")
        sh(["models", "add", "student", str(best_of(q, "round0")), "--project", str(q)], log)
        sh(["predict", "--project", str(q), "--model", "student", "--prompts", "teacher", *dev], log)
        sh(["flag", "--project", str(q)], log)
        r["student_wins"] = student_wins(q, gt)
        nopool = copy_project(base, work / f"seed{seed}" / "no_pool")
        unlabel_pool(nopool, a.labelled, seed)
        _drop_unlabelled(nopool)
        _set_seed(nopool, seed)
        r["no_pool"] = train_and_score(nopool, "no_pool")
        for arm in ARMS:
            for k in budgets:
                if k == 0:
                    continue
                proj = copy_project(q, work / f"seed{seed}" / f"{arm}-{k}")
                review = simulated_verdicts(proj, arm, k, gt, seed)
                r[f"{arm}@{k}"] = {**train_and_score(proj, "round1"), **review}
        results["seeds"][seed] = r
        (work / "loop.json").write_text(json.dumps(results, indent=2, default=str))
    results["meta"] = {"wall_s": round(time.time() - t_start, 1), "device": a.device, "budgets": budgets,
                       "labelled_share": a.labelled, "teacher": "SAM 2 fine-tuned on every training crop's ground "
                       "truth (stands in for an SA-1B teacher)", "toy": a.toy}
    (work / "loop.json").write_text(json.dumps(results, indent=2, default=str))
    (work / "loop.md").write_text(render(results, budgets))
    print(render(results, budgets))


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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
