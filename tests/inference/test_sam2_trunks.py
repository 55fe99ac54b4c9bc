"""SAM 2 with a convolutional trunk (`sam2.1_resnet50d`): built by the sam2 package from its own config plus the
table's overrides, the same tensors as Hiera's SAM 2 for the same canvas, and its checkpoints told apart from
Hiera's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.errors import ModelMismatchError
from inference.sam2_configs import resolve_config, teacher_config
from inference.sam2_net import Sam2Net, build_model, load_model
from inference.sam2_trunks import TimmTrunk


def test_the_trunk_gives_the_four_strides_the_neck_expects() -> None:
    trunk = TimmTrunk("resnet18d")  # ResNets list a stride-2 feature first: it is skipped
    feats = trunk(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert trunk.channel_list == [f.shape[1] for f in reversed(feats)] == [512, 256, 128, 64]


def test_the_config_resolves_by_its_short_name_and_as_a_teacher_section() -> None:
    assert resolve_config("sam2.1_resnet50d") == ("sam2.1_resnet50d", "configs/sam2.1/sam2.1_hiera_t.yaml")
    assert teacher_config({"model": "sam2.1_resnet50d"}) == "sam2.1_resnet50d.yaml"
    assert resolve_config(teacher_config({"model": "sam2.1_resnet50d"}))[0] == "sam2.1_resnet50d"


def test_a_resnet_teacher_gives_hiera_teachers_tensors_and_round_trips_its_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("sam2.1_resnet50d", image_size=128)
    assert isinstance(model.image_encoder.trunk, TimmTrunk)
    assert not any(".blocks." in k for k in model.state_dict() if k.startswith("image_encoder.trunk"))
    net = Sam2Net(model).eval()
    with torch.no_grad():
        feats = net.encode(torch.rand(2, 3, 128, 128))
        masks, iou = net.decode_all(feats, torch.tensor([[[40.0, 50.0]], [[90.0, 20.0]]]), torch.ones(2, 1))
    # the shapes every consumer of a teacher reads (distillation targets, prediction, export): SAM 2's own
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "image_embed": (2, 256, 8, 8), "high_res_0": (2, 32, 32, 32), "high_res_1": (2, 64, 16, 16)}
    assert masks.shape == (2, 4, 32, 32) and iou.shape == (2, 4)

    ckpt = tmp_path / "teacher.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    loaded = load_model(ckpt, "sam2.1_resnet50d", image_size=128)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # either way round, the refusal names the config that fits
    with pytest.raises(ModelMismatchError, match=r"looks like a sam2.1_resnet50d checkpoint \(use --config"):
        load_model(ckpt, "sam2.1_hiera_t", image_size=128)
    hiera = tmp_path / "hiera.pt"
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=128).state_dict()}, hiera)
    with pytest.raises(ModelMismatchError, match=r"looks like a sam2.1_hiera_t checkpoint \(use --config"):
        load_model(hiera, "sam2.1_resnet50d", image_size=128)
