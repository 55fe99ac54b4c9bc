"""Real runs on real crops: the losses fall, a resumed run lands on the same weights, per-sample weights reach the
loss, the naive baseline drops the feature term, teacher fine-tuning writes an official SAM 2 checkpoint, and two
gloo workers train through DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from inference.training.runner import TrainOptions, train
from store.project import Project
from store.schema import TrainingRun

REPO = Path(__file__).resolve().parents[3]


def _run(project: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    summary = train(TrainOptions(project=project, progress=False, emit=events.append, **kw))
    return summary, events


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def _row(project: Path, run_id: int) -> TrainingRun:
    with Project.open(project) as p, p.db.session() as s:
        row = s.get(TrainingRun, run_id)
        s.expunge(row)
        return row


def test_distill_losses_fall_checkpoints_resume_and_run_is_recorded(training_project: Path) -> None:
    summary, events = _run(training_project, name="straight")
    epochs = _of(events, "epoch")
    assert len(epochs) == 4 and all(e["complete"] for e in epochs)
    first, last = epochs[0], epochs[-1]
    # the Dice term of interactive steps (new clicks every step, follow-ups in the model's own errors) is too noisy
    # over 12 steps to fall monotonically; the total and the teacher terms must
    for term in ("loss_feat", "loss_soft", "loss"):
        assert last[term] < first[term], (term, first[term], last[term])
    assert {"data_s", "step_s", "validation_s", "checkpoint_s"} <= set(first["time"])
    step_lines = _of(events, "step")
    assert {"epoch", "step", "loss_feat", "loss_soft", "loss_dice", "lr", "images_per_s"} <= set(step_lines[0])
    assert {"val_iou_gt", "val_iou_teacher"} <= set(first)
    assert step_lines[-1]["lr"] < step_lines[0]["lr"]  # cosine annealing
    run_dir = Path(summary["run_dir"])
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("epoch_*.pt")) == [f"epoch_00{i}.pt" for i in range(1, 5)]
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    row = _row(training_project, summary["run_id"])
    assert row.status == "finished" and row.mode == "distill" and row.epochs_done == 4
    assert row.best_val_iou == max(e["val_iou_gt"] for e in epochs)
    assert row.data_hash and len(row.metrics) == 4 and row.best_checkpoint == summary["best_checkpoint"]

    # "use as student": the best checkpoint is a project student the registry accepts and activates
    from inference.registry import active_model
    from inference.training.registration import register_student_checkpoint

    with Project.open(training_project) as p:
        model_id = register_student_checkpoint(p, Path(summary["best_checkpoint"]), name="straight",
                                               training_run_id=summary["run_id"])
        assert active_model(p, "student").id == model_id
    assert _row(training_project, summary["run_id"]).model_id == model_id

    # the teacher's features are computed once per run, one entry per view (flips/rotations are off here)
    cache = _of(events, "cache_ready")[0]
    assert cache["computed"] == cache["views"] >= 12 and cache["dihedral"] == 1

    # stop mid-epoch 2 at step 4, resume to step 6: the same weights as the straight run after epoch 2
    part, ev1 = _run(training_project, name="resumed", max_steps=4)
    assert part["step"] == 4
    # the run stores its student as built, defaults resolved (a resume rebuilds it whatever later versions default to)
    stored = torch.load(Path(part["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["config"]["student"]
    assert stored["context_blocks"] == 4 and stored["mask_stride"] == 2
    res, ev2 = _run(training_project, resume=Path(part["run_dir"]), max_steps=6)
    assert _of(ev2, "start")[0]["resumed_from_step"] == 4 and res["step"] == 6
    assert [e["step"] for e in _of(ev2, "step")] == [5, 6]
    assert res["run_id"] == part["run_id"]  # the same TrainingRun row continues
    straight_steps = {e["step"]: e for e in step_lines}
    for e in _of(ev2, "step"):  # the resumed steps see the same batches, weights and learning rate
        for k in ("loss", "loss_feat", "loss_soft", "loss_dice", "lr"):
            assert e[k] == pytest.approx(straight_steps[e["step"]][k], rel=1e-3, abs=1e-6), (e["step"], k)
    ref = torch.load(run_dir / "checkpoints" / "epoch_002.pt", weights_only=True)["model"]
    got = torch.load(Path(res["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in ref:  # float noise only (Adam turns near-zero gradients of attention key biases into lr-sized steps)
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-3), k


def test_a_run_from_before_context_blocks_were_the_default_resumes_without_them(training_project: Path) -> None:
    part, _ = _run(training_project, name="old", max_steps=2, overrides={"student": {"context_blocks": 0}})
    last = Path(part["run_dir"]) / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["student"]["context_blocks"]  # what a run started before 2026-12-06 stored
    torch.save(state, last)
    res, events = _run(training_project, resume=Path(part["run_dir"]), max_steps=3)
    assert res["step"] == 3 and _of(events, "start")[0]["resumed_from_step"] == 2
    model = torch.load(Path(res["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(".context." in k or "clicks0" in k for k in model)


def test_checkpoint_interval_keeps_every_nth_epoch_and_the_last(training_project: Path) -> None:
    summary, events = _run(training_project, name="sparse", overrides={"training": {"checkpoint_every": 3}})
    assert len(_of(events, "epoch")) == 4
    ckpts = Path(summary["run_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("epoch_*.pt")) == ["epoch_003.pt", "epoch_004.pt"]
    last = torch.load(ckpts / "last.pt", weights_only=True)
    assert last["step"] == summary["step"] and last["epoch"] == 3  # the final epoch (0-based) wrote it
    # a stop between intervals still writes last.pt at the step it stopped
    part, _ = _run(training_project, name="sparse-stop", max_steps=5, overrides={"training": {"checkpoint_every": 3}})
    assert torch.load(Path(part["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["step"] == 5


def test_val_share_skips_validations_but_not_the_first_or_the_last(training_project: Path) -> None:
    """A cap no validation fits under (every validation costs more than 1e-9 of the training time) leaves the first
    epoch's (it prices the next) and the last epoch's; best.pt comes from those."""
    summary, events = _run(training_project, name="paced", overrides={"training": {"val_share": 1e-9}})
    vals = [e["val_iou_gt"] for e in _of(events, "epoch")]
    assert len(vals) == 4 and vals[0] is not None and vals[-1] is not None and vals[1:3] == [None, None]
    assert summary["best_val_iou"] == max(vals[0], vals[-1])
    best = torch.load(Path(summary["run_dir"]) / "checkpoints" / "best.pt", weights_only=True)
    assert best["meta"]["epoch"] in (1, 4) and best["meta"]["val_iou_gt"] == summary["best_val_iou"]


def test_flip_averaged_teacher_targets_train_and_need_the_eight_flips(training_project: Path) -> None:
    from store.errors import UserError

    with pytest.raises(UserError, match="needs training.augment.dihedral: true"):
        _run(training_project, name="flips-off", max_steps=1, overrides={"training": {"teacher_flip_views": 2}})
    summary, events = _run(training_project, name="flips", max_steps=2, overrides={
        "training": {"teacher_flip_views": 4, "augment": {"dihedral": True}}})
    assert summary["status"] == "finished" and summary["step"] == 2
    steps = _of(events, "step")
    assert all(0 < e["loss_soft"] < float("inf") for e in steps)


def test_validation_pacer_keeps_the_overhead_within_its_share() -> None:
    from inference.training.loop import ValidationPacer

    pacer = ValidationPacer(0.1)
    assert pacer.due(1.0)  # the first one prices the next
    pacer.add({"data": 0.5, "step": 0.5, "validation": 0.3, "checkpoint": 0.0}, validated=True)
    assert not pacer.due(1.0)  # 0.3 + 0.3 > 0.1 x 2
    pacer.add({"data": 0.5, "step": 0.5}, validated=False)
    assert not pacer.due(3.0)  # 0.6 > 0.1 x 5
    assert pacer.due(4.0)  # 0.6 <= 0.1 x 6
    pacer.add({"data": 4.0, "validation": 0.1, "checkpoint": 0.05}, validated=True)
    assert pacer.last_cost_s == pytest.approx(0.15) and pacer.overhead_s == pytest.approx(0.45)
    assert pacer.due(0.0)  # 0.45 + 0.15 <= 0.1 x 6
    assert ValidationPacer(0.0).due(0.0)  # no cap


def test_verdicts_and_corrections_reach_the_loss(fresh_training_project) -> None:
    """Recorded verdicts change the next run's per-sample terms, and a corrected mask becomes its Dice target, through
    review.training_set (no monkeypatch): "student better" scales the teacher terms by 0.3; a correction weighs 2x
    (hard sample), turns the soft term off and replaces the target."""
    import numpy as np

    from review.verdicts import record_verdict
    from store.schema import Sample

    project = fresh_training_project()
    _, uniform = _run(project, name="uniform", max_steps=1)
    with Project.open(project) as p:
        with p.db.session() as s:
            train = [(r.id, r.height, r.width) for r in s.execute(
                select(Sample.id, Sample.height, Sample.width).where(Sample.split == "train"))]
        for sid, _, _ in train:
            record_verdict(p.db, sid, "student_better", "qa")
    _, better = _run(project, name="student-better", max_steps=1)
    u, w = _of(uniform, "step")[0], _of(better, "step")[0]
    assert w["loss_feat"] == pytest.approx(0.3 * u["loss_feat"], rel=1e-4)
    assert w["loss_soft"] == pytest.approx(0.3 * u["loss_soft"], rel=1e-4)
    assert w["loss_dice"] == pytest.approx(u["loss_dice"], rel=1e-4)
    with Project.open(project) as p:
        for sid, h, wd in train:  # a reviewer redraws every defect as the whole crop
            record_verdict(p.db, sid, "corrected", "qa", corrected_mask=np.ones((h, wd), bool))
    _, corrected = _run(project, name="corrected", max_steps=1)
    c = _of(corrected, "step")[0]
    assert _of(corrected, "start")[0]["training_set"]["corrected"] == len(train)
    assert c["loss_soft"] == 0.0 and c["loss_feat"] == pytest.approx(2.0 * u["loss_feat"], rel=1e-4)
    assert abs(c["loss_dice"] / 2.0 - u["loss_dice"]) > 0.1 * u["loss_dice"]  # another target
    assert _of(corrected, "start")[0]["data_hash"] != _of(uniform, "start")[0]["data_hash"]


def test_a_bad_weights_section_fails_before_training(fresh_training_project) -> None:
    from review.weights import WeightsError

    project = fresh_training_project(per_class=4)
    with Project.open(project) as p:
        p.config["weights"] = {"vlm_trst": 0.5}
        p.save_config()
    with pytest.raises(WeightsError, match="vlm_trust"):
        _run(project, name="bad-weights", max_steps=1)
    assert not (project / "runs" / "bad-weights").exists()


def test_a_head_the_backbone_cannot_feed_fails_in_one_line_before_training(fresh_training_project) -> None:
    """The 1/2 head (the default) needs a stride-2 feature; TinyViT has none: a user error naming the setting."""
    from store.errors import UserError

    project = fresh_training_project(per_class=4)
    with Project.open(project) as p:
        p.config["distillation"]["student"].update({"backbone": "tinyvit_5m", "mask_stride": 2})
        p.save_config()
    with pytest.raises(UserError, match="distillation.student: mask_stride 2 needs a backbone with a stride-2"):
        _run(project, name="bad-head", max_steps=1)
    assert not (project / "runs" / "bad-head").exists()


def test_no_feature_loss_is_the_naive_baseline(training_project: Path) -> None:
    summary, events = _run(training_project, name="naive", no_feature_loss=True, max_steps=1)
    assert all(e["loss_feat"] == 0.0 for e in _of(events, "step"))
    assert _row(training_project, summary["run_id"]).mode == "distill_naive"
    assert len(_of(events, "cache_ready")) == 1  # the soft term still reads the teacher's masks


def test_a_supervised_only_loss_on_labelled_crops_computes_no_teacher_features(training_project: Path) -> None:
    """The distillation table's supervised row: neither teacher term counts and every crop has a mask, so the
    teacher's features are never read and the run does not compute them."""
    supervised = {"loss": {"feature_weight": 0.0, "soft_bce_weight": 0.0, "dice_weight": 1.0}}
    summary, events = _run(training_project, name="supervised", max_steps=2, overrides=supervised)
    assert not _of(events, "cache") and not _of(events, "cache_ready")
    steps = _of(events, "step")
    assert len(steps) == 2 and all(e["loss_feat"] == 0.0 and e["loss_soft"] == 0.0 for e in steps)
    assert summary["status"] == "finished" and 0.0 <= _of(events, "epoch")[0]["val_iou_teacher"] <= 1.0


def test_finetune_teacher_saves_an_official_sam2_checkpoint(training_project: Path) -> None:
    summary, events = _run(training_project, mode="finetune-teacher", name="ft", max_steps=1)
    assert {"loss_mask", "loss_iou_head"} <= set(_of(events, "step")[0])
    teacher_pt = Path(summary["run_dir"]) / "teacher.pt"
    sd = torch.load(teacher_pt, map_location="cpu", weights_only=True)
    assert list(sd) == ["model"]
    from sam2.build_sam import build_sam2

    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", str(teacher_pt), device="cpu")  # strict load
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    assert _row(training_project, summary["run_id"]).mode == "finetune_teacher"
    # "use as teacher": registered to predict at the pixel scale it was trained at (native layout)
    from inference.registry import active_model, open_segmenter
    from inference.teacher import Sam2NativeSegmenter
    from inference.training.registration import register_teacher_checkpoint

    with Project.open(training_project) as p:
        register_teacher_checkpoint(p, Path(summary["run_dir"]), training_run_id=summary["run_id"])
        info = active_model(p, "teacher")
        assert info.meta["layout"] == "native" and info.meta["scale"] == 0.5 and info.input_size == 256
        assert isinstance(open_segmenter(p, info), Sam2NativeSegmenter)


@pytest.mark.parametrize("config", ["sam2.1_resnet50d", "sam2.1_resnet50d_clicks"])
def test_a_teacher_with_the_convolutional_trunk_fine_tunes_from_random_weights(training_project: Path,
                                                                               tmp_path: Path, config: str) -> None:
    # the teacher for sites without SA-1B weights: the same run, the same official checkpoint format; the _clicks
    # config's decoder also reads click maps (inference.sam2_net.ClickMaps), which the fine-tune trains
    from inference.sam2_net import build_model, load_model

    start = tmp_path / "r50_random.pt"
    start_state = build_model(config, image_size=128).state_dict()
    torch.save({"model": start_state}, start)
    cfg = tmp_path / "r50.yaml"
    cfg.write_text(f"teacher: {{config: {config}, checkpoint: {start}, image_size: 128, scale: 0.25}}\n")
    summary, events = _run(training_project, mode="finetune-teacher", name=f"ft-{config}", max_steps=2,
                           config_file=cfg)
    steps = _of(events, "step")
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    state = torch.load(Path(summary["run_dir"]) / "teacher.pt", map_location="cpu", weights_only=True)["model"]
    assert "image_encoder.trunk.body.conv1.0.weight" in state  # ResNet-D's deep stem, not Hiera's patch embedding
    load_model(Path(summary["run_dir"]) / "teacher.pt", config, image_size=128)  # strict
    if config.endswith("_clicks"):
        key = "sam_mask_decoder.click_maps.s0.weight"
        assert not torch.equal(state[key], start_state[key])  # the click maps were trained


def test_fine_tuning_hiera_from_random_weights_warns_and_names_the_trunk_that_learns(fresh_training_project,
                                                                                     tmp_path: Path) -> None:
    project = fresh_training_project(per_class=2)  # no teacher registered: the teacher has random weights
    _, events = _run(project, mode="finetune-teacher", name="ft-hiera", max_steps=1)
    assert [e["message"] for e in _of(events, "warning") if "Hiera does not learn" in e["message"]] == [
        "fine-tuning SAM 2 sam2.1_hiera_t from RANDOM weights: Hiera does not learn from a few hundred crops; "
        "without official weights set distillation.teacher.config: sam2.1_resnet50d_clicks (a convolutional trunk "
        "and click maps, docs/benchmarks.md)"]
    for config in ("sam2.1_resnet50d", "sam2.1_resnet50d_clicks"):  # either convolutional trunk learns: no warning
        cfg = tmp_path / f"{config}.yaml"
        cfg.write_text(f"teacher: {{config: {config}, image_size: 128, scale: 0.25}}\n")
        _, events = _run(project, mode="finetune-teacher", name=f"ft-{config}", max_steps=1, config_file=cfg)
        assert _of(events, "step") and not [e for e in _of(events, "warning") if "Hiera" in e["message"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_workers_train_through_ddp(training_project: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "app.cli", "train", "--project", str(training_project),
           "--max-steps", "2", "--no-progress", "--name", "ddp"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    start = _of(events, "start")
    assert len(start) == 1 and start[0]["world_size"] == 2  # only rank 0 prints
    assert start[0]["steps_per_epoch"] == 2  # 12 samples / 2 ranks / batch 4
    assert [e["step"] for e in _of(events, "step")] == [1, 2]
    end = _of(events, "end")[0]
    assert end["status"] == "finished" and _row(training_project, end["run_id"]).config["world_size"] == 2


def test_distill_uses_the_projects_active_teacher_when_yaml_names_none(
        tmp_path: Path, magnetic_tile_pairs: list) -> None:
    """`models add teacher` is all a user does before distilling: the registered checkpoint, config short name and
    input size are used, and the random-teacher warning is not raised."""
    import shutil

    from inference.registry import add_model
    from inference.sam2_net import build_model
    from store.ingest import ingest

    data = tmp_path / "crops" / "MT_Break"
    data.mkdir(parents=True)
    for img, mask, _ in [x for x in magnetic_tile_pairs if x[2] == "MT_Break"][:8]:
        shutil.copy(img, data)
        shutil.copy(mask, data)
    overrides = {"distillation": {"student": {"input_size": 128}, "training": {
        "batch_size": 4, "num_workers": 0, "log_every": 1, "augment": None}}}
    with Project.create(tmp_path / "project", overrides=overrides) as p:
        ingest(p.db, tmp_path / "crops")
    project = tmp_path / "project"
    ckpt = tmp_path / "teacher.pt"
    torch.manual_seed(1)
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=256).state_dict()}, ckpt)
    with Project.open(project) as p:
        info, _ = add_model(p, "teacher", ckpt, config="sam2.1_hiera_t", image_size=256)
        stored = str(info.resolve(p))
    summary, events = _run(project, name="store-teacher", max_steps=1, epochs=1)
    assert not [e for e in _of(events, "warning") if "RANDOM" in e["message"]]
    teacher = json.loads(json.dumps(_row(project, summary["run_id"]).config))["distillation"]["teacher"]
    assert teacher["checkpoint"] == stored and teacher["config"] == "sam2.1_hiera_t" and teacher["image_size"] == 256


def test_a_compiled_student_trains_like_the_eager_one(training_project: Path) -> None:
    """training.compile compiles the student's encoder and decoder in place: the same seed gives the same first
    losses as eager steps (up to kernel rounding), and the checkpoints keep the eager state-dict keys."""
    from torch._dynamo.utils import counters

    # ResNet-10-T: the smallest graph of the student's backbones, so the CPU compile stays about a minute
    small = {"student": {"backbone": "resnet10t"}, "training": {"epochs": 1}}
    counters.clear()
    eager, ev_eager = _run(training_project, name="eager", max_steps=2, overrides=small)
    assert counters["stats"]["unique_graphs"] == 0
    comp, ev_comp = _run(training_project, name="compiled", max_steps=2,
                         overrides={**small, "training": {"epochs": 1, "compile": "default"}})
    assert counters["stats"]["unique_graphs"] >= 2  # Dynamo did capture graphs (encoder, decoder): not eager
    assert len(_of(ev_eager, "step")) == len(_of(ev_comp, "step")) == 2  # log_every 1: both steps, same batches
    for a, b in zip(_of(ev_eager, "step"), _of(ev_comp, "step")):
        for term in ("loss", "loss_feat", "loss_soft"):
            assert b[term] == pytest.approx(a[term], rel=2e-3, abs=2e-4), (term, a, b)
    keys = [set(torch.load(Path(s["run_dir"]) / "checkpoints" / "last.pt", map_location="cpu",
                           weights_only=True)["model"]) for s in (eager, comp)]
    assert keys[0] == keys[1] and not any("_orig_mod" in k for k in keys[1])


def test_a_compile_that_cannot_build_is_one_line_that_names_the_setting(training_project: Path, tmp_path: Path) -> None:
    """No C++ compiler for Inductor (CXX points nowhere, a fresh compile cache): `maskbench train` says which setting
    to change, in one line, instead of Dynamo's pages."""
    cfg = tmp_path / "compile.yaml"
    cfg.write_text("student: {backbone: resnet10t}\ntraining: {compile: default}\n", encoding="utf-8")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "main.py", "train", "--project", str(training_project), "--config", str(cfg),
                           "--epochs", "1", "--max-steps", "1", "--name", "no-compiler", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training.compile: default could not compile the student")
    assert "set distillation.training.compile: null" in err[0] and "Traceback" not in proc.stderr


def test_a_student_trains_on_windows_and_a_window_larger_than_its_canvas_fails_first(training_project: Path) -> None:
    """training.crop_size: steps on 64 px windows of the 128 px canvases (every loss term, follow-up clicks),
    validation on whole canvases; a window the canvas cannot hold, or one off the student's deepest stride, is one
    user error before the teacher's features are computed."""
    from store.errors import UserError

    summary, events = _run(training_project, name="windows", max_steps=2, overrides={"training": {"crop_size": 64}})
    steps = _of(events, "step")
    assert summary["status"] == "finished" and len(steps) == 2
    assert all(e["loss_feat"] > 0 and e["loss_soft"] > 0 for e in steps)
    assert 0.0 <= _of(events, "epoch")[0]["val_iou_gt"] <= 1.0
    with pytest.raises(UserError, match=r"crop_size \(256\) must be a multiple of 32 from 32 to the student's input_size \(128\)"):
        events.clear()
        train(TrainOptions(project=training_project, progress=False, emit=events.append, name="too-big",
                           max_steps=1, overrides={"training": {"crop_size": 256}}))
    assert not _of(events, "cache") and not (training_project / "runs" / "too-big").exists()
    with pytest.raises(UserError, match=r"crop_size \(48\) must be a multiple of 32"):
        _run(training_project, name="off-stride", max_steps=1, overrides={"training": {"crop_size": 48}})


def test_a_student_trains_on_shifted_crops_and_shift_with_windows_fails_first(training_project: Path) -> None:
    """training.augment.shift from project.yaml's settings: steps with every loss term on crops moved about their
    canvases; asked together with windows, one user error before the teacher's features are computed."""
    from store.errors import UserError

    summary, events = _run(training_project, name="shifted", max_steps=2,
                           overrides={"training": {"augment": {"shift": True}}})
    steps = _of(events, "step")
    assert summary["status"] == "finished" and len(steps) == 2
    assert all(e["loss_feat"] > 0 and e["loss_soft"] > 0 for e in steps)
    events.clear()
    with pytest.raises(UserError, match="augment.shift moves each crop about its whole canvas"):
        train(TrainOptions(project=training_project, progress=False, emit=events.append, name="shift-and-windows",
                           max_steps=1, overrides={"training": {"crop_size": 64, "augment": {"shift": True}}}))
    assert not _of(events, "cache")


def test_a_first_step_that_takes_much_of_the_time_budget_is_a_warning(training_project: Path) -> None:
    """A time budget anneals the schedule within it, warm-up included; when the first step (set-up, warm-up,
    torch.compile) eats a quarter of it or more, the run says so instead of quietly training for what is left."""
    _, events = _run(training_project, name="tight", max_steps=2, overrides={"training": {"time_budget_s": 0.05}})
    warnings = [e["message"] for e in _of(events, "warning") if "time budget" in e["message"]]
    assert len(warnings) == 1 and "of the 0 s time budget" in warnings[0] and "time_budget_s" in warnings[0]
    _, events = _run(training_project, name="roomy", max_steps=2, overrides={"training": {"time_budget_s": 1e6}})
    assert not [e for e in _of(events, "warning") if "time budget" in e["message"]]
