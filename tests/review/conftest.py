"""Review fixtures: a fake OpenAI-compatible server on 127.0.0.1 and small projects built from real crops."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_openai import FakeOpenAI  # noqa: E402
from review_helpers import DUMMY_KEY, build_project, copy_crops, judge_config  # noqa: E402


@pytest.fixture(autouse=True)
def _judge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", DUMMY_KEY)
    monkeypatch.setenv("MASKBENCH_NO_KEYRING", "1")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(hang_s=10.0) as srv:
        yield srv


@pytest.fixture
def small_data(tmp_path: Path, magnetic_tile_pairs: list) -> Path:
    """3 crops of each of three defect classes whose masks a dilation changes a lot (9 crops, all flagged)."""
    return copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=3,
                      classes=("MT_Blowhole", "MT_Break", "MT_Crack"))


@pytest.fixture
def flagged_project(tmp_path: Path, small_data: Path, server: FakeOpenAI):  # noqa: ANN201
    """A project whose every sample is flagged (student = dilated ground truth), judge pointed at `server`."""
    from review.flagging import flag

    project, truth = build_project(tmp_path / "proj", small_data, judge_config(server.url), scheme="dilate")
    report = flag(project.db, 0.15)
    assert report.flagged_total == len(truth)
    yield project
    project.close()
