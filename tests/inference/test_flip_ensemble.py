"""The flip ensemble averages a real model over the four mirror views of a real crop: mirroring the crop and its
clicks mirrors its answer exactly (the views are closed under mirroring, so any slip in moving the clicks into a view
or its logits back breaks this), and it keeps the model's output size and score range."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from inference.flip_ensemble import FlipEnsemble
from inference.student import StudentConfig, StudentModel
from inference.torch_backend import StudentTorchSegmenter


@pytest.fixture(scope="module")
def student() -> StudentTorchSegmenter:
    torch.manual_seed(0)
    return StudentTorchSegmenter(StudentModel(StudentConfig(input_size=128)), name="s", sha256="", device="cpu")


def test_mirroring_the_crop_and_its_clicks_mirrors_the_ensembles_answer(student, magnetic_tile_pairs: list) -> None:
    image = cv2.cvtColor(cv2.imread(str(magnetic_tile_pairs[0][0])), cv2.COLOR_BGR2RGB)
    image = np.ascontiguousarray(image[:120, :150])  # a crop whose sides differ, inside one canvas
    h, w = image.shape[:2]
    ens = FlipEnsemble(student)
    points, labels = np.array([[37.0, 81.0], [100.0, 20.0]], np.float32), np.array([1, 0], np.int32)
    ref = ens.decode(ens.embed(image), points, labels)
    assert ref.logits.shape == (h, w) and 0.0 <= ref.score <= 1.0
    assert not np.allclose(ref.logits, student.decode(student.embed(image), points, labels).logits, atol=1e-4)
    mirrored = points.copy()
    mirrored[:, 0] = w - 1 - mirrored[:, 0]
    out = ens.decode(ens.embed(np.ascontiguousarray(image[:, ::-1])), mirrored, labels)
    np.testing.assert_allclose(out.logits, ref.logits[:, ::-1], atol=1e-4)
    assert out.score == pytest.approx(ref.score, abs=1e-5)


def test_two_or_four_views_only(student) -> None:
    assert FlipEnsemble(student, views=2).name == "s+flips2"
    with pytest.raises(ValueError, match="2 or 4 views, not 3"):
        FlipEnsemble(student, views=3)
