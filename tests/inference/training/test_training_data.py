"""The device-side data path of training: crops at native pixel scale, flips/rotations that move maps and clicks
together, interactive clicks that land where they should, class-balanced sampling, the EMA and the schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference import layout as lay
from inference.training import clicks as ck
from inference.training import crops as cr
from inference.training.ema import ModelEMA
from review.training_set import TrainingSample
from review.weights import SampleWeights
from store import rle


def _samples(pairs: list[tuple[Path, Path, str]], n: int = 6) -> list[TrainingSample]:
    import cv2

    w = SampleWeights(1.0, 1.0, 1.0, False)
    return [TrainingSample(i, str(img), f"sha{i}", cls, "train", w,
                           rle.encode(cv2.imread(str(mask), 0) >= 128), None, None)
            for i, (img, mask, cls) in enumerate(pairs[:n])]


def test_crops_keep_their_pixels_and_masks_are_never_resampled(magnetic_tile_pairs: list) -> None:
    import cv2

    from store.images import load_image

    samples = _samples(magnetic_tile_pairs)
    crops = cr.decode_crops(samples)
    for s, im, t in zip(samples, crops.images, crops.targets):
        raw = load_image(s.path)
        assert tuple(im.shape[1:]) == raw.shape[:2] and torch.equal(im, torch.from_numpy(raw).permute(2, 0, 1))
        assert torch.equal(t, torch.from_numpy(cv2.imread(s.path[:-4] + ".png", 0) >= 128))
    # a canvas is the crop itself at the top-left (or a window of it), padding outside, the mask alongside
    views = cr.tile_views(crops, 256)
    c = cr.assemble(crops, views.crop, views.origin, 256)
    for v, (i, (y0, x0)) in enumerate(zip(views.crop, views.origin)):
        h, w = crops.images[i].shape[1:]
        th, tw = min(256, h - y0), min(256, w - x0)
        assert bool(c.valid[v, 0, :th, :tw].all()) and int(c.valid[v].sum()) == th * tw
        assert torch.equal(c.target[v, 0, :th, :tw] > 0.5, crops.targets[i][y0:y0 + th, x0:x0 + tw])
        assert torch.allclose(c.image01[v, :, :th, :tw] * 255, crops.images[i][:, y0:y0 + th, x0:x0 + tw].float())
    # the views are the tiles prediction decodes
    assert [o for v, o in zip(views.crop, views.origin) if v == 0] == list(lay.plan(
        tuple(crops.images[0].shape[1:]), 256).tiles)


@pytest.mark.parametrize("k", range(8))
def test_flips_and_rotations_move_maps_and_clicks_together(k: int) -> None:
    s = 32
    m = torch.zeros(2, 1, s, s)
    m[0, 0, 4:9, 20:30] = 1  # off-centre, asymmetric
    m[1, 0, 20:31, 2:5] = 1
    gen = torch.Generator().manual_seed(k)
    pts, lbs = ck.initial_clicks(m, torch.ones_like(m), gen, 3, 0)
    d = torch.tensor([k, (k + 3) % 8])
    moved = cr.dihedral(m, d)
    moved_pts = cr.dihedral_points(pts, d, s)
    for b in range(2):
        for (x, y), lab in zip(moved_pts[b].tolist(), lbs[b].tolist()):
            if lab == 1:
                assert moved[b, 0, int(y), int(x)] == 1
    assert torch.equal(moved.sum((1, 2, 3)), m.sum((1, 2, 3)))


def test_initial_clicks_positive_inside_negative_near_and_empty_targets_get_negatives() -> None:
    s = 64
    t = torch.zeros(3, 1, s, s)
    t[0, 0, 10:30, 10:30] = 1
    t[1, 0, 40:42, 5:60] = 1  # a 2 px crack
    valid = torch.ones_like(t)
    valid[:, :, :, 62:] = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        pts, lbs = ck.initial_clicks(t, valid, gen, 3, 2)
        for b in range(3):
            pos = [(x, y) for (x, y), lab in zip(pts[b].tolist(), lbs[b].tolist()) if lab == 1]
            neg = [(x, y) for (x, y), lab in zip(pts[b].tolist(), lbs[b].tolist()) if lab == 0]
            if b < 2:
                assert 1 <= len(pos) <= 3 and len(neg) <= 2
            else:
                assert not pos and 1 <= len(neg) <= 2  # nothing to click on: negatives only
            assert all(t[b, 0, int(y), int(x)] == 1 for x, y in pos)
            assert all(t[b, 0, int(y), int(x)] == 0 and valid[b, 0, int(y), int(x)] == 1 for x, y in neg)


@pytest.mark.parametrize("share", [0.0, 0.6, 1.0])
def test_a_share_of_first_prompts_is_exactly_one_positive_click(share: float) -> None:
    t = torch.zeros(4000, 1, 16, 16)
    t[:3000, 0, 4:12, 4:12] = 1  # the last 1000 crops have nothing to click on
    gen = torch.Generator().manual_seed(1)
    pts, lbs = ck.initial_clicks(t, torch.ones_like(t), gen, 3, 2, one_click_share=share)
    n_pos, n_neg = (lbs == 1).sum(1), (lbs == 0).sum(1)
    single = ((n_pos == 1) & (n_neg == 0)).float()
    # the uniform 1-3 positive / 0-2 negative draw gives one positive alone a ninth of the time
    assert single[:3000].mean().item() == pytest.approx(share + (1 - share) / 9, abs=0.03)
    assert (n_pos[3000:] == 0).all() and (n_neg[3000:] >= 1).all()  # empty targets keep their negatives
    if share < 1:
        assert (n_pos[:3000] == 3).any() and (n_neg[:3000] == 2).any()


def test_follow_up_click_goes_into_the_larger_error() -> None:
    s = 64
    t = torch.zeros(3, 1, s, s, dtype=torch.bool)
    t[:, 0, 10:40, 10:40] = True
    pred = torch.zeros_like(t)
    pred[0, 0, 10:40, 10:20] = True  # most of the object missed: a positive click in the miss
    pred[1, 0, 10:40, 10:40] = True
    pred[1, 0, 45:64, 0:64] = True  # a large spill: a negative click in the spill
    pred[2] = t[2]  # right already: no click
    pts, lbs = ck.error_clicks(pred, t.float(), torch.ones_like(t), torch.Generator().manual_seed(0))
    (x0, y0), (x1, y1) = pts[0, 0].tolist(), pts[1, 0].tolist()
    assert lbs[:, 0].tolist() == [1.0, 0.0, -1.0]
    assert t[0, 0, int(y0), int(x0)] and not pred[0, 0, int(y0), int(x0)]
    assert pred[1, 0, int(y1), int(x1)] and not t[1, 0, int(y1), int(x1)]


def test_class_balanced_sampling() -> None:
    classes = ["a"] * 90 + ["b"] * 10
    natural = cr.class_balanced_weights(classes, 0.0)
    equal = cr.class_balanced_weights(classes, 1.0)
    sqrt = cr.class_balanced_weights(classes, 0.5)
    share_b = lambda w: float(w[90:].sum())  # noqa: E731
    assert share_b(natural) == pytest.approx(0.1) and share_b(equal) == pytest.approx(0.5)
    assert 0.1 < share_b(sqrt) < 0.5


def test_ema_follows_the_weights_with_warm_up() -> None:
    net = torch.nn.Linear(3, 1)
    ema = ModelEMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # first rate (1 + 0) / (10 + 0) = 0.1: the average moves 90% of the way
    assert torch.allclose(ema.module.weight, 0.1 * ema.module.weight.new_tensor(0) + 0.9, atol=0.35)
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(ema.module.weight, torch.ones(1, 3), atol=1e-4)


def test_one_cycle_warms_up_then_anneals() -> None:
    from inference.training.loop import OneCycle

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = OneCycle(opt, 1.0, 100, {"warmup": 0.1})
    lrs = [(sched.apply(i), opt.param_groups[0]["lr"])[1] for i in range(101)]
    assert lrs[0] == pytest.approx(0.04) and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(1e-3)
    budget = OneCycle(opt, 1.0, 10**9, {"warmup": 0.1}, time_budget_s=1e-9)
    budget.started()
    assert budget.progress(1) == 1.0  # a spent time budget finishes the schedule whatever the step count


def test_a_time_budget_schedule_counts_from_the_first_step_not_the_set_up() -> None:
    """A compiled run on a fresh machine spends ~100 s of a 180 s budget in its first step: the schedule must still
    warm up and peak in the 80 s left, and end when the whole budget's wall time is spent."""
    from inference.training.loop import OneCycle

    def elapse(s: OneCycle, seconds: float) -> None:  # move the schedule's clocks back: that much time has passed
        s.t0 -= seconds
        if s.t_first is not None:
            s.t_first -= seconds

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = OneCycle(opt, 1.0, 10**9, {"warmup": 0.1}, time_budget_s=180.0)
    assert sched.progress(0) == 0.0  # the first step (set-up, compile) runs at the warm-up's start
    elapse(sched, 100.0)  # the first step took 100 s
    sched.started()
    sched.started()  # idempotent: the clock starts once
    assert sched.progress(1) < 0.01 and sched.apply(1) < 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04, abs=0.01)  # warm-up, not the cosine's second half
    elapse(sched, 40.0)  # half of the 80 s left
    assert sched.progress(2) == pytest.approx(0.5, abs=0.01)
    elapse(sched, 40.0)  # 180 s of wall time in all: spent
    assert sched.progress(3) == pytest.approx(1.0, abs=0.01)
    # a resumed run (60 s before, in another process) goes on from its share and also ends with the wall budget
    again = OneCycle(opt, 1.0, 10**9, {"warmup": 0.1}, time_budget_s=180.0)
    again.load_state_dict({"elapsed": 60.0})
    assert again.progress(0) == pytest.approx(60.0 / 180.0)
    elapse(again, 20.0)  # this process's set-up: 20 s
    again.started()
    assert again.progress(1) == pytest.approx(60.0 / 160.0, abs=0.01)
    elapse(again, 100.0)  # 60 + 20 + 100 = 180 s of wall time
    assert again.progress(2) == pytest.approx(1.0, abs=0.01)


def test_layout_round_trip_tiles_cover_the_crop() -> None:
    lo = lay.plan((300, 700), 256)
    assert lo.tiles[0] == (0, 0) and max(x for _, x in lo.tiles) == 700 - 256
    cover = np.zeros((300, 700), bool)
    for y0, x0 in lo.tiles:
        cover[y0:y0 + 256, x0:x0 + 256] = True
    assert cover.all()
    assert lay.Layout.from_json(lo.to_json()) == lo
    # a click decodes the tiles that hold it; stitching puts their logits back where they came from
    chosen = lay.tile_prompts(lo, np.array([[650.0, 20.0]]), np.array([1]))
    assert [t for t, _, _ in chosen] == [i for i, (y0, x0) in enumerate(lo.tiles)
                                         if x0 <= 650 < x0 + 256 and y0 <= 20 < y0 + 256]
    t, coords, _ = chosen[0]
    assert coords.tolist() == [[650.0 - lo.tiles[t][1], 20.0 - lo.tiles[t][0]]]
    full = lay.stitch(lo, [(t, np.full((64, 64), 5.0, np.float32))])
    y0, x0 = lo.tiles[t]
    assert (full[y0:y0 + 256, x0:x0 + 256] > 0).all() and (full[:, :x0] < 0).all() and (full[256:] < 0).all()


def test_unlabelled_crops_get_feature_and_soft_terms_only_with_the_teachers_clicks(magnetic_tile_pairs: list) -> None:
    """A crop without a verified mask trains the student on the teacher alone: its stored clicks prompt both models,
    the Dice term is zero, the feature and soft terms are not."""
    from dataclasses import replace

    from inference.sam2_net import Sam2Net, build_model
    from inference.student import StudentConfig, StudentModel
    from inference.training.tasks import DistillTask
    from inference.training.teacher_targets import TeacherTargets

    torch.manual_seed(0)
    labelled = _samples(magnetic_tile_pairs, 2)
    unlabelled = [replace(s, target_rle=None, prompt_points=((40.0, 60.0),), prompt_labels=(1,)) for s in labelled]
    crops = cr.decode_crops(unlabelled, 0.25)
    views = cr.tile_views(crops, 128)
    net = Sam2Net(build_model("sam2.1_hiera_demo", image_size=256))
    t_crops = crops.rescaled(0.5)
    t_views = cr.Views(views.crop, [(2 * y, 2 * x) for y, x in views.origin], 256)
    targets = TeacherTargets(net, t_crops, t_views, 1, torch.device("cpu"))
    tcfg = {"augment": None, "clicks": {"follow_up": 1}}
    loss_cfg = {"feature_weight": 0.4, "soft_bce_weight": 0.3, "dice_weight": 0.3, "temperature": 2.0}
    student = StudentModel(StudentConfig(input_size=128, scale=0.25))
    task = DistillTask(crops, 128, tcfg, loss_cfg, student, {}, targets, 2.0, no_feature_loss=False)
    b = task.batch(4, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert not any(b.canvases.labelled)
    for j in range(4):  # the stored click, moved onto the canvas (scale 0.25, first tile at the origin)
        assert b.labels[j].tolist().count(1.0) == 1 and b.points[j, 0].tolist() == [10.0, 15.0]
    _, terms = task.train_loss(student, b, torch.Generator().manual_seed(1))
    assert terms["dice"] == 0.0 and terms["feat"] > 0 and terms["soft"] > 0


def test_teacher_fine_tuning_supervises_the_iou_prediction_of_every_output(magnetic_tile_pairs: list) -> None:
    """One click picks SAM's mask by predicted IoU, so every output's IoU score must be trained (SAM 2's
    supervise_all_iou); trained only for the output the loss chose, the others keep random scores and win at
    prediction time (the teacher then scored validation IoU 0.0 at every epoch on the GPU)."""
    from inference.sam2_net import Sam2Net, build_model
    from inference.training.tasks import FinetuneTask

    torch.manual_seed(0)
    crops = cr.decode_crops(_samples(magnetic_tile_pairs, 4), 0.5)
    net = Sam2Net(build_model("sam2.1_hiera_demo", image_size=256)).train()
    tcfg = {"augment": None, "clicks": {"max_positive": 1, "max_negative": 0, "follow_up": 0}}
    task = FinetuneTask(crops, net, tcfg, {})
    b = task.batch(4, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert ((b.labels >= 0).sum(1) == 1).all()  # one click each: the multimask outputs are the ones chosen from
    loss, terms = task.train_loss(net, b, torch.Generator().manual_seed(1))
    loss.backward()
    head = net.model.sam_mask_decoder.iou_prediction_head.layers[-1]
    per_output = head.weight.grad.abs().sum(1)
    assert per_output.shape[0] == 4 and bool((per_output > 0).all()), per_output


def test_teacher_fine_tuning_uses_channels_last_for_a_convolutional_trunk_only(magnetic_tile_pairs: list) -> None:
    """The ResNet-50-D teacher's weights take the batches' channels_last layout (its step with everything
    contiguous is 1.46x slower on an H100, docs/benchmarks.md); Hiera, a ViT, stays in the layout it was measured
    in."""
    from inference.sam2_net import Sam2Net, build_model
    from inference.training.tasks import FinetuneTask

    crops = cr.decode_crops(_samples(magnetic_tile_pairs, 1), 0.5)
    tcfg = {"augment": None, "clicks": {"max_positive": 1, "max_negative": 0, "follow_up": 0}}
    for config, conv in {"sam2.1_resnet50d": True, "sam2.1_hiera_demo": False}.items():
        net = Sam2Net(build_model(config, image_size=128))
        assert net.convolutional_trunk is conv, config
        assert FinetuneTask(crops, net, tcfg, {}).channels_last is conv, config


def test_validation_scores_are_the_mean_per_crop_ious_of_the_stitched_masks(magnetic_tile_pairs: list) -> None:
    from inference.training.validation import ValSet, mean_iou

    torch.manual_seed(0)
    crops = cr.decode_crops(_samples(magnetic_tile_pairs, 6), 1.0)
    vs = ValSet(crops, 128, torch.device("cpu"))  # 128 px canvases: the crops are cut into tiles
    assert len(vs.views) > len(crops.samples) and len(vs) > 0
    student = torch.randn(len(vs.views), 1, 128, 128) + 1.0
    teacher = torch.randn(len(vs.views), 1, 128, 128) + 1.0

    def reference(against: dict[int, torch.Tensor]) -> float:
        preds = vs.stitched(student)
        ious = [float((p & against[ci]).sum()) / float((p | against[ci]).sum()) for ci, p in preds.items()]
        return float(np.mean(ious))

    targets = {ci: crops.targets[ci] for ci in vs.scored}
    assert vs.scores(student) == (pytest.approx(reference(targets), abs=1e-6), None)
    vs.teacher_logits = teacher
    for _ in range(2):  # the second call uses the teacher's masks stitched by the first
        gt, vs_teacher = vs.scores(student)
        assert gt == pytest.approx(reference(targets), abs=1e-6)
        assert vs_teacher == pytest.approx(reference(vs.stitched(teacher)), abs=1e-6)
    assert 0.0 < gt < 1.0 and 0.0 < vs_teacher < 1.0
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert mean_iou([empty, empty | True], [empty, empty]) == 0.5  # both empty: 1.0; disjoint: 0.0


def _stored_click_views(magnetic_tile_pairs: list) -> tuple[cr.CropSet, cr.Views, object]:
    """Three crops on 128 px student canvases, the third unlabelled with a stored click at (40, 60), and the
    teacher's cached features of every view in all eight flips (teacher canvas 256 px)."""
    from dataclasses import replace

    from inference.sam2_net import Sam2Net, build_model
    from inference.training.teacher_targets import TeacherTargets

    torch.manual_seed(0)
    labelled = _samples(magnetic_tile_pairs, 3)
    stored = replace(labelled[2], target_rle=None, prompt_points=((40.0, 60.0),), prompt_labels=(1,))
    crops = cr.decode_crops([*labelled[:2], stored], 0.25)  # about 80 x 70 px on a 128 px canvas
    views = cr.tile_views(crops, 128)
    net = Sam2Net(build_model("sam2.1_hiera_demo", image_size=256))
    t_views = cr.Views(views.crop, [(2 * y, 2 * x) for y, x in views.origin], 256)
    return crops, views, TeacherTargets(net, crops.rescaled(0.5), t_views, 8, torch.device("cpu"))


@pytest.mark.parametrize("flip_views", [2, 4])
def test_flip_averaged_teacher_targets_are_the_mirrored_canvases_answers(magnetic_tile_pairs: list,
                                                                         flip_views: int) -> None:
    """training.teacher_flip_views: the averaged target of a (view, flip) entry equals the teacher run afresh on that
    canvas and its mirrors (clicks mirrored, answers mirrored back), so the mirror table and the click mapping are
    right for every one of the eight flips."""
    from inference.flip_ensemble import FLIPS
    from inference.sam2_net import choose_output

    crops, views, targets = _stored_click_views(magnetic_tile_pairs)
    targets.flip_views = flip_views
    view = 1
    entries = targets.entry(torch.tensor([view] * 8), torch.arange(8))
    points = torch.tensor([[[70.0, 90.0], [150.0, 40.0]]] * 8)
    labels = torch.tensor([[1.0, 0.0]] * 8)
    got = targets.logits(entries, points, labels)
    c = cr.assemble(crops.rescaled(0.5), [views.crop[view]], [(2 * views.origin[view][0], 2 * views.origin[view][1])],
                    256)
    canvases = cr.dihedral(c.normalised().expand(8, -1, -1, -1), torch.arange(8))
    want = torch.zeros_like(got)
    with torch.no_grad():
        for lr, tb in FLIPS[:flip_views]:
            dims = [dim for dim, on in ((-1, lr), (-2, tb)) if on]
            x = canvases.flip(dims) if dims else canvases
            p = points.clone()
            if lr:
                p[..., 0] = 255 - p[..., 0]
            if tb:
                p[..., 1] = 255 - p[..., 1]
            masks, iou = targets.net.decode_all(targets.net.encode_normalised(x), p, labels)
            out = choose_output(masks.float(), iou.float(), labels)[0]
            want += out.flip(dims) if dims else out
    want /= flip_views
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    targets.flip_views = 1
    assert not torch.allclose(targets.logits(entries, points, labels), got, atol=1e-3)  # averaging changes them


def test_training_windows_cut_the_teachers_flipped_view_and_move_its_stored_clicks(magnetic_tile_pairs: list) -> None:
    """training.crop_size: a student batch is a window of a whole view after its flip, so the teacher's cached
    features of that (view, flip) entry cover exactly the window's pixels; windows sit on the content, start on the
    student's deepest stride, and an unlabelled crop's stored click moves with the window (or drops out of it)."""
    from inference.student import StudentConfig, StudentModel
    from inference.training.tasks import WINDOW_ALIGN, DistillTask

    crops, views, targets = _stored_click_views(magnetic_tile_pairs)
    tcfg = {"augment": {"dihedral": True}, "clicks": {"follow_up": 1}, "crop_size": 64}
    loss_cfg = {"feature_weight": 0.4, "soft_bce_weight": 0.3, "dice_weight": 0.3, "temperature": 2.0}
    student = StudentModel(StudentConfig(input_size=128, scale=0.25))
    task = DistillTask(crops, 128, tcfg, loss_cfg, student, {}, targets, 2.0, no_feature_loss=False)
    b = task.batch(16, torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))
    assert b.x.shape[-2:] == (64, 64) and b.origin is not None
    moved = dropped = 0
    for j, (y0, x0) in enumerate(b.origin):
        assert y0 % WINDOW_ALIGN == 0 and x0 % WINDOW_ALIGN == 0 and 0 <= y0 <= 64 and 0 <= x0 <= 64
        assert b.canvases.valid[j].float().mean() > 0.5  # on the crop, not on the padding
        view, d = divmod(int(b.entries[j]), 8)
        whole = cr.flipped(cr.assemble(crops, [views.crop[view]], [views.origin[view]], 128), torch.tensor([d]))
        assert torch.equal(b.canvases.image01[j], whole.image01[0, :, y0:y0 + 64, x0:x0 + 64])
        assert torch.equal(b.canvases.valid[j], whole.valid[0, :, y0:y0 + 64, x0:x0 + 64])
        if views.crop[view] == 2:  # the stored click (40, 60) at scale 0.25 -> (10, 15), flipped, then windowed
            p = cr.dihedral_points(torch.tensor([[[10.0, 15.0]]]), torch.tensor([d]), 128)[0, 0] - torch.tensor(
                [float(x0), float(y0)])
            if ((p >= 0) & (p < 64)).all():
                assert b.points[j, 0].tolist() == p.tolist() and b.labels[j].tolist().count(1.0) == 1
                moved += 1
            else:
                assert (b.labels[j] == -1).all()
                dropped += 1
    assert moved + dropped > 0
    t_emb = targets.embedding(b.entries)  # 16 cells per 128 px: the window's 64 px are 8 cells
    assert task._teacher_window(t_emb, b, t_emb.shape[-1] / 128).shape[-2:] == (8, 8)
    _, terms = task.train_loss(student, b, torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in terms.values()) and terms["feat"] > 0 and terms["soft"] > 0


def test_shifted_crops_keep_all_their_pixels_and_move_the_teachers_maps_and_stored_clicks_with_them(
        magnetic_tile_pairs: list) -> None:
    """training.augment.shift: after its flip, each crop moves about its canvas in whole student strides and stays
    on it; the teacher's cached maps of that (view, flip) entry move by the same pixels (its embedding by whole
    cells), and an unlabelled crop's stored click moves too."""
    from inference.student import StudentConfig, StudentModel
    from inference.training.tasks import WINDOW_ALIGN, DistillTask

    crops, views, targets = _stored_click_views(magnetic_tile_pairs)
    tcfg = {"augment": {"dihedral": True, "shift": True}, "clicks": {"follow_up": 1}}
    loss_cfg = {"feature_weight": 0.4, "soft_bce_weight": 0.3, "dice_weight": 0.3, "temperature": 2.0}
    student = StudentModel(StudentConfig(input_size=128, scale=0.25))
    task = DistillTask(crops, 128, tcfg, loss_cfg, student, {}, targets, 2.0, no_feature_loss=False)
    b = task.batch(16, torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))
    assert b.x.shape[-2:] == (128, 128) and b.moves is not None and b.origin is None
    assert any(m != (0, 0) for m in b.moves)
    clicked = 0
    for j, (dy, dx) in enumerate(b.moves):
        assert dy % WINDOW_ALIGN == 0 and dx % WINDOW_ALIGN == 0
        view, d = divmod(int(b.entries[j]), 8)
        whole = cr.flipped(cr.assemble(crops, [views.crop[view]], [views.origin[view]], 128), torch.tensor([d]))
        assert int(b.canvases.valid[j].sum()) == int(whole.valid.sum())  # all of the crop is still on the canvas
        assert torch.equal(b.canvases.valid[j], torch.roll(whole.valid[0], (dy, dx), dims=(-2, -1)))
        assert torch.equal(b.canvases.target[j], torch.roll(whole.target[0], (dy, dx), dims=(-2, -1)))
        if views.crop[view] == 2:  # the stored click (40, 60) at scale 0.25 -> (10, 15), flipped, then moved
            p = cr.dihedral_points(torch.tensor([[[10.0, 15.0]]]), torch.tensor([d]), 128)[0, 0]
            assert b.points[j, 0].tolist() == (p + torch.tensor([float(dx), float(dy)])).tolist()
            clicked += 1
    assert clicked > 0
    t_emb = targets.embedding(b.entries)  # 16 cells per 128 px: a 32 px move is 4 cells
    moved = task._teacher_window(t_emb, b, t_emb.shape[-1] / 128)
    for j, (dy, dx) in enumerate(b.moves):
        assert torch.equal(moved[j], torch.roll(t_emb[j], (dy // 8, dx // 8), dims=(-2, -1)))
    _, terms = task.train_loss(student, b, torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in terms.values()) and terms["feat"] > 0 and terms["soft"] > 0


def test_shifted_crops_refuse_windows_and_a_teacher_canvas_off_the_move_grid(magnetic_tile_pairs: list) -> None:
    from inference.sam2_net import Sam2Net, build_model
    from inference.student import StudentConfig, StudentModel
    from inference.training.tasks import DistillTask
    from inference.training.teacher_targets import TeacherTargets
    from store.errors import UserError

    crops = cr.decode_crops(_samples(magnetic_tile_pairs, 2), 0.25)
    views = cr.tile_views(crops, 128)
    loss_cfg = {"feature_weight": 0.4, "soft_bce_weight": 0.3, "dice_weight": 0.3, "temperature": 2.0}
    student = StudentModel(StudentConfig(input_size=128, scale=0.25))
    with pytest.raises(UserError, match="augment.shift moves each crop about its whole canvas; training.crop_size"):
        DistillTask(crops, 128, {"augment": {"shift": True}, "crop_size": 64}, loss_cfg, student, {}, None, 1.0,
                    no_feature_loss=True)
    net = Sam2Net(build_model("sam2.1_hiera_demo", image_size=160))
    t_views = cr.Views(views.crop, [(round(1.25 * y), round(1.25 * x)) for y, x in views.origin], 160)
    targets = TeacherTargets(net, crops.rescaled(1.25), t_views, 1, torch.device("cpu"))
    with pytest.raises(UserError, match=r"teacher canvas / student canvas = 1.25 is not a multiple of 0.5"):
        DistillTask(crops, 128, {"augment": {"shift": True}}, loss_cfg, student, {}, targets, 1.25,
                    no_feature_loss=False)
